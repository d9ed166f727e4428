"""The audit trail: an append-only, MAC-chained record of every mutating request and day-2 action.

Each record says who (authenticated principal, the platform's originating identity), what (action, ids,
parameter *names*), which request (``X-Broker-API-Request-Identity``) and the outcome (status, OSB error
code). Values are never recorded, so no secret can reach the trail; descriptions pass the log redactor.

Each record's link is keyed::

    hash = HMAC-SHA256(mac_key, prev_hash + canonical JSON of the record without its hash)   chain = "hmac-sha256"

``mac_key`` is generated once and stored sealed under the KEK (``broker.security.audit_key``), so someone who
can write the database but has no KEK cannot compute a valid link: a rewritten record, whatever is recomputed
after it, fails verification at the first record changed. Records written before the chain was keyed keep
their rule, ``sha256(prev_hash + canonical JSON)`` (``chain = "sha256"``); the first keyed record links to the
last of them, and the sealed key fixes that boundary (id and hash), so the unkeyed prefix can neither grow
nor be rewritten unnoticed. The first record's ``prev_hash`` is 64 zeros.

Appends run inside one write transaction (``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on
PostgreSQL), so processes append one after another, and a unique index on ``prev_hash`` refuses a fork
whatever happens. Deleting the newest records leaves a shorter valid chain: the head is checkpointed outside
the database (``broker.security.audit_checkpoint``), and ``drbroker audit verify`` compares it (or a head
given with ``--head``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, select, text
from sqlalchemy.exc import IntegrityError

from broker.security import audit_checkpoint, audit_key
from broker.security.audit_checkpoint import Checkpoint, CheckpointError, CheckpointWriter
from broker.security.audit_key import AuditKeyError, MacKey
from broker.store.repository import Store
from broker.store.tables import audit_events

GENESIS = "0" * 64
LEGACY = "sha256"
KEYED = "hmac-sha256"
_PG_LOCK_KEY = 0x6472_6175_6469_74  # "draudit": one advisory lock for the whole chain
_FIELDS = ("id", "at", "principal", "originating_identity", "request_identity", "action", "instance_id",
           "binding_id", "operation_id", "status", "outcome", "detail", "prev_hash")
# A keyed record's MAC also covers its chain marker, so it cannot be relabelled.
_KEYED_FIELDS = (*_FIELDS, "chain")

# The bounded form of a refused request's record (``bounded``): every string at most FIELD_CHARS characters,
# the whole record (its canonical JSON with the hash) at most RECORD_BYTES bytes.
FIELD_CHARS = 200
RECORD_BYTES = 2048
_MAX_ITEMS = 16
_MAX_DEPTH = 3

log = logging.getLogger("drbroker.audit")


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


def canonical(record: Mapping[str, Any], fields: tuple[str, ...] = _FIELDS) -> bytes:
    """The bytes a record's link covers: every field but ``hash``, sorted keys, no whitespace."""
    return json.dumps({k: record.get(k) for k in fields}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=False).encode("ascii")


def chain_hash(prev_hash: str, record: Mapping[str, Any]) -> str:
    """The unkeyed link of records written before the chain was keyed."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(record)).hexdigest()


def chain_mac(key: bytes, prev_hash: str, record: Mapping[str, Any]) -> str:
    """The keyed link."""
    return hmac.new(key, prev_hash.encode("ascii") + canonical(record, _KEYED_FIELDS), hashlib.sha256).hexdigest()


def _clip(value: Any, chars: int, depth: int = 0) -> Any:
    """``value`` with every string cut to ``chars`` and containers to a few items, a few levels deep."""
    if isinstance(value, str):
        return value[:chars]
    if isinstance(value, Mapping):
        if depth >= _MAX_DEPTH:
            return "..."
        items = list(value.items())
        out = {str(k)[:64]: _clip(v, chars, depth + 1) for k, v in items[:_MAX_ITEMS]}
        if len(items) > _MAX_ITEMS:
            out["..."] = len(items) - _MAX_ITEMS
        return out
    if isinstance(value, list | tuple):
        if depth >= _MAX_DEPTH:
            return "..."
        out_list = [_clip(v, chars, depth + 1) for v in value[:_MAX_ITEMS]]
        if len(value) > _MAX_ITEMS:
            out_list.append(f"... {len(value) - _MAX_ITEMS} more")
        return out_list
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)[:chars]


def record_size(event: AuditEvent) -> int:
    """Bytes of the canonical JSON of ``event``'s record with its hash, at the widest id and time."""
    record = _record(event, 10**15, 1e12, GENESIS)
    record["hash"] = GENESIS
    return len(canonical(record, (*_KEYED_FIELDS, "hash")))


def bounded(event: AuditEvent, *, field_chars: int = FIELD_CHARS, record_bytes: int = RECORD_BYTES) -> AuditEvent:
    """The record of a refused request in bounded form: strings cut to ``field_chars``, and what does not fit
    in ``record_bytes`` dropped (the originating identity's value first, then detail beyond the method, then
    the scalar fields cut shorter)."""
    while True:
        event = _cut(event, field_chars)
        if record_size(event) <= record_bytes:
            return event
        if event.originating_identity is not None and set(event.originating_identity) != {"platform", "truncated"}:
            platform = event.originating_identity.get("platform")
            event = replace(event, originating_identity={"platform": _clip(platform, 64), "truncated": True})
            continue
        detail = dict(event.detail or {})
        droppable = sorted((k for k in detail if k not in ("method", "truncated")),
                           key=lambda k: -len(json.dumps(detail[k])))  # the widest first
        if droppable:
            detail.pop(droppable[0])
            detail["truncated"] = True
            event = replace(event, detail=detail)
            continue
        if field_chars <= 8:
            return event  # nothing left to cut (never reached with RECORD_BYTES: 8 characters per field fit)
        field_chars //= 2


def _cut(event: AuditEvent, chars: int) -> AuditEvent:
    def cut(text: str | None) -> str | None:
        return text[:chars] if text is not None else None

    return replace(
        event, action=event.action[:64], principal=cut(event.principal), request_identity=cut(event.request_identity),
        instance_id=cut(event.instance_id), binding_id=cut(event.binding_id), operation_id=cut(event.operation_id),
        outcome=event.outcome[:64] if event.outcome else None,
        originating_identity=_clip(dict(event.originating_identity), chars)
        if event.originating_identity is not None else None,
        detail=_clip(dict(event.detail or {}), chars))


def _record(event: AuditEvent, rid: int, at: float, prev_hash: str) -> dict[str, Any]:
    return {
        "id": rid,
        "at": at,
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
        "prev_hash": prev_hash,
        "chain": KEYED,
    }


def _row(row: Any) -> dict[str, Any]:
    # The JSON columns are hashed as stored (text), so a re-serialisation can never change a link.
    return dict(row._mapping)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    head: str
    problem: str | None = None
    broken_id: int | None = None
    legacy: int = 0  # records checked with the unkeyed rule
    head_id: int = 0
    checkpoint: str | None = None  # what the checkpoint comparison found, when there was one


class AuditTrail:
    def __init__(self, store: Store, *, clock: Any = time.time, checkpoint: str | Path | None = None,
                 checkpoint_interval: float = 1.0) -> None:
        self.store = store
        self.clock = clock
        self.checkpoint_path = Path(checkpoint) if checkpoint else None
        self._checkpoint = CheckpointWriter(self.checkpoint_path, self._still_there, interval=checkpoint_interval) \
            if self.checkpoint_path else None
        self._mac: MacKey | None = None

    # the MAC key ----------------------------------------------------------------------------------
    def _lock(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})

    @staticmethod
    def _head(conn: Connection) -> Any:
        return conn.execute(select(audit_events.c.id, audit_events.c.hash, audit_events.c.chain)
                            .order_by(audit_events.c.id.desc()).limit(1)).first()

    def _key_for_append(self, conn: Connection, last: Any) -> MacKey:
        """The MAC key, created now if this is the first keyed append (the caller holds the chain's lock)."""
        if self._mac is not None:
            return self._mac
        mac = audit_key.read(conn, self.store.sealer)
        if mac is not None:
            return mac
        if last is not None and last.chain != LEGACY:
            raise AuditKeyError("the audit trail holds keyed records but audit_keys holds no MAC key (it was "
                                "deleted); restore it from a backup of the database, and run `drbroker audit "
                                "verify`")
        mark = self._checkpointed()
        if mark is not None and mark.id > 0 and mark.chain == KEYED:
            # A new key would bless whatever the table holds now as the unkeyed prefix (e.g. keyed records
            # relabelled as old ones after the key row was deleted).
            raise AuditKeyError(f"the checkpoint {self.checkpoint_path} names keyed record #{mark.id}, but "
                                "audit_keys holds no MAC key (it was deleted); run `drbroker audit verify`")
        return audit_key.create(conn, self.store.sealer, last.id if last else 0, last.hash if last else GENESIS)

    def _checkpointed(self) -> Checkpoint | None:
        if self.checkpoint_path is None:
            return None
        try:
            return audit_checkpoint.read(self.checkpoint_path)
        except (FileNotFoundError, CheckpointError):
            return None

    def ensure_key(self) -> None:
        """Open (or, on the first start after the upgrade, create) the MAC key; at start-up, so that a replica
        whose KEK cannot open it stops there. Also starts the checkpoint file when there is none yet."""
        for attempt in range(5):
            try:
                with self.store.write() as tx:
                    self._lock(tx.conn)
                    last = self._head(tx.conn)
                    mac = self._key_for_append(tx.conn, last)
                break
            except IntegrityError:  # a foreign writer created it meanwhile: read that one
                if attempt == 4:
                    raise
        self._mac = mac
        if self.checkpoint_path is not None and not self.checkpoint_path.exists():
            first = Checkpoint(last.id, last.hash, last.chain, self.clock()) if last else \
                Checkpoint(0, GENESIS, KEYED, self.clock())
            audit_checkpoint.write(self.checkpoint_path, first, self._still_there)

    # appending ------------------------------------------------------------------------------------
    def append(self, event: AuditEvent) -> dict[str, Any]:
        """Append one record after the current head; returns it (with its MAC)."""
        for attempt in range(5):
            try:
                record = self._append(event)
                break
            except IntegrityError:
                # Another appender won the race for this position or for the key (only possible without the
                # lock, e.g. a foreign writer); read the new head and try again.
                if attempt == 4:
                    raise
        if self._checkpoint is not None:
            self._checkpoint.note(Checkpoint(record["id"], record["hash"], record["chain"], record["at"]))
        return record

    def _append(self, event: AuditEvent) -> dict[str, Any]:
        with self.store.write() as tx:
            conn = tx.conn
            self._lock(conn)
            last = self._head(conn)
            mac = self._key_for_append(conn, last)
            record = _record(event, (last.id + 1) if last else 1, round(self.clock(), 6),
                             last.hash if last else GENESIS)
            record["hash"] = chain_mac(mac.key, record["prev_hash"], record)
            conn.execute(insert(audit_events).values(**record))
        self._mac = mac  # kept only once committed: a key whose insert rolled back is no key
        return record

    def flush(self) -> None:
        """Write the pending checkpoint now (shutdown)."""
        if self._checkpoint is not None:
            self._checkpoint.flush()

    def _still_there(self, checkpoint: Checkpoint) -> bool:
        with self.store.read(snapshot=False) as tx:
            stored = tx.conn.execute(select(audit_events.c.hash).where(audit_events.c.id == checkpoint.id)).scalar()
        return stored is not None and hmac.compare_digest(stored, checkpoint.mac)

    # reading --------------------------------------------------------------------------------------
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
        """A record as one JSON line of ``drbroker audit export``: the stored fields (so that a link can be
        recomputed from them: an unkeyed one by anyone, a keyed one with the MAC key) plus ``at_iso``."""
        out = dict(record)
        out["at_iso"] = iso(record["at"])
        return out

    # verifying ------------------------------------------------------------------------------------
    def verify(self, *, head: str | None = None, checkpoint: str | Path | None = None) -> Verification:
        """Walk the chain; report the first record whose link is wrong, then compare the heads given.

        ``head``: a hash exported earlier that must still be in the chain. ``checkpoint``: a checkpoint file
        (``broker.security.audit_checkpoint``) whose head must be in the chain with the same MAC; a missing or
        unreadable file is a problem too.
        """
        try:
            with self.store.read() as tx:
                mac = audit_key.read(tx.conn, self.store.sealer)
        except AuditKeyError as exc:
            return Verification(False, 0, GENESIS, str(exc))
        mark: Checkpoint | None = None
        if checkpoint is not None:
            try:
                mark = audit_checkpoint.read(Path(checkpoint))
            except FileNotFoundError:
                return Verification(False, 0, GENESIS, f"the checkpoint file {checkpoint} is missing (it is "
                                    "written by every broker with DRBROKER_AUDIT_CHECKPOINT; was it removed?)")
            except CheckpointError as exc:
                return Verification(False, 0, GENESIS, str(exc))
        prev, prev_id, count, legacy = GENESIS, 0, 0, 0
        seen_head, mark_seen = head is None, False

        def broken(problem: str, rid: int | None) -> Verification:
            return Verification(False, count, prev, problem, rid, legacy, prev_id)

        for record in self.records():
            count += 1
            rid = record["id"]
            if rid != prev_id + 1:
                return broken(f"record #{rid}: expected record #{prev_id + 1} here: record(s) "
                              f"#{prev_id + 1}..#{rid - 1} were deleted", rid)
            if record["prev_hash"] != prev:
                return broken(f"record #{rid}: its prev_hash does not match record #{rid - 1}'s link (a record "
                              "was deleted, inserted or altered)", rid)
            keyed = mac is not None and rid > mac.legacy_head_id
            if keyed and record["chain"] != KEYED:
                return broken(f"record #{rid}: it is unkeyed ({record['chain']}), but every record after "
                              f"#{mac.legacy_head_id} is keyed (records were rewritten without the MAC key)", rid)
            if not keyed and record["chain"] != LEGACY:
                return broken(f"record #{rid}: it claims a keyed link but "
                              + ("audit_keys holds no MAC key (it was deleted)" if mac is None else
                                 f"the chain is keyed only after record #{mac.legacy_head_id}"), rid)
            expected = chain_mac(mac.key, prev, record) if keyed and mac else chain_hash(prev, record)
            if not hmac.compare_digest(expected, record["hash"]):
                return broken(f"record #{rid}: its content does not match its "
                              + ("MAC (the record was altered, or its MAC computed without the key)" if keyed else
                                 "hash (the record was altered)"), rid)
            if mac is not None and rid == mac.legacy_head_id and record["hash"] != mac.legacy_head_hash:
                return broken(f"record #{rid}, the last unkeyed record, is not the one there was when the chain "
                              f"was keyed: one or more of records #1..#{rid} were rewritten", rid)
            legacy += 0 if keyed else 1
            prev, prev_id = record["hash"], rid
            seen_head = seen_head or prev == head
            if mark is not None and rid == mark.id:
                mark_seen = True
                if not hmac.compare_digest(mark.mac, record["hash"]):
                    return broken(f"record #{rid} does not match the checkpoint {checkpoint} (its MAC differs: "
                                  "the record was rewritten)", rid)
        if mac is not None and prev_id < mac.legacy_head_id:
            return broken(f"the chain ends at record #{prev_id}, before the last unkeyed record "
                          f"#{mac.legacy_head_id}: records were removed", None)
        if not seen_head:
            return broken(f"the chain does not contain the head {head} exported earlier: newer records were "
                          "removed", None)
        note = None
        if mark is not None:
            if mark.id > 0 and not mark_seen:
                return broken(f"the checkpoint {checkpoint} names record #{mark.id} (MAC {mark.mac[:16]}...), "
                              f"but the chain ends at #{prev_id}: records #{prev_id + 1}..#{mark.id} were removed "
                              "(truncation)", None)
            note = f"checkpoint record #{mark.id} matches"
        return Verification(True, count, prev, None, None, legacy, prev_id, note)
