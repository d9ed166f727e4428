"""The snapshot mark (an upsert) and the cursor lease on both stores, SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from broker.evidence import cursors, snapshots
from broker.store.tables import instance_snapshots
from tests.conftest import make_settings
from tests.evidence.test_export import store_runtime


def test_mark_and_lease_on_both_stores(db_url: str, tmp_path: Path) -> None:
    rt: Any = store_runtime(make_settings(tmp_path, database_url=db_url))
    try:
        for at in (100.0, 50.0, 200.0):
            with rt.store.write() as tx:
                snapshots.mark(tx.conn, "inst-1", at)
        with rt.store.read() as tx:
            rows = tx.conn.execute(select(instance_snapshots.c.changed_at)).scalars().all()
        assert len(rows) == 1 and rows[0] == 200.0
        assert cursors.lease(rt.store, "cos:test", "a", 10.0, 5.0) is not None
        assert cursors.lease(rt.store, "cos:test", "b", 12.0, 5.0) is None  # a's lease runs until 15
        assert cursors.set_pending(rt.store, "cos:test", "a", 0, 1, 4, "k", 12.0)
        assert not cursors.finish_pending(rt.store, "cos:test", "b", "k", 4, 13.0)
        assert cursors.finish_pending(rt.store, "cos:test", "a", "k", 4, 13.0)
        cursor = cursors.lease(rt.store, "cos:test", "b", 16.0, 5.0)
        assert cursor is not None and cursor.last_seq == 4 and cursor.pending_key is None
    finally:
        rt.store.engine.dispose()
