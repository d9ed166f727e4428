"""The audit trail: an append-only, hash-chained record of every mutating request and day-2 action.

Each record says who (authenticated principal, the platform's originating identity), what (action, ids,
parameter *names*), which request (``X-Broker-API-Request-Identity``) and the outcome (status, OSB error
code). Values are never recorded, so no secret can reach the trail; descriptions pass the log redactor.

    hash = sha256(prev_hash + canonical JSON of the record without its hash)

The first record's ``prev_hash`` is 64 zeros. Appends run inside one write transaction (``BEGIN IMMEDIATE``
on SQLite, a transaction-scoped advisory lock on PostgreSQL), so processes append one after another, and a
unique index on ``prev_hash`` refuses a fork whatever happens. Altering a record breaks its hash; deleting
one breaks the next record's link. Truncating the newest records leaves a shorter valid chain: compare the
head with one exported earlier (``drbroker audit verify --head HASH``) to detect that.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError

from broker.store.repository import Store
from broker.store.tables import audit_events

GENESIS = "0" * 64
_PG_LOCK_KEY = 0x6472_6175_6469_74  # "draudit": one advisory lock for the whole chain
_FIELDS = ("id", "at", "principal", "originating_identity", "request_identity", "action", "instance_id",
           "binding_id", "operation_id", "status", "outcome", "detail", "prev_hash")


@dataclass(frozen=True)
class AuditEvent:
    action: str
    principal: str | None = None
    originating_identity: Mapping[str, Any] | None = None
    request_identity: str | None = None
    instance_id: str | None = None
    binding_id: str | None = None
    operation_id: str | None = None
    status: int | None = None
    outcome: str | None = None
    detail: Mapping[str, Any] | None = None


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers: every field but ``hash``, sorted keys, no whitespace."""
    return json.dumps({k: record.get(k) for k in _FIELDS}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=False).encode("ascii")


def chain_hash(prev_hash: str, record: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(record)).hexdigest()


def _row(row: Any) -> dict[str, Any]:
    out = dict(row._mapping)
    # The JSON columns are hashed as stored (text), so a re-serialisation can never change a hash.
    return out


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    head: str
    problem: str | None = None
    broken_id: int | None = None


class AuditTrail:
    def __init__(self, store: Store, *, clock: Any = time.time) -> None:
        self.store = store
        self.clock = clock

    def append(self, event: AuditEvent) -> dict[str, Any]:
        """Append one record after the current head; returns it (with its hash)."""
        for attempt in range(5):
            try:
                return self._append(event)
            except IntegrityError:
                # Another appender won the race for this position (only possible without the lock, e.g. a
                # foreign writer); read the new head and try again.
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _append(self, event: AuditEvent) -> dict[str, Any]:
        with self.store.write() as tx:
            conn = tx.conn
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            last = conn.execute(select(audit_events.c.id, audit_events.c.hash)
                                .order_by(audit_events.c.id.desc()).limit(1)).first()
            record: dict[str, Any] = {
                "id": (last.id + 1) if last else 1,
                "at": round(self.clock(), 6),
                "principal": event.principal,
                "originating_identity": json.dumps(dict(event.originating_identity), sort_keys=True)
                if event.originating_identity is not None else None,
                "request_identity": event.request_identity,
                "action": event.action[:64],
                "instance_id": event.instance_id,
                "binding_id": event.binding_id,
                "operation_id": event.operation_id,
                "status": event.status,
                "outcome": event.outcome[:64] if event.outcome else None,
                "detail": json.dumps(dict(event.detail or {}), sort_keys=True),
                "prev_hash": last.hash if last else GENESIS,
            }
            record["hash"] = chain_hash(record["prev_hash"], record)
            conn.execute(insert(audit_events).values(**record))
        return record

    def records(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Every record in chain order (``since``: those at or after that time), read in pages."""
        last_id = 0
        while True:
            with self.store.read() as tx:
                stmt = select(audit_events).where(audit_events.c.id > last_id).order_by(audit_events.c.id).limit(500)
                if since is not None:
                    stmt = stmt.where(audit_events.c.at >= since)
                rows = [_row(r) for r in tx.conn.execute(stmt)]
            if not rows:
                return
            yield from rows
            last_id = rows[-1]["id"]

    @staticmethod
    def exported(record: Mapping[str, Any]) -> dict[str, Any]:
        """A record as one JSON line of ``drbroker audit export``: the stored fields (so that ``hash`` can be
        recomputed from them) plus ``at_iso``."""
        out = dict(record)
        out["at_iso"] = iso(record["at"])
        return out

    def verify(self, *, head: str | None = None) -> Verification:
        """Walk the chain; report the first record whose hash or link is wrong.

        ``head``: a hash exported earlier that must still be in the chain (detects truncation).
        """
        prev, expected_id, count, seen_head = GENESIS, 1, 0, head is None
        for record in self.records():
            count += 1
            rid = record["id"]
            if rid != expected_id:
                return Verification(False, count, prev, f"record #{rid}: expected record #{expected_id} "
                                    f"here: record(s) #{expected_id}..#{rid - 1} were deleted", rid)
            if record["prev_hash"] != prev:
                return Verification(False, count, prev, f"record #{rid}: its prev_hash does not match record "
                                    f"#{rid - 1}'s hash (a record was deleted, inserted or altered)", rid)
            if chain_hash(prev, record) != record["hash"]:
                return Verification(False, count, prev, f"record #{rid}: its content does not match its hash "
                                    "(the record was altered)", rid)
            prev, expected_id = record["hash"], rid + 1
            seen_head = seen_head or prev == head
        if not seen_head:
            return Verification(False, count, prev, f"the chain does not contain the head {head} exported "
                                "earlier: newer records were removed", None)
        return Verification(True, count, prev)
