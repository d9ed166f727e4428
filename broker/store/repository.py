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
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, or_, select, text, update
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
    out = dict(row._mapping)
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


class Tx:
    """Queries and writes inside one transaction."""

    def __init__(self, conn: Connection, *, for_update: bool, sealer: Sealer | None = None) -> None:
        self.conn = conn
        self.sealer: Sealer = sealer or PlainText()
        self._lock = for_update and conn.dialect.name == "postgresql"

    def _one(self, stmt: Any) -> Any:
        if self._lock:
            stmt = stmt.with_for_update()
        return self.conn.execute(stmt).first()

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
        row = self._one(select(instances).where(instances.c.id == instance_id))
        return _instance(row, self.sealer) if row else None

    def insert_instance(self, instance: Instance) -> None:
        try:
            values = _dump(asdict(instance), _JSON_INSTANCE, (self.sealer, "instances", (instance.id,)))
            self.conn.execute(insert(instances).values(**values))
        except IntegrityError:
            raise Conflict(f"instance {instance.id} was created concurrently") from None

    def replace_instance(self, instance: Instance) -> None:
        values = _dump(asdict(instance), _JSON_INSTANCE, (self.sealer, "instances", (instance.id,)))
        self.conn.execute(update(instances).where(instances.c.id == instance.id).values(**values))

    def update_instance(self, instance_id: str, expect_state: InstanceState | None = None,
                        **fields: Any) -> bool:
        cond = [instances.c.id == instance_id]
        if expect_state is not None:
            cond.append(instances.c.state == expect_state.value)
        values = _dump(fields, _JSON_INSTANCE, (self.sealer, "instances", (instance_id,)))
        return self.conn.execute(update(instances).where(and_(*cond)).values(**values)).rowcount == 1

    def count_account_instances(self, account_id: str) -> int:
        stmt = select(func.count()).select_from(instances).where(and_(
            instances.c.account_id == account_id, instances.c.state != InstanceState.GONE.value))
        return int(self.conn.execute(stmt).scalar_one())

    def list_instances(self, *, include_gone: bool = False) -> list[Instance]:
        stmt = select(instances).order_by(instances.c.created_at)
        if not include_gone:
            stmt = stmt.where(instances.c.state != InstanceState.GONE.value)
        return [_instance(r, self.sealer) for r in self.conn.execute(stmt)]

    # bindings -------------------------------------------------------------------------------------
    def get_binding(self, instance_id: str, binding_id: str) -> Binding | None:
        row = self._one(select(bindings).where(
            and_(bindings.c.instance_id == instance_id, bindings.c.id == binding_id)))
        return _binding(row, self.sealer) if row else None

    def insert_binding(self, binding: Binding) -> None:
        try:
            values = _dump(asdict(binding), _JSON_BINDING,
                           (self.sealer, "bindings", (binding.instance_id, binding.id)))
            self.conn.execute(insert(bindings).values(**values))
        except IntegrityError:
            raise Conflict(f"binding {binding.id} was created concurrently") from None

    def replace_binding(self, binding: Binding) -> None:
        values = _dump(asdict(binding), _JSON_BINDING,
                       (self.sealer, "bindings", (binding.instance_id, binding.id)))
        self.conn.execute(update(bindings).where(and_(
            bindings.c.instance_id == binding.instance_id, bindings.c.id == binding.id)).values(**values))

    def update_binding(self, instance_id: str, binding_id: str, expect_state: BindingState | None = None,
                       **fields: Any) -> bool:
        cond = [bindings.c.instance_id == instance_id, bindings.c.id == binding_id]
        if expect_state is not None:
            cond.append(bindings.c.state == expect_state.value)
        values = _dump(fields, _JSON_BINDING, (self.sealer, "bindings", (instance_id, binding_id)))
        return self.conn.execute(update(bindings).where(and_(*cond)).values(**values)).rowcount == 1

    def list_bindings(self, instance_id: str, *, include_gone: bool = False) -> list[Binding]:
        stmt = select(bindings).where(bindings.c.instance_id == instance_id).order_by(bindings.c.created_at)
        if not include_gone:
            stmt = stmt.where(bindings.c.state != BindingState.GONE.value)
        return [_binding(r, self.sealer) for r in self.conn.execute(stmt)]

    def purge_bindings(self, instance_id: str) -> None:
        self.conn.execute(delete(bindings).where(bindings.c.instance_id == instance_id))

    # operations -----------------------------------------------------------------------------------
    def insert_operation(self, op: Operation) -> None:
        values = _dump(asdict(op), _JSON_OPERATION, (self.sealer, "operations", (op.id,)))
        self.conn.execute(insert(operations).values(**values))

    def get_operation(self, operation_id: str) -> Operation | None:
        row = self.conn.execute(select(operations).where(operations.c.id == operation_id)).first()
        return _operation(row, self.sealer) if row else None

    def update_operation(self, operation_id: str, *, expect: Mapping[str, Any] | None = None,
                         **fields: Any) -> bool:
        """Guarded update: applies only while every ``expect`` column still holds its value."""
        cond = [operations.c.id == operation_id]
        for key, value in (expect or {}).items():
            cond.append(operations.c[key] == (value.value if hasattr(value, "value") else value))
        values = _dump(fields, _JSON_OPERATION, (self.sealer, "operations", (operation_id,)))
        for key, value in list(values.items()):
            if hasattr(value, "value"):
                values[key] = value.value
        return self.conn.execute(update(operations).where(and_(*cond)).values(**values)).rowcount == 1

    def latest_instance_operation(self, instance_id: str) -> Operation | None:
        row = self.conn.execute(
            select(operations)
            .where(and_(operations.c.instance_id == instance_id, operations.c.type.in_(_INSTANCE_OPS)))
            .order_by(operations.c.created_at.desc(), operations.c.id.desc()).limit(1)
        ).first()
        return _operation(row, self.sealer) if row else None

    def latest_binding_operation(self, instance_id: str, binding_id: str) -> Operation | None:
        row = self.conn.execute(
            select(operations)
            .where(and_(operations.c.instance_id == instance_id, operations.c.binding_id == binding_id,
                        operations.c.type.in_(_BINDING_OPS)))
            .order_by(operations.c.created_at.desc(), operations.c.id.desc()).limit(1)
        ).first()
        return _operation(row, self.sealer) if row else None

    def active_operations(self, instance_id: str) -> list[Operation]:
        rows = self.conn.execute(
            select(operations)
            .where(and_(operations.c.instance_id == instance_id, operations.c.state.in_(_ACTIVE)))
            .order_by(operations.c.created_at)
        )
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

    def held_operations(self, now: float) -> list[Operation]:
        """In-progress operations whose lease is still valid (candidates for dead-owner takeover)."""
        rows = self.conn.execute(select(operations).where(and_(
            operations.c.state == OperationState.IN_PROGRESS.value, operations.c.lease_until >= now)))
        return [_operation(r, self.sealer) for r in rows]

    # steps ----------------------------------------------------------------------------------------
    def steps(self, operation_id: str) -> list[StepRecord]:
        rows = self.conn.execute(select(operation_steps).where(operation_steps.c.operation_id == operation_id)
                                 .order_by(operation_steps.c.idx))
        return [_step(r, self.sealer) for r in rows]

    def upsert_step(self, step: StepRecord) -> None:
        values = _dump(asdict(step), ("outputs",),
                       (self.sealer, "operation_steps", (step.operation_id, step.idx)))
        done = self.conn.execute(update(operation_steps).where(and_(
            operation_steps.c.operation_id == step.operation_id, operation_steps.c.idx == step.idx))
            .values(**values)).rowcount
        if not done:
            self.conn.execute(insert(operation_steps).values(**values))


class Store:
    def __init__(self, engine: Engine, sealer: Sealer | None = None) -> None:
        self.engine = engine
        # Encrypts the secret-bearing columns at the row boundary (``broker.store.sealed``).
        self.sealer: Sealer = sealer or PlainText()

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """One write transaction (``BEGIN IMMEDIATE`` on SQLite; row locks on PostgreSQL)."""
        with writer_lock(self.engine), self.engine.connect() as conn:
            if is_sqlite(self.engine):
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield Tx(conn, for_update=True, sealer=self.sealer)

    @contextmanager
    def read(self) -> Iterator[Tx]:
        with self.engine.connect() as conn, conn.begin():
            yield Tx(conn, for_update=False, sealer=self.sealer)
