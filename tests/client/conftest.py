"""Fixtures of the client tests: real ``drbroker serve`` processes, and a home of its own for every client run
(no profile, no local record and no DRBROKER_CLIENT_* setting leaks in from the machine running the tests)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BrokerProcess, base_env, broker_factory, db_path  # noqa: F401  (shared fixtures)


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of one client "machine": its own HOME and XDG state, no DRBROKER_CLIENT_* setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRBROKER_CLIENT_")}
    env.update({"HOME": str(home), "XDG_STATE_HOME": str(home / "state"), "XDG_CONFIG_HOME": str(home / "config")})
    env.update(extra)
    return env


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for a module whose tests use instances of their own (distinct ids and volumes)."""
    where = tmp_path_factory.mktemp("broker")
    proc = BrokerProcess(base_env(where / "state.db", DRBROKER_SIM_STEP_SECONDS="0.2"), where, where / "broker.log")
    try:
        yield proc.start()
    finally:
        proc.stop()
