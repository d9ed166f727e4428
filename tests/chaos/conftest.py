"""The chaos test drives real ``drbroker serve`` processes with the end-to-end fixtures."""

from tests.e2e.conftest import broker_factory, db_path  # noqa: F401 - fixtures
