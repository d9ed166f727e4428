"""The durable store: every read and write of broker state goes through here.

A service method opens one transaction (``store.write()``), reads what it must decide on, and writes the
instance/binding row and its operation row together, so nothing that was answered can be half-written.
State transitions are guarded updates whose row count is checked (``update_operation(..., expect=...)``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from broker.domain.errors import Conflict
from broker.domain.models import (
    Binding,
    BindingState,
    Instance,
    InstanceState,
    Operation,
    OperationState,
    OperationType,
    StepRecord,
)
from broker.store.db import is_sqlite, writer_lock
from broker.store.sealed import PlainText, Sealer, open_values, seal_values
from broker.store.tables import bindings, instances, operation_steps, operations

_JSON_INSTANCE = ("parameters", "context", "dr_state")
_JSON_BINDING = ("parameters", "bind_resource", "context", "credentials")
_JSON_OPERATION = ("payload", "originating_identity")


def _dump(row: Mapping[str, Any], json_fields: tuple[str, ...],
          seal: tuple[Sealer, str, tuple[Any, ...]] | None = None) -> dict[str, Any]:
    """Row values for SQL: JSON fields as text; with ``seal`` = (sealer, table, row key) the secret-bearing
    columns (``broker.store.sealed``) are encrypted."""
    out = dict(row)
    for key in json_fields:
        if key in out and out[key] is not None:
            out[key] = json.dumps(out[key], sort_keys=True)
    if seal is not None:
        seal_values(seal[0], seal[1], out, seal[2])
    return out


def _load(row: Any, json_fields: tuple[str, ...], sealer: Sealer | None = None,
          table: str | None = None) -> dict[str, Any]:
    """A row (or a mapping of its columns) as plain values: sealed columns opened, JSON columns parsed."""
    out = dict(getattr(row, "_mapping", row))
    if sealer is not None and table is not None:
        open_values(sealer, table, out)
    for key in json_fields:
        if out.get(key) is not None:
            out[key] = json.loads(out[key])
    return out


def _instance(row: Any, sealer: Sealer) -> Instance:
    data = _load(row, _JSON_INSTANCE, sealer, "instances")
    data["state"] = InstanceState(data["state"])
    return Instance(**data)


def _binding(row: Any, sealer: Sealer) -> Binding:
    data = _load(row, _JSON_BINDING, sealer, "bindings")
    data["state"] = BindingState(data["state"])
    return Binding(**data)


def _operation(row: Any, sealer: Sealer) -> Operation:
    data = _load(row, _JSON_OPERATION, sealer, "operations")
    data["type"] = OperationType(data["type"])
    data["state"] = OperationState(data["state"])
    data["payload"] = data.get("payload") or {}
    return Operation(**data)


def _step(row: Any, sealer: Sealer) -> StepRecord:
    return StepRecord(**_load(row, ("outputs",), sealer, "operation_steps"))


_ACTIVE = (OperationState.QUEUED.value, OperationState.IN_PROGRESS.value)
_INSTANCE_OPS = (OperationType.PROVISION.value, OperationType.UPDATE.value, OperationType.DEPROVISION.value)
_BINDING_OPS = (OperationType.BIND.value, OperationType.UNBIND.value)
_TABLES: dict[str, Table] = {t.name: t for t in (instances, bindings, operations, operation_steps)}

# Statements are built once per shape and reused: SQLAlchemy then finds their compiled form by a cache key it
# has already computed, instead of constructing and hashing a new expression tree on every call (which was
# most of the store's CPU time, docs/benchmarks.md). Values travel as bound parameters named k_ (row key),
# e_ (expected value) and v_ (new value).


@cache
def _select_by(table: str, keys: tuple[str, ...], lock: bool = False) -> Any:
    t = _TABLES[table]
    stmt = select(t).where(and_(*(t.c[k] == bindparam(f"k_{k}") for k in keys)))
    return stmt.with_for_update() if lock else stmt


@lru_cache(maxsize=1024)
def _guarded_update(table: str, keys: tuple[str, ...], expect: tuple[str, ...], expect_null: tuple[str, ...],
                    fields: tuple[str, ...]) -> Any:
    t = _TABLES[table]
    cond = [t.c[k] == bindparam(f"k_{k}") for k in keys]
    cond += [t.c[k] == bindparam(f"e_{k}") for k in expect]
    cond += [t.c[k].is_(None) for k in expect_null]
    return update(t).where(and_(*cond)).values({f: bindparam(f"v_{f}") for f in fields})


def _run_update(conn: Connection, table: str, key: Mapping[str, Any], expect: Mapping[str, Any],
                values: Mapping[str, Any]) -> int:
    expect = {k: (v.value if hasattr(v, "value") else v) for k, v in expect.items()}
    stmt = _guarded_update(table, tuple(key), tuple(k for k, v in expect.items() if v is not None),
                           tuple(k for k, v in expect.items() if v is None), tuple(values))
    params = {f"k_{k}": v for k, v in key.items()}
    params.update({f"e_{k}": v for k, v in expect.items() if v is not None})
    params.update({f"v_{k}": v for k, v in values.items()})
    return conn.execute(stmt, params).rowcount


_INSERT = {name: insert(t) for name, t in _TABLES.items()}


def _one_of(column: Any, values: tuple[str, ...]) -> Any:
    # A fixed list as plain comparisons: ``IN`` takes an "expanding" parameter that SQLAlchemy rewrites
    # into the statement on every execution.
    return or_(*(column == v for v in values))


_LATEST_INSTANCE_OP = (
    select(operations)
    .where(and_(operations.c.instance_id == bindparam("k_instance_id"), _one_of(operations.c.type, _INSTANCE_OPS)))
    .order_by(operations.c.created_at.desc(), operations.c.id.desc()).limit(1))
_LATEST_BINDING_OP = (
    select(operations)
    .where(and_(operations.c.instance_id == bindparam("k_instance_id"),
                operations.c.binding_id == bindparam("k_binding_id"), _one_of(operations.c.type, _BINDING_OPS)))
    .order_by(operations.c.created_at.desc(), operations.c.id.desc()).limit(1))
_ACTIVE_OPS = (
    select(operations)
    .where(and_(operations.c.instance_id == bindparam("k_instance_id"), _one_of(operations.c.state, _ACTIVE)))
    .order_by(operations.c.created_at))
_LIVE_BINDINGS = (
    select(bindings)
    .where(and_(bindings.c.instance_id == bindparam("k_instance_id"), bindings.c.state != BindingState.GONE.value))
    .order_by(bindings.c.created_at))
_ALL_BINDINGS = select(bindings).where(bindings.c.instance_id == bindparam("k_instance_id")).order_by(
    bindings.c.created_at)
# Fetch instance in one statement: the row, whether an update is queued or running, how many bindings are bound.
_INSTANCE_SUMMARY = select(
    instances,
    exists().where(and_(operations.c.instance_id == instances.c.id,
                        _one_of(operations.c.state, _ACTIVE),
                        operations.c.type == OperationType.UPDATE.value)).label("_updating"),
    select(func.count()).select_from(bindings).where(and_(
        bindings.c.instance_id == instances.c.id, bindings.c.state == BindingState.BOUND.value))
    .scalar_subquery().label("_bound"),
).where(instances.c.id == bindparam("k_id"))
_ANY_CLAIMABLE = select(operations.c.id).where(or_(
    operations.c.state == OperationState.QUEUED.value,
    and_(operations.c.state == OperationState.IN_PROGRESS.value,
         or_(operations.c.lease_until.is_(None), operations.c.lease_until < bindparam("now"),
             operations.c.lease_owner.is_(None), operations.c.lease_owner != bindparam("owner"))),
)).limit(1)
_INSTANCE_EXISTS = select(instances.c.id).where(instances.c.id == bindparam("k_id"))
_STEPS = select(operation_steps).where(operation_steps.c.operation_id == bindparam("k_operation_id")).order_by(
    operation_steps.c.idx)


class Tx:
    """Queries and writes inside one transaction."""

    def __init__(self, conn: Connection, *, for_update: bool, sealer: Sealer | None = None) -> None:
        self.conn = conn
        self.sealer: Sealer = sealer or PlainText()
        self._lock = for_update and conn.dialect.name == "postgresql"

    def _by_key(self, table: str, lock: bool = True, **key: Any) -> Any:
        stmt = _select_by(table, tuple(key), lock and self._lock)
        return self.conn.execute(stmt, {f"k_{k}": v for k, v in key.items()}).first()

    def lock_instance(self, instance_id: str) -> None:
        """Serialise writers deciding about one instance id, even before its row exists.

        SQLite's BEGIN IMMEDIATE already serialises every writer. On PostgreSQL two requests for a new id
        would both see no row and race to insert it; a transaction-scoped advisory lock on the id's hash
        makes the second wait and then see the first one's row (so an identical repeat gets 202, not 409).
        """
        if self.conn.dialect.name == "postgresql":
            key = int.from_bytes(hashlib.sha256(instance_id.encode()).digest()[:8], "big", signed=True)
            self.conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    # instances ------------------------------------------------------------------------------------
    def get_instance(self, instance_id: str) -> Instance | None:
        row = self._by_key("instances", id=instance_id)
        return _instance(row, self.sealer) if row else None

    def instance_summary(self, instance_id: str) -> tuple[Instance, bool, int] | None:
        """The instance, whether an update of it is queued or running, and how many bindings are bound."""
        row = self.conn.execute(_INSTANCE_SUMMARY, {"k_id": instance_id}).first()
        if row is None:
            return None
        columns = dict(row._mapping)
        updating, bound = bool(columns.pop("_updating")), int(columns.pop("_bound"))
        return _instance(columns, self.sealer), updating, bound

    def instance_exists(self, instance_id: str) -> bool:
        return self.conn.execute(_INSTANCE_EXISTS, {"k_id": instance_id}).first() is not None

    def insert_instance(self, instance: Instance) -> None:
        try:
            values = _dump(asdict(instance), _JSON_INSTANCE, (self.sealer, "instances", (instance.id,)))
            self.conn.execute(_INSERT["instances"], values)
        except IntegrityError:
            raise Conflict(f"instance {instance.id} was created concurrently") from None

    def replace_instance(self, instance: Instance) -> None:
        values = _dump(asdict(instance), _JSON_INSTANCE, (self.sealer, "instances", (instance.id,)))
        _run_update(self.conn, "instances", {"id": instance.id}, {}, values)

    def update_instance(self, instance_id: str, expect_state: InstanceState | None = None,
                        **fields: Any) -> bool:
        expect = {} if expect_state is None else {"state": expect_state.value}
        values = _dump(fields, _JSON_INSTANCE, (self.sealer, "instances", (instance_id,)))
        return _run_update(self.conn, "instances", {"id": instance_id}, expect, values) == 1

    def count_account_instances(self, account_id: str) -> int:
        stmt = select(func.count()).select_from(instances).where(and_(
            instances.c.account_id == account_id, instances.c.state != InstanceState.GONE.value))
        return int(self.conn.execute(stmt).scalar_one())

    def ready_instances(self, after: str | None, limit: int) -> list[Instance]:
        """A page of the ready instances in id order, after ``after`` (keyset paging: the RPO sampler)."""
        stmt = (select(instances).where(instances.c.state == InstanceState.READY.value)
                .order_by(instances.c.id).limit(limit))
        if after is not None:
            stmt = stmt.where(instances.c.id > after)
        return [_instance(r, self.sealer) for r in self.conn.execute(stmt)]

    def list_instances(self, *, include_gone: bool = False) -> list[Instance]:
        stmt = select(instances).order_by(instances.c.created_at)
        if not include_gone:
            stmt = stmt.where(instances.c.state != InstanceState.GONE.value)
        return [_instance(r, self.sealer) for r in self.conn.execute(stmt)]

    # bindings -------------------------------------------------------------------------------------
    def get_binding(self, instance_id: str, binding_id: str) -> Binding | None:
        row = self._by_key("bindings", instance_id=instance_id, id=binding_id)
        return _binding(row, self.sealer) if row else None

    def insert_binding(self, binding: Binding) -> None:
        try:
            values = _dump(asdict(binding), _JSON_BINDING,
                           (self.sealer, "bindings", (binding.instance_id, binding.id)))
            self.conn.execute(_INSERT["bindings"], values)
        except IntegrityError:
            raise Conflict(f"binding {binding.id} was created concurrently") from None

    def replace_binding(self, binding: Binding) -> None:
        values = _dump(asdict(binding), _JSON_BINDING,
                       (self.sealer, "bindings", (binding.instance_id, binding.id)))
        _run_update(self.conn, "bindings", {"instance_id": binding.instance_id, "id": binding.id}, {}, values)

    def update_binding(self, instance_id: str, binding_id: str, expect_state: BindingState | None = None,
                       **fields: Any) -> bool:
        expect = {} if expect_state is None else {"state": expect_state.value}
        values = _dump(fields, _JSON_BINDING, (self.sealer, "bindings", (instance_id, binding_id)))
        return _run_update(self.conn, "bindings", {"instance_id": instance_id, "id": binding_id}, expect,
                           values) == 1

    def list_bindings(self, instance_id: str, *, include_gone: bool = False) -> list[Binding]:
        stmt = _ALL_BINDINGS if include_gone else _LIVE_BINDINGS
        return [_binding(r, self.sealer) for r in self.conn.execute(stmt, {"k_instance_id": instance_id})]

    def purge_bindings(self, instance_id: str) -> None:
        self.conn.execute(delete(bindings).where(bindings.c.instance_id == instance_id))

    # operations -----------------------------------------------------------------------------------
    def insert_operation(self, op: Operation) -> None:
        values = _dump(asdict(op), _JSON_OPERATION, (self.sealer, "operations", (op.id,)))
        values["type"], values["state"] = op.type.value, op.state.value
        self.conn.execute(_INSERT["operations"], values)

    def get_operation(self, operation_id: str) -> Operation | None:
        row = self._by_key("operations", lock=False, id=operation_id)
        return _operation(row, self.sealer) if row else None

    def update_operation(self, operation_id: str, *, expect: Mapping[str, Any] | None = None,
                         **fields: Any) -> bool:
        """Guarded update: applies only while every ``expect`` column still holds its value."""
        values = _dump(fields, _JSON_OPERATION, (self.sealer, "operations", (operation_id,)))
        for key, value in list(values.items()):
            if hasattr(value, "value"):
                values[key] = value.value
        return _run_update(self.conn, "operations", {"id": operation_id}, expect or {}, values) == 1

    def latest_instance_operation(self, instance_id: str) -> Operation | None:
        row = self.conn.execute(_LATEST_INSTANCE_OP, {"k_instance_id": instance_id}).first()
        return _operation(row, self.sealer) if row else None

    def latest_binding_operation(self, instance_id: str, binding_id: str) -> Operation | None:
        row = self.conn.execute(_LATEST_BINDING_OP, {"k_instance_id": instance_id,
                                                     "k_binding_id": binding_id}).first()
        return _operation(row, self.sealer) if row else None

    def active_operations(self, instance_id: str) -> list[Operation]:
        rows = self.conn.execute(_ACTIVE_OPS, {"k_instance_id": instance_id})
        return [_operation(r, self.sealer) for r in rows]

    def list_operations(self, *, instance_id: str | None = None, state: OperationState | str | None = None,
                        limit: int = 100) -> list[Operation]:
        """Newest first, optionally of one instance and/or in one state (operator view, deadline reaper)."""
        stmt = select(operations).order_by(operations.c.created_at.desc(), operations.c.id.desc()).limit(limit)
        if instance_id is not None:
            stmt = stmt.where(operations.c.instance_id == instance_id)
        if state is not None:
            stmt = stmt.where(operations.c.state == OperationState(state).value)
        return [_operation(r, self.sealer) for r in self.conn.execute(stmt)]

    def claimable_operations(self, now: float, limit: int = 20) -> list[Operation]:
        stmt = (
            select(operations)
            .where(or_(
                operations.c.state == OperationState.QUEUED.value,
                and_(operations.c.state == OperationState.IN_PROGRESS.value,
                     or_(operations.c.lease_until.is_(None), operations.c.lease_until < now)),
            ))
            .order_by(operations.c.created_at)
            .limit(limit)
        )
        if self.conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        return [_operation(r, self.sealer) for r in self.conn.execute(stmt)]

    def has_claimable(self, now: float, owner: str) -> bool:
        """Whether ``claimable_operations`` or ``held_operations`` could give ``owner`` anything: a cheap,
        read-only look that spares an idle worker a write transaction on every poll."""
        return self.conn.execute(_ANY_CLAIMABLE, {"now": now, "owner": owner}).first() is not None

    def held_operations(self, now: float) -> list[Operation]:
        """In-progress operations whose lease is still valid (candidates for dead-owner takeover)."""
        rows = self.conn.execute(select(operations).where(and_(
            operations.c.state == OperationState.IN_PROGRESS.value, operations.c.lease_until >= now)))
        return [_operation(r, self.sealer) for r in rows]

    # steps ----------------------------------------------------------------------------------------
    def steps(self, operation_id: str) -> list[StepRecord]:
        rows = self.conn.execute(_STEPS, {"k_operation_id": operation_id})
        return [_step(r, self.sealer) for r in rows]

    def upsert_step(self, step: StepRecord, *, new: bool | None = None) -> None:
        """Write a step record; ``new`` says whether it exists already (None: find out by trying an update)."""
        values = _dump(asdict(step), ("outputs",),
                       (self.sealer, "operation_steps", (step.operation_id, step.idx)))
        if new:
            self.conn.execute(_INSERT["operation_steps"], values)
            return
        key = {"operation_id": values.pop("operation_id"), "idx": values.pop("idx")}
        if not _run_update(self.conn, "operation_steps", key, {}, values) and new is None:
            self.conn.execute(_INSERT["operation_steps"], {**key, **values})

    def update_step(self, operation_id: str, idx: int, **fields: Any) -> bool:
        """Change some columns of one step record (``outputs`` is sealed like any write of it)."""
        values = _dump(fields, ("outputs",), (self.sealer, "operation_steps", (operation_id, idx)))
        return _run_update(self.conn, "operation_steps", {"operation_id": operation_id, "idx": idx}, {},
                           values) == 1


class Store:
    def __init__(self, engine: Engine, sealer: Sealer | None = None) -> None:
        self.engine = engine
        # Encrypts the secret-bearing columns at the row boundary (``broker.store.sealed``).
        self.sealer: Sealer = sealer or PlainText()
        sqlite = is_sqlite(engine)
        self._writer = engine.execution_options(sqlite_begin="IMMEDIATE") if sqlite else engine
        # One SELECT is atomic on its own: on SQLite it needs no BEGIN and COMMIT around it (each is a trip
        # into the driver that gives up the GIL, and under load a request thread waits to get it back).
        self._single = engine.execution_options(sqlite_begin=None) if sqlite else engine

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """One write transaction (``BEGIN IMMEDIATE`` on SQLite; row locks on PostgreSQL)."""
        with writer_lock(self.engine), self._writer.connect() as conn, conn.begin():
            yield Tx(conn, for_update=True, sealer=self.sealer)

    @contextmanager
    def read(self, *, snapshot: bool = True) -> Iterator[Tx]:
        """A read transaction. ``snapshot=False`` is for a caller that reads with one statement (or whose
        statements need not agree with each other): on SQLite it runs them without a transaction around them."""
        with (self.engine if snapshot else self._single).connect() as conn, conn.begin():
            yield Tx(conn, for_update=False, sealer=self.sealer)
