"""``drbroker snapshot restore``: an instance's broker records rebuilt from its newest snapshot in COS.

The rows go back as they were stored (ciphertext included; each sealed value is opened first, so a KEK that
cannot open them is refused before anything is written). An operation that was still queued or running when
the snapshot was taken comes back ``failed`` ("interrupted"), and an instance or binding it was moving is left
``failed`` as after ``drbroker operations abandon``: the platform's next DELETE (or ``operations retry``)
carries on from what the backend really has.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, insert, select

from broker.evidence.cos import Bucket, CosError
from broker.evidence.snapshots import FORMAT, folder, key_time
from broker.store.repository import Store
from broker.store.sealed import SEALED, aad
from broker.store.tables import bindings, instances, operation_steps, operations

INTERRUPTED = "interrupted: it was still running when the configuration snapshot was taken; restored as failed"
_TABLES = {"instances": instances, "bindings": bindings, "operations": operations,
           "operation_steps": operation_steps}
_MOVING_INSTANCE = {"provisioning": "failed", "deprovisioning": "failed"}
_MOVING_BINDING = {"binding": "failed", "unbinding": "failed"}


class RestoreError(Exception):
    """The restore was refused; nothing was written."""


@dataclass
class Restored:
    key: str
    instance_id: str
    state: str
    bindings: int
    operations: int
    steps: int
    interrupted: list[str] = field(default_factory=list)
    dry_run: bool = False


def snapshots(bucket: Bucket, instance_id: str) -> list[tuple[float, str]]:
    """(changed_at, key) of every snapshot of ``instance_id``, oldest first."""
    out = []
    for key in bucket.list(folder(bucket.config.prefix, instance_id)):
        at = key_time(key)
        if at is not None:
            out.append((at, key))
    return sorted(out)


def choose(bucket: Bucket, instance_id: str, at: float | None) -> str:
    found = snapshots(bucket, instance_id)
    if not found:
        raise RestoreError(f"no snapshot of instance {instance_id} in {bucket.name}/"
                           f"{folder(bucket.config.prefix, instance_id)}")
    eligible = [key for when, key in found if at is None or when <= at]
    if not eligible:
        raise RestoreError(f"no snapshot of instance {instance_id} at or before that time (the oldest is from "
                           f"{found[0][0]:.6f})")
    return eligible[-1]


def load(bucket: Bucket, key: str, instance_id: str) -> dict[str, Any]:
    try:
        doc = json.loads(bucket.get(key))
    except (ValueError, UnicodeDecodeError):
        raise RestoreError(f"{key} is not a snapshot (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("instance_id") != instance_id \
            or not isinstance(doc.get("instance"), dict) or doc["instance"].get("id") != instance_id:
        raise RestoreError(f"{key} is not a {FORMAT} snapshot of instance {instance_id}")
    return doc


def _check_opens(store: Store, table: str, rows: list[Mapping[str, Any]]) -> None:
    key_cols, columns = SEALED[table]
    for row in rows:
        key = tuple(row[k] for k in key_cols)
        for column in columns:
            value = row.get(column)
            if value is None:
                continue
            try:
                store.sealer.unseal(str(value), aad(table, column, key))
            except Exception as exc:
                raise RestoreError(f"{table}.{column} of {'/'.join(map(str, key))} does not open with the "
                                   f"configured KEK ({type(exc).__name__}): restore with the KEK of the broker "
                                   "that wrote the snapshot (the same kek.json or Key Protect root key)") from None


def _columns(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    names = set(_TABLES[table].c.keys())
    return {k: v for k, v in row.items() if k in names}


def restore(store: Store, bucket: Bucket, instance_id: str, *, at: float | None = None, replace: bool = False,
            dry_run: bool = False, now: float) -> Restored:
    """Rebuild the instance's rows from its snapshot; RestoreError (nothing written) when refused."""
    key = choose(bucket, instance_id, at)
    doc = load(bucket, key, instance_id)
    inst = _columns("instances", doc["instance"])
    if inst.get("state") == "gone":
        raise RestoreError(f"instance {instance_id} was deprovisioned (snapshot {key}); there is nothing to "
                           "restore (give --at a time before the deprovision only if its resources still exist)")
    binds = [_columns("bindings", b) for b in doc.get("bindings") or []]
    ops = [_columns("operations", o) for o in doc.get("operations") or []]
    steps = [_columns("operation_steps", s) for s in doc.get("operation_steps") or []]
    if any(b.get("instance_id") != instance_id for b in binds) or \
            any(o.get("instance_id") != instance_id for o in ops) or \
            not {s.get("operation_id") for s in steps} <= {o.get("id") for o in ops}:
        raise RestoreError(f"{key} holds rows of another instance; refused")
    for table, rows in (("instances", [inst]), ("bindings", binds), ("operations", ops),
                        ("operation_steps", steps)):
        _check_opens(store, table, rows)
    interrupted = []
    for op in ops:
        if op.get("state") in ("queued", "in_progress"):
            interrupted.append(op["id"])
            op.update(state="failed", description=f"failed: {INTERRUPTED}", error=INTERRUPTED, finished_at=now,
                      lease_owner=None, lease_until=None)
            if op.get("binding_id"):
                for b in binds:
                    if b["id"] == op["binding_id"] and b["state"] in _MOVING_BINDING:
                        b["state"] = _MOVING_BINDING[b["state"]]
            elif inst["state"] in _MOVING_INSTANCE:
                inst["state"] = _MOVING_INSTANCE[inst["state"]]
    result = Restored(key, instance_id, inst["state"], len(binds), len(ops), len(steps), interrupted, dry_run)
    with store.write() as tx:
        conn = tx.conn
        exists = conn.execute(select(instances.c.id).where(instances.c.id == instance_id)).first() is not None
        if exists and not replace:
            raise RestoreError(f"instance {instance_id} exists in the database; give --replace to overwrite its "
                               "records with the snapshot's")
        taken = [r[0] for r in conn.execute(select(operations.c.id).where(
            operations.c.id.in_([o["id"] for o in ops]), operations.c.instance_id != instance_id))] if ops else []
        if taken:
            raise RestoreError(f"operation id(s) {', '.join(taken)} belong to another instance here; refused")
        if dry_run:
            return result
        old_ops = select(operations.c.id).where(operations.c.instance_id == instance_id)
        conn.execute(delete(operation_steps).where(operation_steps.c.operation_id.in_(old_ops)))
        conn.execute(delete(operations).where(operations.c.instance_id == instance_id))
        conn.execute(delete(bindings).where(bindings.c.instance_id == instance_id))
        conn.execute(delete(instances).where(instances.c.id == instance_id))
        conn.execute(insert(instances).values(**inst))
        for table, rows in ((bindings, binds), (operations, ops), (operation_steps, steps)):
            if rows:
                conn.execute(insert(table), rows)
    return result


def require_bucket(env: Mapping[str, str]) -> Bucket:
    from broker.evidence.cos import CosConfig

    config = CosConfig.from_env(env)
    if config is None:
        raise CosError("COS is not configured: set DRBROKER_COS_BUCKET, DRBROKER_COS_ENDPOINT and credentials")
    return Bucket(config)
