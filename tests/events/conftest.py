"""Fixtures of the DR event log tests: the real app and worker on a migrated SQLite file, and a reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.app import Runtime
from broker.events.log import list_events
from tests.services.conftest import DR


@pytest.fixture(autouse=True)
def _current_schema(migrated_state_db: Path) -> None:
    """Every runtime built here on ``tmp_path`` starts on a database already at head (tests/conftest.py)."""


@pytest.fixture
def dr(client: Any, worker: Runtime) -> DR:
    return DR(client, worker)


def events(rt: Runtime, **filters: Any) -> list[dict[str, Any]]:
    """Every event matching ``filters`` (``broker.events.log.list_events``), in seq order."""
    filters.setdefault("limit", None)
    with rt.store.engine.connect() as conn:
        return list_events(conn, **filters)


def types(rt: Runtime, **filters: Any) -> list[str]:
    return [e["type"] for e in events(rt, **filters)]


# the real-process fixtures, for the one test through `drbroker serve`
from tests.e2e.conftest import broker_factory, client_for, db_path  # noqa: E402, F401
