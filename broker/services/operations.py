"""The operator's view of operations: list, show (steps, attempts, timings, errors, lease), and two
deliberate interventions, ``retry`` and ``abandon`` (``drbroker operations ...``).

Rules (README "Operator commands"):

- ``retry`` applies to a **failed** operation that is still the latest of its instance (or binding), with
  nothing else running there, and that was not halted by a deprovision/unbind (that request supersedes it).
  It becomes ``queued`` again with a fresh ``maximum_polling_duration``. If its failure ran compensations
  (a failed provision, bind, or DR action whose finished steps were undone), it restarts from step 1, since
  what those steps made is gone; otherwise (deprovision, unbind, abandoned or timed-out-while-queued
  operations, failures before any compensable step) it resumes at the step that failed. The instance or
  binding goes back to the state the operation had while it ran (``provisioning``, ``deprovisioning``,
  ``binding``, ``unbinding``).
- ``abandon`` applies to a **queued or in-progress** operation: it ends ``failed`` with the description
  "abandoned by operator", its lease is cleared, and its instance or binding is left as after any failure.
  It runs no compensation: a worker still inside a step finishes that one backend call and then stops (its
  next guarded write fails); a DELETE of the instance (orphan mitigation) removes whatever it created.

Both are single guarded transactions: they change nothing unless the operation is still in the state they
read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.domain.catalog import Catalog
from broker.domain.errors import NotFound, PermanentBackendError, Unprocessable
from broker.domain.models import (
    BindingState,
    InstanceState,
    Operation,
    OperationState,
    OperationType,
    StepRecord,
)
from broker.events.listener import operation_failed
from broker.store.repository import Store
from broker.workflows.definitions import Step, steps_for
from broker.workflows.engine import PARKED, deadline, polling_limit, record_failure

ABANDONED = "abandoned by operator"

# While an operation of this type runs, its instance (or binding) is in this state.
_RUNNING_STATE: dict[OperationType, tuple[str, str | None]] = {
    OperationType.PROVISION: ("instance", InstanceState.PROVISIONING.value),
    OperationType.DEPROVISION: ("instance", InstanceState.DEPROVISIONING.value),
    OperationType.UPDATE: ("instance", None),  # an update leaves the instance ready while it runs
    OperationType.BIND: ("binding", BindingState.BINDING.value),
    OperationType.UNBIND: ("binding", BindingState.UNBINDING.value),
}


@dataclass(frozen=True)
class StepView:
    idx: int
    action: str
    title: str
    state: str  # pending | running | done | failed | compensated
    attempts: int
    started_at: float | None
    finished_at: float | None
    error: str | None


@dataclass(frozen=True)
class OperationView:
    operation: Operation
    steps: list[StepView]
    deadline: float | None
    maximum_polling_duration: int | None

    def as_dict(self) -> dict[str, Any]:
        op = self.operation
        out: dict[str, Any] = summary(op)
        out.update({
            "plan_id": op.plan_id, "started_at": op.started_at, "finished_at": op.finished_at,
            "error": op.error, "lease_owner": op.lease_owner, "lease_until": op.lease_until,
            "heartbeat_at": op.heartbeat_at, "cancel_requested": op.cancel_requested, "blocked_by": op.blocked_by,
            "maximum_polling_duration": self.maximum_polling_duration, "deadline": self.deadline,
            "operator_retries": op.payload.get("operator_retries", 0),
            "steps": [s.__dict__ for s in self.steps],
        })
        return out


def summary(op: Operation) -> dict[str, Any]:
    """One operation as a row of ``operations list``."""
    return {"id": op.id, "type": op.type.value, "state": op.state.value, "instance_id": op.instance_id,
            "binding_id": op.binding_id, "step_index": op.step_index, "step_total": op.step_total,
            "claims": op.attempts, "created_at": op.created_at, "description": op.description}


class OperationsAdmin:
    def __init__(self, store: Store, catalog: Catalog, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock

    # reading --------------------------------------------------------------------------------------
    def list_operations(self, *, state: str | None = None, instance_id: str | None = None,
                        limit: int = 100) -> list[Operation]:
        if state is not None and state not in {s.value for s in OperationState}:
            raise Unprocessable(f"state: {state!r} is not one of {', '.join(s.value for s in OperationState)}")
        with self.store.read() as tx:
            return tx.list_operations(instance_id=instance_id, state=state, limit=limit)

    def _planned(self, op: Operation) -> tuple[Step, ...]:
        plan = self.catalog.plan(op.payload.get("target_plan_id") or op.plan_id)
        if plan is None:
            return ()
        try:
            return steps_for(op.type, plan, op.payload)
        except (KeyError, PermanentBackendError):
            return ()

    def show(self, op_id: str) -> OperationView:
        with self.store.read() as tx:
            op = tx.get_operation(op_id)
            if op is None:
                raise NotFound(f"operation {op_id} does not exist")
            records = {r.idx: r for r in tx.steps(op_id)}
        planned = self._planned(op)
        views: list[StepView] = []
        for idx in range(max(len(planned), max(records, default=-1) + 1)):
            rec: StepRecord | None = records.get(idx)
            step = planned[idx] if idx < len(planned) else None
            views.append(StepView(
                idx=idx, action=rec.name if rec else step.action if step else "?",
                title=step.title if step else "", state=rec.state if rec else "pending",
                attempts=rec.attempts if rec else 0, started_at=rec.started_at if rec else None,
                finished_at=rec.finished_at if rec else None, error=rec.error if rec else None))
        return OperationView(op, views, deadline(self.catalog, op), polling_limit(self.catalog, op))

    # interventions --------------------------------------------------------------------------------
    def retry(self, op_id: str) -> Operation:
        """Queue a failed operation again (rules in the module docstring)."""
        now = self.clock()
        with self.store.write() as tx:
            op = tx.get_operation(op_id)
            if op is None:
                raise NotFound(f"operation {op_id} does not exist")
            if op.state != OperationState.FAILED:
                raise Unprocessable(f"operation {op_id} is {op.state.value}; only a failed operation can be "
                                    "retried (abandon an in-progress one first)")
            if op.error == "halted":
                raise Unprocessable(f"operation {op_id} was halted by a later "
                                    f"{'deprovision' if op.type == OperationType.PROVISION else 'unbind'} "
                                    "request, which supersedes it; it cannot be retried")
            latest = (tx.latest_binding_operation(op.instance_id, op.binding_id) if op.binding_id
                      else tx.latest_instance_operation(op.instance_id))
            if latest is not None and latest.id != op.id:
                raise Unprocessable(f"operation {op_id} is not the latest of its "
                                    f"{'binding' if op.binding_id else 'instance'}: {latest.type.value} "
                                    f"{latest.id} ({latest.state.value}) came after it")
            active = tx.active_operations(op.instance_id)
            if active:
                raise Unprocessable(f"instance {op.instance_id} has a {active[0].type.value} operation "
                                    f"({active[0].id}) in progress; retry when it has finished")
            inst = tx.get_instance(op.instance_id)
            if inst is None or inst.state == InstanceState.GONE:
                raise Unprocessable(f"instance {op.instance_id} no longer exists")
            kind, running = _RUNNING_STATE[op.type]
            if kind == "binding":
                assert op.binding_id is not None
                binding = tx.get_binding(op.instance_id, op.binding_id)
                if binding is None or binding.state != BindingState.FAILED:
                    state = binding.state.value if binding else "missing"
                    raise Unprocessable(f"binding {op.binding_id} is {state}, not failed; it cannot be retried")
                if op.type == OperationType.BIND and inst.state != InstanceState.READY:
                    raise Unprocessable(f"instance {op.instance_id} is {inst.state.value}; a bind needs it ready")
                tx.update_binding(op.instance_id, op.binding_id, expect_state=BindingState.FAILED,
                                  state=running, updated_at=now)
            elif running is not None:
                if inst.state != InstanceState.FAILED:
                    raise Unprocessable(f"instance {op.instance_id} is {inst.state.value}, not failed; the "
                                        f"{op.type.value} cannot be retried")
                tx.update_instance(op.instance_id, expect_state=InstanceState.FAILED, state=running,
                                   updated_at=now)
            elif inst.state != InstanceState.READY:
                raise Unprocessable(f"instance {op.instance_id} is {inst.state.value}; an update needs it ready")
            start = self.restart_index(op)
            payload = {k: v for k, v in op.payload.items() if k not in ("failure", "failed_idx")}
            payload.update(retried_at=now, operator_retries=int(op.payload.get("operator_retries", 0)) + 1)
            where = "from step 1" if start == 0 else f"from step {start + 1}"
            if not tx.update_operation(op.id, expect={"state": OperationState.FAILED}, state=OperationState.QUEUED,
                                       step_index=start, step_started_at=None, finished_at=None, error=None,
                                       lease_owner=None, lease_until=None, heartbeat_at=None,
                                       cancel_requested=False, blocked_by=None, payload=payload,
                                       description=f"{op.type.value}: queued again by an operator ({where})"):
                raise Unprocessable(f"operation {op_id} changed meanwhile; look again")
            result = tx.get_operation(op.id)
        assert result is not None
        return result

    def restart_index(self, op: Operation) -> int:
        """Where a retry starts: step 1 when the failure undid finished steps, else the step that failed."""
        if op.payload.get("failure"):
            planned = self._planned(op)
            failed_idx = int(op.payload.get("failed_idx", op.step_index))
            if any(s.compensation for s in planned[: failed_idx + 1]):
                return 0
        return op.step_index

    def resume_parked(self, instance_id: str) -> Operation | None:
        """Let a worker run the waiting step of the instance's parked operation (``engine._park``) at its next
        poll instead of when the wait ends, e.g. once the person it waits for has acted; None when no
        operation of the instance is parked."""
        now = self.clock()
        with self.store.write() as tx:
            parked = next((o for o in tx.active_operations(instance_id) if o.lease_owner == PARKED), None)
            if parked is None:
                return None
            if not tx.update_operation(parked.id, expect={"lease_owner": PARKED, "state": OperationState.IN_PROGRESS},
                                       lease_until=now):
                return None
            return tx.get_operation(parked.id)

    def abandon(self, op_id: str) -> Operation:
        """End a queued or in-progress operation as failed, "abandoned by operator"."""
        now = self.clock()
        with self.store.write() as tx:
            op = tx.get_operation(op_id)
            if op is None:
                raise NotFound(f"operation {op_id} does not exist")
            if op.state.finished:
                raise Unprocessable(f"operation {op_id} has already {op.state.value}; only a queued or "
                                    "in-progress operation can be abandoned")
            if not tx.update_operation(op.id, expect={"state": op.state}, state=OperationState.FAILED,
                                       description=ABANDONED, error=ABANDONED, finished_at=now,
                                       lease_owner=None, lease_until=None):
                raise Unprocessable(f"operation {op_id} changed meanwhile; look again")
            record_failure(tx, op, now)
            operation_failed(tx.conn, op, ABANDONED, None, now)  # the DR events (a rehearsal or move ended)
            for rec in tx.steps(op.id):
                if rec.state == "running":
                    tx.upsert_step(StepRecord(**{**rec.__dict__, "state": "failed", "finished_at": now,
                                                 "error": ABANDONED}))
            result = tx.get_operation(op.id)
        assert result is not None
        return result
