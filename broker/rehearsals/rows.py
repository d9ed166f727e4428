"""The ``rehearsal_schedules`` rows: written in the caller's transaction (``conn``), claimed with leases.

A row is due when ``enabled`` and ``next_due_at <= now``. A process claims due rows with a guarded update
(``lease_until IS NULL OR lease_until < now``; on PostgreSQL the candidates are read ``FOR UPDATE SKIP
LOCKED``), and fires each in one transaction guarded by its own lease, which also moves ``next_due_at`` on:
however many processes look, each due run is fired once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, or_, select, update

from broker.rehearsals.spec import Rehearsal, next_due
from broker.store.tables import rehearsal_schedules as t

# The columns that define a schedule: when they change, next_due_at is computed again.
_SPEC_COLUMNS = ("schedule", "timezone", "window_start", "window_minutes", "max_age_seconds", "enabled")


def spec_of(row: Mapping[str, Any]) -> Rehearsal:
    return Rehearsal(schedule=row["schedule"], timezone=row["timezone"], max_age_seconds=row["max_age_seconds"],
                     window_start=row["window_start"], window_minutes=row["window_minutes"],
                     enabled=bool(row["enabled"]))


def _columns(spec: Rehearsal) -> dict[str, Any]:
    return {"schedule": spec.schedule, "timezone": spec.timezone, "window_start": spec.window_start,
            "window_minutes": spec.window_minutes, "max_age_seconds": spec.effective_max_age(),
            "enabled": spec.enabled}


def get(conn: Connection, instance_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(t).where(t.c.instance_id == instance_id)).first()
    return dict(row._mapping) if row else None


def upsert(conn: Connection, instance_id: str, spec: Rehearsal, now: float) -> dict[str, Any]:
    """Create or change the instance's row; an unchanged schedule keeps its next_due_at."""
    wanted = _columns(spec)
    current = get(conn, instance_id)
    if current is None:
        values = {"instance_id": instance_id, **wanted, "next_due_at": next_due(spec, now), "updated_at": now}
        conn.execute(insert(t).values(**values))
        return values
    if all(current[c] == wanted[c] for c in _SPEC_COLUMNS):
        return current
    changed = {**wanted, "next_due_at": next_due(spec, now), "updated_at": now}
    conn.execute(update(t).where(t.c.instance_id == instance_id).values(**changed))
    return {**current, **changed}


def remove(conn: Connection, instance_id: str) -> bool:
    return conn.execute(delete(t).where(t.c.instance_id == instance_id)).rowcount > 0


def set_outcome(conn: Connection, instance_id: str, outcome: str, now: float) -> None:
    conn.execute(update(t).where(t.c.instance_id == instance_id).values(last_outcome=outcome[:128], updated_at=now))


def _due(now: float) -> Any:
    return and_(t.c.enabled.is_(True), t.c.next_due_at <= now,
                or_(t.c.lease_until.is_(None), t.c.lease_until < now))


def claim(conn: Connection, owner: str, now: float, lease_seconds: float, limit: int = 20) -> list[str]:
    """Lease up to ``limit`` due rows to ``owner``; the instance ids claimed."""
    stmt = select(t.c.instance_id, t.c.next_due_at).where(_due(now)).order_by(t.c.next_due_at).limit(limit)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    claimed = []
    for instance_id, due_at in conn.execute(stmt).all():
        taken = conn.execute(update(t).where(and_(t.c.instance_id == instance_id, t.c.next_due_at == due_at,
                                                  _due(now)))
                             .values(lease_owner=owner, lease_until=now + lease_seconds)).rowcount
        if taken == 1:
            claimed.append(instance_id)
    return claimed


def held(conn: Connection, instance_id: str, owner: str, now: float) -> dict[str, Any] | None:
    """The row while ``owner`` still holds its lease (locked on PostgreSQL), else None."""
    stmt = select(t).where(and_(t.c.instance_id == instance_id, t.c.lease_owner == owner, t.c.lease_until >= now))
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    return dict(row._mapping) if row else None


def finish(conn: Connection, instance_id: str, owner: str, **values: Any) -> bool:
    """Release ``owner``'s lease, writing ``values`` (next_due_at, outcome, ...); False when the lease was lost."""
    return conn.execute(update(t).where(and_(t.c.instance_id == instance_id, t.c.lease_owner == owner))
                        .values(lease_owner=None, lease_until=None, **values)).rowcount == 1


def all_rows(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(select(t))]
