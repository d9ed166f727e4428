"""Per-instance DR configuration snapshots in COS, written at each change, for ``drbroker snapshot restore``.

An engine listener marks ``instance_snapshots.changed_at`` in the transaction of every operation that ends
(provision, update and DR actions, bind, unbind, deprovision; a failure changes states too). The export job
then writes ``<prefix>/snapshots/<instance id, percent-encoded>/<changed_at, 20-digit microseconds>-<sha256
of the content, 12 hex>.json`` holding what a restore needs: the instance row, its bindings, its operations
and their steps (the step outputs name the backend resources a deprovision or a key operation looks up).

Rows are copied **as stored**: the sealed columns (parameters, credentials, payloads, step outputs, request
hashes) stay ciphertext under the broker's KEK, whose AAD names table, column and row key, so re-inserting the
same rows under the same keys opens with the same KEK and no secret leaves the database in plaintext. A legacy
value stored before encryption is sealed now, under the same AAD, before it is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from sqlalchemy import and_, case, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from broker.evidence.cos import Bucket
from broker.security.audit import iso
from broker.store.repository import Store
from broker.store.sealed import SEALED, PlainText, aad
from broker.store.tables import bindings, instance_snapshots, instances, operation_steps, operations
from broker.workflows.worker import _owner_is_dead_local_process as dead_local_owner

log = logging.getLogger("drbroker.evidence")
FORMAT = "drbroker-instance-snapshot/1"
MAX_PER_RUN = 200
_TICK = 1e-6


# marking ------------------------------------------------------------------------------------------
def mark(conn: Any, instance_id: str, now: float) -> None:
    """Note that ``instance_id`` changed (inside the caller's transaction); changed_at only moves forward."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(instance_snapshots).values(instance_id=instance_id, changed_at=now)
    current = instance_snapshots.c.changed_at
    stmt = stmt.on_conflict_do_update(index_elements=["instance_id"], set_={
        "changed_at": case((current >= now, current + _TICK), else_=now)})
    conn.execute(stmt)


class SnapshotMarker:
    """The engine listener: every operation that ends changes its instance or one of its bindings."""

    def succeeded(self, tx: Any, op: Any, before: Any, after: Any, outputs: Any, now: float) -> None:
        mark(tx.conn, op.instance_id, now)

    def failed(self, tx: Any, op: Any, reason: str, failed_action: str | None, now: float) -> None:
        mark(tx.conn, op.instance_id, now)


def make_listener(runtime: Any) -> SnapshotMarker | None:
    """The marker, when COS is configured (broker.jobs LISTENERS)."""
    from broker.evidence.cos import CosConfig

    return SnapshotMarker() if CosConfig.from_env(runtime.settings.evidence_env) is not None else None


def mark_unsnapshotted(store: Store, now: float) -> int:
    """Mark every instance that has no snapshot row (instances from before COS was configured)."""
    with store.write() as tx:
        missing = [r[0] for r in tx.conn.execute(
            select(instances.c.id).where(~instances.c.id.in_(select(instance_snapshots.c.instance_id))))]
        for iid in missing:
            tx.conn.execute(insert(instance_snapshots).values(instance_id=iid, changed_at=now))
    return len(missing)


# building -----------------------------------------------------------------------------------------
def folder(prefix: str, instance_id: str) -> str:
    return f"{prefix}/snapshots/{quote(instance_id, safe='-_.~')}/"


def snapshot_key(prefix: str, instance_id: str, changed_at: float, body: bytes) -> str:
    return f"{folder(prefix, instance_id)}{round(changed_at * 1e6):020d}-{hashlib.sha256(body).hexdigest()[:12]}.json"


def key_time(key: str) -> float | None:
    """The changed_at in a snapshot key (None: not a snapshot key)."""
    name = key.rsplit("/", 1)[-1]
    digits = name.partition("-")[0]
    return int(digits) / 1e6 if digits.isdigit() and name.endswith(".json") else None


def _sealed_rows(store: Store, table: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with every sealed column ciphertext (legacy plaintext sealed now under its row's AAD)."""
    if isinstance(store.sealer, PlainText):
        return rows
    key_cols, columns = SEALED[table]
    for row in rows:
        key = tuple(row[k] for k in key_cols)
        for column in columns:
            value = row.get(column)
            if value is not None and not str(value).startswith("enc:"):
                row[column] = store.sealer.seal(str(value), aad(table, column, key))
    return rows


def build(store: Store, instance_id: str) -> tuple[dict[str, Any] | None, float | None]:
    """The snapshot document of ``instance_id`` as it is now, and the changed_at it shows (one read)."""
    with store.read() as tx:
        conn = tx.conn
        changed = conn.execute(select(instance_snapshots.c.changed_at)
                               .where(instance_snapshots.c.instance_id == instance_id)).scalar()
        row = conn.execute(select(instances).where(instances.c.id == instance_id)).first()
        if row is None:
            return None, changed
        binds = [dict(r._mapping) for r in conn.execute(
            select(bindings).where(bindings.c.instance_id == instance_id).order_by(bindings.c.id))]
        ops = [dict(r._mapping) for r in conn.execute(
            select(operations).where(operations.c.instance_id == instance_id)
            .order_by(operations.c.created_at, operations.c.id))]
        steps = [dict(r._mapping) for r in conn.execute(
            select(operation_steps).where(operation_steps.c.operation_id.in_([o["id"] for o in ops]))
            .order_by(operation_steps.c.operation_id, operation_steps.c.idx))] if ops else []
    for op in ops:  # which worker held an operation, and its heartbeat, mean nothing to a restored database
        if not str(op.get("lease_owner") or "").startswith("parked:"):
            op["lease_owner"] = op["lease_until"] = None
        op["heartbeat_at"] = None
    doc = {
        "format": FORMAT, "instance_id": instance_id, "changed_at": changed,
        "changed_at_iso": iso(changed) if changed else None, "plan_id": row.plan_id, "state": row.state,
        "sealed": "ciphertext as stored, under the broker's KEK (restore with the same kek.json or Key Protect key)",
        "instance": _sealed_rows(store, "instances", [dict(row._mapping)])[0],
        "bindings": _sealed_rows(store, "bindings", binds),
        "operations": _sealed_rows(store, "operations", ops),
        "operation_steps": _sealed_rows(store, "operation_steps", steps),
    }
    return doc, changed


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


# exporting ----------------------------------------------------------------------------------------
def _due(now: float) -> Any:
    s = instance_snapshots.c
    return and_(or_(s.exported_changed_at.is_(None), s.exported_changed_at < s.changed_at),
                or_(s.lease_until.is_(None), s.lease_until < now))


def export_due(store: Store, bucket: Bucket, owner: str, clock: Callable[[], float], *,
               lease_seconds: float = 60.0) -> dict[str, Any]:
    """Write the snapshot of every instance marked since its last one; claims each with a lease."""
    s = instance_snapshots.c
    now = clock()
    with store.read(snapshot=False) as tx:
        due = [r[0] for r in tx.conn.execute(select(s.instance_id).where(_due(now)).order_by(s.changed_at)
                                             .limit(MAX_PER_RUN))]
    written = 0
    for iid in due:
        with store.write() as tx:
            held = tx.conn.execute(select(s.lease_owner).where(s.instance_id == iid)).scalar()
            cond = _due(clock())
            if held and dead_local_owner(held):  # its holder died on this host: take it over now
                cond = or_(cond, s.lease_owner == held)
            claimed = tx.conn.execute(update(instance_snapshots).where(and_(s.instance_id == iid, cond))
                                      .values(lease_owner=owner, lease_until=clock() + lease_seconds)).rowcount
        if not claimed:
            continue
        try:
            doc, changed = build(store, iid)
            key = None
            if doc is not None and changed is not None:
                body = encode(doc)
                key = snapshot_key(bucket.config.prefix, iid, changed, body)
                bucket.put_once(key, body)
                written += 1
        except Exception:
            with store.write() as tx:
                tx.conn.execute(update(instance_snapshots).where(and_(s.instance_id == iid, s.lease_owner == owner))
                                .values(lease_owner=None, lease_until=None))
            raise
        with store.write() as tx:
            # A change that committed meanwhile moved changed_at past what this snapshot shows: still due.
            tx.conn.execute(update(instance_snapshots).where(and_(s.instance_id == iid, s.lease_owner == owner))
                            .values(exported_at=clock(), exported_key=key, exported_changed_at=changed,
                                    lease_owner=None, lease_until=None))
        log.info("COS snapshot of %s -> %s", iid, key)
    return {"written": written, "due": len(due)}
