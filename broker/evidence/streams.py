"""The two sequential streams exported to COS, as deterministic JSON lines.

A batch's bytes depend only on the stored records it covers (sorted keys, no whitespace variation), so a
batch written again after a crash is byte for byte the object written before, with the same ETag.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, func, select

from broker.security.audit import AuditTrail
from broker.store.tables import audit_events, dr_events


@dataclass(frozen=True)
class Stream:
    name: str  # the export_cursors row
    folder: str  # under the prefix
    table: Table
    column: str  # the sequence column
    line: Callable[[dict[str, Any]], dict[str, Any]]

    @property
    def seq(self) -> Any:
        return self.table.c[self.column]

    def head(self, conn: Connection) -> int:
        return int(conn.execute(select(func.max(self.seq))).scalar() or 0)

    def after(self, conn: Connection, last: int, limit: int) -> list[dict[str, Any]]:
        stmt = select(self.table).where(self.seq > last).order_by(self.seq).limit(limit)
        return [dict(r._mapping) for r in conn.execute(stmt)]

    def between(self, conn: Connection, start: int, end: int) -> list[dict[str, Any]]:
        stmt = select(self.table).where(self.seq >= start, self.seq <= end).order_by(self.seq)
        return [dict(r._mapping) for r in conn.execute(stmt)]

    def oldest_at(self, conn: Connection, last: int) -> float | None:
        """When the oldest record not yet exported was written (None: all are exported)."""
        return conn.execute(select(self.table.c.at).where(self.seq > last).order_by(self.seq).limit(1)).scalar()

    def key(self, prefix: str, start: int, end: int) -> str:
        return f"{prefix}/{self.folder}/{start:020d}-{end:020d}.jsonl"

    def body(self, rows: list[dict[str, Any]]) -> bytes:
        return b"".join(json.dumps(self.line(r), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
                        .encode("ascii") + b"\n" for r in rows)


def _event_line(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["data"] = json.loads(out.get("data") or "{}")
    return out


EVENTS = Stream("cos:events", "events", dr_events, "seq", _event_line)
# The audit lines are ``drbroker audit export``'s: every stored field as stored, so the link can be recomputed.
AUDIT = Stream("cos:audit", "audit", audit_events, "id", AuditTrail.exported)
STREAMS = (EVENTS, AUDIT)
ANCHOR = "cos:anchor"  # the export_cursors row of the anchored audit head (last_seq = the anchored id)
