"""Leased export cursors (``export_cursors``): where each COS stream has got to, and the batch in flight.

Every write is a guarded update on the lease (``lease_owner = me``) and on the state it expects, so two
exporters (replicas, a ``drbroker jobs run-due`` beside a server) never both advance one cursor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from broker.store.repository import Store
from broker.store.tables import export_cursors as cursors
from broker.workflows.worker import _owner_is_dead_local_process as dead_local_owner


@dataclass(frozen=True)
class Cursor:
    name: str
    last_seq: int
    pending_start: int | None
    pending_end: int | None
    pending_key: str | None


def _cursor(row: Any) -> Cursor:
    return Cursor(row.name, int(row.last_seq or 0), row.pending_start, row.pending_end, row.pending_key)


def lease(store: Store, name: str, owner: str, now: float, seconds: float) -> Cursor | None:
    """Take (or renew) the cursor's lease; None when another exporter holds it."""
    for _ in range(2):
        try:
            with store.write() as tx:
                conn = tx.conn
                held = conn.execute(select(cursors.c.lease_owner).where(cursors.c.name == name)).first()
                if held is None:
                    conn.execute(insert(cursors).values(name=name, last_seq=0, updated_at=now))
                free = or_(cursors.c.lease_until.is_(None), cursors.c.lease_until < now,
                           cursors.c.lease_owner == owner)
                if held is not None and held.lease_owner and dead_local_owner(held.lease_owner):
                    # Its holder died on this host (kill -9): take it over now, not when the lease runs out.
                    free = or_(free, cursors.c.lease_owner == held.lease_owner)
                taken = conn.execute(update(cursors).where(and_(cursors.c.name == name, free)).values(
                    lease_owner=owner, lease_until=now + seconds, updated_at=now)).rowcount
                if not taken:
                    return None
                return _cursor(conn.execute(select(cursors).where(cursors.c.name == name)).one())
        except IntegrityError:  # another process created the row meanwhile (PostgreSQL): take it as it is
            continue
    return None


def _mine(name: str, owner: str) -> Any:
    return and_(cursors.c.name == name, cursors.c.lease_owner == owner)


def set_pending(store: Store, name: str, owner: str, last_seq: int, start: int, end: int, key: str,
                now: float) -> bool:
    """Name the batch about to be written (before it is written): False when the lease or cursor moved."""
    with store.write() as tx:
        return tx.conn.execute(update(cursors).where(and_(
            _mine(name, owner), cursors.c.last_seq == last_seq, cursors.c.pending_key.is_(None))).values(
            pending_start=start, pending_end=end, pending_key=key, updated_at=now)).rowcount == 1


def finish_pending(store: Store, name: str, owner: str, key: str, end: int, now: float) -> bool:
    """The named batch is in COS: advance past it and clear it, in one guarded update."""
    with store.write() as tx:
        return tx.conn.execute(update(cursors).where(and_(_mine(name, owner), cursors.c.pending_key == key))
                               .values(last_seq=end, pending_start=None, pending_end=None, pending_key=None,
                                       last_export_at=now, last_error=None, updated_at=now)).rowcount == 1


def advance(store: Store, name: str, owner: str, to: int, now: float) -> bool:
    """Move a cursor without a pending batch (the anchor's)."""
    with store.write() as tx:
        return tx.conn.execute(update(cursors).where(_mine(name, owner)).values(
            last_seq=to, last_export_at=now, last_error=None, updated_at=now)).rowcount == 1


def release(store: Store, name: str, owner: str, now: float, error: str | None = None) -> None:
    values: dict[str, Any] = {"lease_owner": None, "lease_until": None, "updated_at": now}
    if error is not None:
        values["last_error"] = error[:2000]
    with store.write() as tx:
        tx.conn.execute(update(cursors).where(_mine(name, owner)).values(**values))


def read_all(store: Store) -> dict[str, dict[str, Any]]:
    with store.read(snapshot=False) as tx:
        return {r.name: dict(r._mapping) for r in tx.conn.execute(select(cursors))}
