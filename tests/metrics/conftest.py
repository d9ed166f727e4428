from tests.e2e.conftest import broker_factory, client_for, db_path  # noqa: F401  (fixtures shared with the e2e tests)
