"""The ``sim_resources`` table behind the simulated cloud (``broker.orchestrators.simulated.cloud``).

The simulated cloud is on the hot path of the benchmarks, so it does not open a ``Store`` transaction per
lookup: each method here is one statement, a lookup on an engine that needs no transaction around a single
SELECT on SQLite (as ``Store.read(snapshot=False)`` does) and a write under the store's writer lock (as
``Store.write()`` does). The simulated cloud reaches the table only through this class, so the orchestrators
hold no tables, SQL or locks of their own. Rows come back as SQLAlchemy row mappings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from broker.store.db import is_sqlite, writer_lock
from broker.store.tables import sim_resources

# Built once: SQLAlchemy reuses their compiled form without re-hashing a new expression on every call.
_BY_NAME = select(sim_resources).where(and_(sim_resources.c.kind == bindparam("kind"),
                                            sim_resources.c.name == bindparam("name")))
_DELETE_BY_NAME = delete(sim_resources).where(and_(sim_resources.c.kind == bindparam("kind"),
                                                   sim_resources.c.name == bindparam("name")))
_UPDATE = update(sim_resources).where(sim_resources.c.id == bindparam("k_id"))
_INSERT = insert(sim_resources)


class SimResourceRows:
    """One statement per call on ``sim_resources``; the unique index on kind+name refuses a duplicate."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # A lookup is one SELECT: on SQLite it needs no transaction around it (see ``Store.read``).
        self._single = engine.execution_options(sqlite_begin=None) if is_sqlite(engine) else engine

    def by_name(self, kind: str, name: str) -> Any:
        with self._single.connect() as conn:
            return conn.execute(_BY_NAME, {"kind": kind, "name": name}).first()

    def of_instances(self, kind: str, instance_ids: Sequence[str]) -> list[Any]:
        stmt = select(sim_resources).where(sim_resources.c.kind == kind,
                                           sim_resources.c.instance_id.in_(list(instance_ids)))
        with self._single.connect() as conn:
            return list(conn.execute(stmt).all())

    def insert(self, values: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> bool:
        """Insert one row (or many in one transaction); False when the unique index refused it."""
        try:
            with writer_lock(self.engine), self.engine.begin() as conn:
                if isinstance(values, Mapping):
                    conn.execute(_INSERT, dict(values))
                else:
                    conn.execute(insert(sim_resources), [dict(v) for v in values])
        except IntegrityError:
            return False
        return True

    def update(self, resource_id: str, *, state: str, data: str, updated_at: float) -> None:
        with writer_lock(self.engine), self.engine.begin() as conn:
            conn.execute(_UPDATE, {"k_id": resource_id, "state": state, "data": data, "updated_at": updated_at})

    def update_if(self, resource_id: str, *, expect_data: str, state: str, data: str, updated_at: float,
                  also: Callable[[Connection], None] | None = None) -> bool:
        """``update`` only while the row's data is still ``expect_data`` (compare-and-set); False otherwise.
        ``also`` runs in the same transaction when the update won (the DR event of a key rotation)."""
        stmt = update(sim_resources).where(sim_resources.c.id == resource_id, sim_resources.c.data == expect_data)
        with writer_lock(self.engine), self.engine.begin() as conn:
            won = conn.execute(stmt, {"state": state, "data": data, "updated_at": updated_at}).rowcount > 0
            if won and also is not None:
                also(conn)
            return won

    def by_id(self, resource_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(sim_resources).where(sim_resources.c.id == resource_id)).first()

    def of_kind(self, kind: str, instance_id: str | None = None) -> list[Any]:
        stmt = select(sim_resources).where(sim_resources.c.kind == kind).order_by(sim_resources.c.created_at)
        if instance_id is not None:
            stmt = stmt.where(sim_resources.c.instance_id == instance_id)
        with self.engine.connect() as conn:
            return list(conn.execute(stmt))

    def delete_by_name(self, kind: str, name: str) -> bool:
        with writer_lock(self.engine), self.engine.begin() as conn:
            return conn.execute(_DELETE_BY_NAME, {"kind": kind, "name": name}).rowcount > 0

    def delete_owned(self, kind: str, instance_id: str, binding_id: str | None = None) -> int:
        cond = [sim_resources.c.kind == kind, sim_resources.c.instance_id == instance_id]
        if binding_id is not None:
            cond.append(sim_resources.c.binding_id == binding_id)
        with writer_lock(self.engine), self.engine.begin() as conn:
            return conn.execute(delete(sim_resources).where(and_(*cond))).rowcount

    def delete_binding_resources(self, instance_id: str) -> int:
        with writer_lock(self.engine), self.engine.begin() as conn:
            return conn.execute(delete(sim_resources).where(and_(
                sim_resources.c.instance_id == instance_id, sim_resources.c.binding_id.is_not(None)))).rowcount

    def owned(self, instance_id: str | None = None, *, exclude_owner: str | None = None) -> list[Any]:
        """Rows by owner and age: one owner's, or everyone's but ``exclude_owner``'s."""
        stmt = select(sim_resources).order_by(sim_resources.c.instance_id, sim_resources.c.created_at)
        if instance_id is not None:
            stmt = stmt.where(sim_resources.c.instance_id == instance_id)
        elif exclude_owner is not None:
            stmt = stmt.where(sim_resources.c.instance_id != exclude_owner)
        with self.engine.connect() as conn:
            return list(conn.execute(stmt))
