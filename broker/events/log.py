"""Writing and reading the DR event log (``dr_events``).

``record`` runs inside the caller's write transaction, so an event exists exactly when the state change that
caused it was committed. Its ``seq`` is the previous event's + 1, assigned under the writer lock (SQLite's
``BEGIN IMMEDIATE``; a transaction-scoped advisory lock on PostgreSQL): events commit in ``seq`` order, so a
reader following ``seq`` (the COS export, the notification dispatcher) never passes an event that commits
later with a smaller number.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, text

from broker.events.types import EVENT_TYPES
from broker.store.tables import dr_events

_PG_LOCK_KEY = 0x6472_6576_656E_7473  # "drevents"


@dataclass(frozen=True)
class DrEvent:
    type: str
    instance_id: str | None
    summary: str
    data: Mapping[str, Any] = field(default_factory=dict)
    binding_id: str | None = None
    operation_id: str | None = None


def record(conn: Connection, event: DrEvent, *, at: float) -> dict[str, Any]:
    """Append ``event`` in the caller's transaction; returns the stored row (with ``seq`` and ``id``)."""
    return record_many(conn, [event], at=at)[0]


def record_many(conn: Connection, events: Sequence[DrEvent], *, at: float) -> list[dict[str, Any]]:
    """Append ``events`` in order in the caller's transaction, with consecutive seqs: one lock, one read of the
    last seq and one (multi-row) insert however many there are."""
    kinds = [EVENT_TYPES.get(e.type) for e in events]
    for event, kind in zip(events, kinds, strict=True):
        if kind is None:
            raise ValueError(f"unknown DR event type {event.type!r}")
    if not events:
        return []
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    last = int(conn.execute(select(func.max(dr_events.c.seq))).scalar() or 0)
    rows = [{"seq": last + n, "id": str(uuid.uuid4()), "at": round(at, 6), "type": event.type,
             "severity": kind.severity, "instance_id": event.instance_id, "binding_id": event.binding_id,
             "operation_id": event.operation_id, "summary": event.summary[:2000],
             "data": json.dumps(dict(event.data), sort_keys=True, default=str)}
            for n, (event, kind) in enumerate(zip(events, kinds, strict=True), start=1) if kind is not None]
    conn.execute(insert(dr_events), rows)
    return [_out(row) for row in rows]


def _out(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["data"] = json.loads(out["data"] or "{}")
    return out


def list_events(conn: Connection, *, instance_id: str | None = None, instance_ids: Iterable[str] | None = None,
                types: Iterable[str] | None = None, since: float | None = None, until: float | None = None,
                after_seq: int = 0, limit: int | None = 100, newest_first: bool = False) -> list[dict[str, Any]]:
    """Events matching every filter given, in ``seq`` order (or newest first)."""
    stmt = select(dr_events).where(dr_events.c.seq > after_seq)
    if instance_id is not None:
        stmt = stmt.where(dr_events.c.instance_id == instance_id)
    if instance_ids is not None:
        stmt = stmt.where(dr_events.c.instance_id.in_(list(instance_ids)))
    if types is not None:
        stmt = stmt.where(dr_events.c.type.in_(list(types)))
    if since is not None:
        stmt = stmt.where(dr_events.c.at >= since)
    if until is not None:
        stmt = stmt.where(dr_events.c.at < until)
    stmt = stmt.order_by(dr_events.c.seq.desc() if newest_first else dr_events.c.seq)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [_out(r._mapping) for r in conn.execute(stmt)]


def get_event(conn: Connection, ref: str | int) -> dict[str, Any] | None:
    """One event by its ``seq`` (a number) or its ``id`` (a UUID)."""
    text_ref = str(ref)
    column = dr_events.c.seq if text_ref.isdigit() else dr_events.c.id
    value: Any = int(text_ref) if text_ref.isdigit() else text_ref
    row = conn.execute(select(dr_events).where(column == value)).first()
    return _out(row._mapping) if row else None


def head_seq(conn: Connection) -> int:
    return int(conn.execute(select(func.max(dr_events.c.seq))).scalar() or 0)


def iso(ts: float) -> str:
    """An event's time as ISO 8601 UTC with milliseconds (what the CLI, fetch instance and exports show)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def public(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event as JSON shows it: every column, ``at`` in ISO 8601 UTC."""
    return {**event, "at": iso(event["at"])}


def brief(event: Mapping[str, Any]) -> dict[str, Any]:
    """The short form fetch instance and the dashboard list: seq, at, type, severity, summary."""
    return {"seq": event["seq"], "at": iso(event["at"]), "type": event["type"], "severity": event["severity"],
            "summary": event["summary"]}


def recent(conn: Connection, instance_id: str, count: int = 5) -> list[dict[str, Any]]:
    """The instance's newest ``count`` events, newest first (one indexed query)."""
    return list_events(conn, instance_id=instance_id, limit=count, newest_first=True)
