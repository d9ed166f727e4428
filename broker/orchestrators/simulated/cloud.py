"""The simulated PowerVS cloud: resources kept in the broker's own database, so they survive restarts.

Every resource is owned by an instance (and maybe a binding) and has a deterministic name derived from
its owner and kind, so an action that is repeated after a crash finds the resource it made before
instead of making a second one (the unique index on kind+name makes a duplicate impossible). The rows are
read and written only through ``broker.store.simcloud.SimResourceRows`` (one statement per call, under the
store's writer lock), so this module holds no tables or SQL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from broker.store.simcloud import SimResourceRows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resource:
    id: str
    kind: str
    name: str
    instance_id: str
    binding_id: str | None
    state: str
    data: dict[str, Any]
    created_at: float


SEED_OWNER = ""  # resources of the customer's account (workspaces, pools, volumes), owned by no instance


def resource_name(kind: str, instance_id: str, binding_id: str | None = None, part: str = "") -> str:
    if instance_id == SEED_OWNER:
        return f"{kind}:{part}"
    digest = hashlib.sha256(f"{instance_id}\0{binding_id or ''}\0{part}".encode()).hexdigest()[:24]
    return f"{kind}-{digest}"


BULK_CHUNK = 500  # ids per IN list, well inside SQLite's and PostgreSQL's bound-parameter limits

def _row(row: Any) -> Resource:
    m = row._mapping
    return Resource(id=m["id"], kind=m["kind"], name=m["name"], instance_id=m["instance_id"],
                    binding_id=m["binding_id"], state=m["state"], data=json.loads(m["data"]),
                    created_at=m["created_at"])


class SimulatedCloud:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rows = SimResourceRows(engine)

    def get(self, kind: str, instance_id: str, binding_id: str | None = None, part: str = "") -> Resource | None:
        name = resource_name(kind, instance_id, binding_id, part)
        row = self.rows.by_name(kind, name)
        return _row(row) if row else None

    def get_many(self, kind: str, instance_ids: Sequence[str]) -> dict[str, Resource]:
        """``get(kind, instance_id)`` for many instances at once: the instance_id index finds a chunk's resources
        in one query, and keeping only those with the name ``get`` would look up returns exactly what it
        would."""
        found: dict[str, Resource] = {}
        ids = list(dict.fromkeys(instance_ids))
        for start in range(0, len(ids), BULK_CHUNK):
            chunk = ids[start:start + BULK_CHUNK]
            for row in self.rows.of_instances(kind, chunk):
                res = _row(row)
                if res.name == resource_name(kind, res.instance_id):
                    found[res.instance_id] = res
        return found

    def ensure(self, kind: str, instance_id: str, binding_id: str | None, state: str,
               data: Mapping[str, Any], part: str = "") -> Resource:
        """Create the resource unless it exists; return what is there."""
        existing = self.get(kind, instance_id, binding_id, part)
        if existing is not None:
            return existing
        now = time.time()
        values = dict(id=f"{kind[:8]}-{uuid.uuid4()}", kind=kind,
                      name=resource_name(kind, instance_id, binding_id, part), instance_id=instance_id,
                      binding_id=binding_id, state=state, data=json.dumps(dict(data), sort_keys=True),
                      created_at=now, updated_at=now)
        if not self.rows.insert(values):
            # A concurrent attempt created it first; ours is discarded. Leases keep one step from running in
            # two places at once, so this deserves a warning (the chaos test looks for it).
            log.warning("simulated cloud: duplicate create of %s %s refused by the unique index", kind,
                        values["name"])
        else:
            # One line per creation: the chaos test counts them to prove no resource was made twice.
            log.info("simulated cloud: created %s %s (%s) for %s", kind, values["name"], values["id"],
                     instance_id + (f"/{binding_id}" if binding_id else ""))
            return Resource(id=values["id"], kind=kind, name=values["name"], instance_id=instance_id,
                            binding_id=binding_id, state=state, data=json.loads(values["data"]), created_at=now)
        found = self.get(kind, instance_id, binding_id, part)
        assert found is not None
        return found

    def set_state(self, kind: str, instance_id: str, binding_id: str | None, state: str | None = None,
                  data: Mapping[str, Any] | None = None, part: str = "") -> Resource | None:
        """Change state and/or merge data; None when the resource does not exist."""
        existing = self.get(kind, instance_id, binding_id, part)
        if existing is None:
            return None
        return self.update(existing, state=state, data=data)

    def update(self, res: Resource, *, state: str | None = None, data: Mapping[str, Any] | None = None) -> Resource:
        merged = {**res.data, **(data or {})}
        new_state = state if state is not None else res.state
        self.rows.update(res.id, state=new_state, data=json.dumps(merged, sort_keys=True), updated_at=time.time())
        return Resource(id=res.id, kind=res.kind, name=res.name, instance_id=res.instance_id,
                        binding_id=res.binding_id, state=new_state, data=merged, created_at=res.created_at)

    def update_if(self, res: Resource, *, state: str | None = None, data: Mapping[str, Any] | None = None,
                  also: Callable[[Connection], None] | None = None) -> Resource | None:
        """``update`` unless the resource changed since ``res`` was read (another process got there first):
        then None, and nothing is written. ``also`` writes more in the same transaction when it won."""
        merged = {**res.data, **(data or {})}
        new_state = state if state is not None else res.state
        if not self.rows.update_if(res.id, expect_data=json.dumps(res.data, sort_keys=True), state=new_state,
                                   data=json.dumps(merged, sort_keys=True), updated_at=time.time(), also=also):
            return None
        return Resource(id=res.id, kind=res.kind, name=res.name, instance_id=res.instance_id,
                        binding_id=res.binding_id, state=new_state, data=merged, created_at=res.created_at)

    def by_id(self, resource_id: str) -> Resource | None:
        row = self.rows.by_id(resource_id)
        return _row(row) if row else None

    def of_kind(self, kind: str, instance_id: str | None = None) -> list[Resource]:
        return [_row(r) for r in self.rows.of_kind(kind, instance_id)]

    def remove(self, kind: str, instance_id: str, binding_id: str | None = None, part: str = "") -> bool:
        name = resource_name(kind, instance_id, binding_id, part)
        return self.rows.delete_by_name(kind, name)

    def remove_all(self, kind: str, instance_id: str, binding_id: str | None = None) -> int:
        return self.rows.delete_owned(kind, instance_id, binding_id)

    def remove_binding_resources(self, instance_id: str) -> int:
        return self.rows.delete_binding_resources(instance_id)

    def seed(self, rows: list[tuple[str, str, str, dict[str, Any]]]) -> None:
        """Insert customer-owned resources (kind, natural id, state, data) in one transaction, once."""
        if not rows or self.get(rows[-1][0], SEED_OWNER, None, rows[-1][1]) is not None:
            return
        now = time.time()
        values = [dict(id=f"{kind[:8]}-{uuid.uuid5(uuid.NAMESPACE_URL, kind + natural)}", kind=kind,
                       name=resource_name(kind, SEED_OWNER, None, natural), instance_id=SEED_OWNER, binding_id=None,
                       state=state, data=json.dumps(data, sort_keys=True), created_at=now, updated_at=now)
                  for kind, natural, state, data in rows]
        self.rows.insert(values)  # refused when another process seeded it first

    def inventory(self, instance_id: str | None = None, *, include_seed: bool = False) -> list[Resource]:
        """Resources owned by broker instances (or by one); the customer's seeded account on request."""
        rows = self.rows.owned(instance_id, exclude_owner=None if include_seed else SEED_OWNER)
        return [_row(r) for r in rows]
