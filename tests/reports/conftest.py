"""Helpers for the report tests: a real runtime on a migrated SQLite file, with samples and DR events written
the way the broker writes them (rows in ``rpo_samples``; ``broker.events.log.record`` in a write transaction)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from broker.events.log import DrEvent, record
from broker.reports.build import Scope, build_report, runtime_sources
from broker.reports.model import Report
from broker.store.tables import rpo_samples
from tests.e2e.conftest import broker_factory, client_for, db_path  # noqa: F401  (real-process fixtures)

HOUR = 3600.0
DAY = 86400.0


@pytest.fixture(autouse=True)
def _current_schema(migrated_state_db: Path) -> None:
    """Every runtime built on ``tmp_path`` starts on a database already at head (tests/conftest.py)."""


def add_samples(runtime: Any, iid: str, samples: Iterable[tuple[float, float | None, str]]) -> None:
    rows = [{"instance_id": iid, "at": at, "achieved_rpo_seconds": rpo, "replication_state": state}
            for at, rpo, state in samples]
    with runtime.store.write() as tx:
        tx.conn.execute(insert(rpo_samples), rows)


def add_event(runtime: Any, type_: str, iid: str, at: float, data: Mapping[str, Any] | None = None,
              operation_id: str | None = None, summary: str = "") -> None:
    with runtime.store.write() as tx:
        record(tx.conn, DrEvent(type_, iid, summary or type_, dict(data or {}), operation_id=operation_id), at=at)


def set_instance(runtime: Any, iid: str, **fields: Any) -> None:
    with runtime.store.write() as tx:
        tx.update_instance(iid, **fields)


def report(runtime: Any, scope: Scope, since: float, until: float, now: float | None = None) -> Report:
    return build_report(runtime_sources(runtime), scope, since, until, now=until if now is None else now)
