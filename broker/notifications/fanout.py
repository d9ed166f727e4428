"""From the DR event log to the outbox: each event after the ``notifications`` cursor becomes one row per
destination, written in the transaction that moves the cursor past it.

Events commit in ``seq`` order (``broker.events.log``), so the cursor never passes an event that is still to
commit. The unique index on (event_seq, channel, target) makes a second write of the same delivery a no-op,
and the cursor moves only from the value this run read (a guarded UPDATE): two processes fanning out the same
batch write its rows once, and the slower one's transaction is rolled back.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from broker.events.log import head_seq, list_events
from broker.notifications.config import NotifyConfig
from broker.notifications.selection import Delivery, instance_deliveries, matches
from broker.store.repository import Store
from broker.store.tables import export_cursors, outbox

CURSOR = "notifications"


class _Overtaken(Exception):
    """Another process moved the cursor first: this run's batch is theirs."""


def _insert(conn: Connection) -> Any:
    return sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert


def cursor(conn: Connection) -> int:
    return int(conn.execute(select(export_cursors.c.last_seq).where(export_cursors.c.name == CURSOR)).scalar() or 0)


def lag(conn: Connection) -> int:
    """Events recorded but not fanned out yet."""
    return max(0, head_seq(conn) - cursor(conn))


def deliveries_for(event: Mapping[str, Any], params: Mapping[str, Any], config: NotifyConfig) -> list[Delivery]:
    out = instance_deliveries(params, event["type"], event["severity"], email=config.email_via is not None) \
        if event.get("instance_id") else []
    en = config.event_notifications
    if en is not None and matches(en.event_types, event["type"], event["severity"]):
        out.append(Delivery("event_notifications", en.instance_id))
    return out


def fan_out(store: Store, config: NotifyConfig, *, now: float) -> int:
    """Fan out one batch; return how many events it covered (0: none waiting, or another process took it)."""
    with store.engine.connect() as conn:
        start = cursor(conn)
        events = list_events(conn, after_seq=start, limit=config.batch)
    if not events:
        return 0
    params: dict[str, Mapping[str, Any]] = {}
    with store.read() as tx:
        for iid in {e["instance_id"] for e in events if e.get("instance_id")}:
            inst = tx.get_instance(iid)
            params[iid] = inst.parameters if inst else {}
    rows = [dict(id=str(uuid.uuid4()), event_seq=e["seq"], instance_id=e.get("instance_id"), channel=d.channel,
                 target=d.target, state="pending", attempts=0, next_attempt_at=now, created_at=now)
            for e in events for d in deliveries_for(e, params.get(e.get("instance_id") or "", {}), config)]
    try:
        with store.write() as tx:
            conn = tx.conn
            conn.execute(_insert(conn)(export_cursors).values(name=CURSOR, last_seq=0, updated_at=now)
                         .on_conflict_do_nothing(index_elements=[export_cursors.c.name]))
            if rows:
                conn.execute(_insert(conn)(outbox).values(rows).on_conflict_do_nothing(
                    index_elements=[outbox.c.event_seq, outbox.c.channel, outbox.c.target]))
            moved = conn.execute(update(export_cursors).where(export_cursors.c.name == CURSOR,
                                                              export_cursors.c.last_seq == start)
                                 .values(last_seq=events[-1]["seq"], updated_at=now, last_export_at=now))
            if moved.rowcount != 1:
                raise _Overtaken
    except _Overtaken:
        return 0
    return len(events)

