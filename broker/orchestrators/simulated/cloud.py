"""The simulated PowerVS cloud: resources kept in the broker's own database, so they survive restarts.

Every resource is owned by an instance (and maybe a binding) and has a deterministic name derived from
its owner and kind, so an action that is repeated after a crash finds the resource it made before
instead of making a second one (the unique index on kind+name makes a duplicate impossible).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from broker.store.db import is_sqlite, writer_lock
from broker.store.tables import sim_resources

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

# Built once: SQLAlchemy reuses their compiled form without re-hashing a new expression on every call.
_BY_NAME = select(sim_resources).where(and_(sim_resources.c.kind == bindparam("kind"),
                                            sim_resources.c.name == bindparam("name")))
_DELETE_BY_NAME = delete(sim_resources).where(and_(sim_resources.c.kind == bindparam("kind"),
                                                   sim_resources.c.name == bindparam("name")))
_UPDATE = update(sim_resources).where(sim_resources.c.id == bindparam("k_id"))
_INSERT = insert(sim_resources)


def _row(row: Any) -> Resource:
    m = row._mapping
    return Resource(id=m["id"], kind=m["kind"], name=m["name"], instance_id=m["instance_id"],
                    binding_id=m["binding_id"], state=m["state"], data=json.loads(m["data"]),
                    created_at=m["created_at"])


class SimulatedCloud:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # A lookup is one SELECT: on SQLite it needs no transaction around it (see ``Store.read``).
        self._single = engine.execution_options(sqlite_begin=None) if is_sqlite(engine) else engine

    def get(self, kind: str, instance_id: str, binding_id: str | None = None, part: str = "") -> Resource | None:
        name = resource_name(kind, instance_id, binding_id, part)
        with self._single.connect() as conn:
            row = conn.execute(_BY_NAME, {"kind": kind, "name": name}).first()
        return _row(row) if row else None

    def get_many(self, kind: str, instance_ids: Sequence[str]) -> dict[str, Resource]:
        """``get(kind, instance_id)`` for many instances at once: the instance_id index finds a chunk's resources
        in one query, and keeping only those with the name ``get`` would look up returns exactly what it
        would."""
        found: dict[str, Resource] = {}
        ids = list(dict.fromkeys(instance_ids))
        for start in range(0, len(ids), BULK_CHUNK):
            chunk = ids[start:start + BULK_CHUNK]
            stmt = select(sim_resources).where(sim_resources.c.kind == kind, sim_resources.c.instance_id.in_(chunk))
            with self._single.connect() as conn:
                rows = conn.execute(stmt).all()
            for row in rows:
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
        try:
            with writer_lock(self.engine), self.engine.begin() as conn:
                conn.execute(_INSERT, values)
        except IntegrityError:
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
        with writer_lock(self.engine), self.engine.begin() as conn:
            conn.execute(_UPDATE, {"k_id": res.id, "state": new_state, "data": json.dumps(merged, sort_keys=True),
                                   "updated_at": time.time()})
        return Resource(id=res.id, kind=res.kind, name=res.name, instance_id=res.instance_id,
                        binding_id=res.binding_id, state=new_state, data=merged, created_at=res.created_at)

    def by_id(self, resource_id: str) -> Resource | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sim_resources).where(sim_resources.c.id == resource_id)).first()
        return _row(row) if row else None

    def of_kind(self, kind: str, instance_id: str | None = None) -> list[Resource]:
        stmt = select(sim_resources).where(sim_resources.c.kind == kind).order_by(sim_resources.c.created_at)
        if instance_id is not None:
            stmt = stmt.where(sim_resources.c.instance_id == instance_id)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(stmt)]

    def remove(self, kind: str, instance_id: str, binding_id: str | None = None, part: str = "") -> bool:
        name = resource_name(kind, instance_id, binding_id, part)
        with writer_lock(self.engine), self.engine.begin() as conn:
            return conn.execute(_DELETE_BY_NAME, {"kind": kind, "name": name}).rowcount > 0

    def remove_all(self, kind: str, instance_id: str, binding_id: str | None = None) -> int:
        cond = [sim_resources.c.kind == kind, sim_resources.c.instance_id == instance_id]
        if binding_id is not None:
            cond.append(sim_resources.c.binding_id == binding_id)
        with writer_lock(self.engine), self.engine.begin() as conn:
            return conn.execute(delete(sim_resources).where(and_(*cond))).rowcount

    def remove_binding_resources(self, instance_id: str) -> int:
        with writer_lock(self.engine), self.engine.begin() as conn:
            return conn.execute(delete(sim_resources).where(and_(
                sim_resources.c.instance_id == instance_id, sim_resources.c.binding_id.is_not(None)))).rowcount

    def seed(self, rows: list[tuple[str, str, str, dict[str, Any]]]) -> None:
        """Insert customer-owned resources (kind, natural id, state, data) in one transaction, once."""
        if not rows or self.get(rows[-1][0], SEED_OWNER, None, rows[-1][1]) is not None:
            return
        now = time.time()
        values = [dict(id=f"{kind[:8]}-{uuid.uuid5(uuid.NAMESPACE_URL, kind + natural)}", kind=kind,
                       name=resource_name(kind, SEED_OWNER, None, natural), instance_id=SEED_OWNER, binding_id=None,
                       state=state, data=json.dumps(data, sort_keys=True), created_at=now, updated_at=now)
                  for kind, natural, state, data in rows]
        try:
            with writer_lock(self.engine), self.engine.begin() as conn:
                conn.execute(insert(sim_resources), values)
        except IntegrityError:
            pass  # another process seeded it first

    def inventory(self, instance_id: str | None = None, *, include_seed: bool = False) -> list[Resource]:
        """Resources owned by broker instances (or by one); the customer's seeded account on request."""
        stmt = select(sim_resources).order_by(sim_resources.c.instance_id, sim_resources.c.created_at)
        if instance_id is not None:
            stmt = stmt.where(sim_resources.c.instance_id == instance_id)
        elif not include_seed:
            stmt = stmt.where(sim_resources.c.instance_id != SEED_OWNER)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(stmt)]
