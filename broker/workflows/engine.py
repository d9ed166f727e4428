"""Runs one claimed operation step by step, recording each finished step before starting the next.

The caller holds the operation's lease. Every write the engine makes is guarded by
``lease_owner = me AND state = in_progress``; if the guard fails, another worker has taken the operation
over (our lease expired), an operator abandoned it, and this run stops without touching anything else.

An operation must finish within its plan's ``maximum_polling_duration`` (counted from when it was accepted,
or queued again by an operator): the engine checks that deadline before each step and while it retries a
transient error, and ends an operation that ran out of time as a failure (with its compensations).

A step that waits for a person rather than a backend raises ``AwaitingApproval`` (the one such step today:
deleting a Key Protect root key with a dual-authorisation policy, which a second identity must delete).
The engine then *parks* the operation: it stays in progress, its description (what last_operation shows)
is the step's message, its lease goes to no worker (``PARKED``) until ``retry_after`` seconds from now, when
any worker claims it and runs that step again. A parked wait is neither a failed attempt nor bound by
``maximum_polling_duration``: each time the step parks, the deadline starts again from then
(``payload.waited_at``), so the wait may last days, and the steps after it still get the plan's full
duration once the person has acted. (A platform polling last_operation may give up after its own
``maximum_polling_duration``; the operation still finishes, and a repeated request finds it.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.domain.catalog import Catalog, Plan
from broker.domain.errors import AwaitingApproval, BackendError, PermanentBackendError, TransientBackendError
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
from broker.domain.protocols import Orchestrator, StepContext
from broker.security.redaction import redact, write_only_values
from broker.store.repository import Store, Tx
from broker.workflows.definitions import DR_ACTIONS, REHEARSAL_ACTIONS, Step, steps_for
from broker.workflows.retry import RetryDeadline, RetryPolicy

log = logging.getLogger(__name__)

_DONE_VERB = {
    OperationType.PROVISION: "provisioned",
    OperationType.UPDATE: "updated",
    OperationType.DEPROVISION: "deprovisioned",
    OperationType.BIND: "bound",
    OperationType.UNBIND: "unbound",
}


@dataclass(frozen=True)
class _Done:
    """A step performed, not yet recorded: its index, outputs, and any credentials for the binding row."""
    idx: int
    outputs: dict[str, Any]
    credentials: Any = None


# The lease owner of a parked operation (see the module docstring): no worker; claimable once lease_until passes.
PARKED = "parked:awaiting-approval"


class LeaseLost(Exception):
    """Another worker owns the operation now (or it was abandoned)."""


def polling_limit(catalog: Catalog, op: Operation) -> int | None:
    """The plan's ``maximum_polling_duration`` in seconds (the stricter one across a plan change)."""
    limits = []
    for plan_id in (op.plan_id, op.payload.get("target_plan_id")):
        plan = catalog.plan(plan_id) if plan_id else None
        if plan is not None and plan.maximum_polling_duration:
            limits.append(int(plan.maximum_polling_duration))
    return min(limits) if limits else None


def deadline(catalog: Catalog, op: Operation) -> float | None:
    """When ``op`` must have finished: ``maximum_polling_duration`` after it was accepted, after an operator
    queued it again (``payload.retried_at``), or after a step last parked it waiting for a person
    (``payload.waited_at``), whichever is latest; None when its plan sets no limit."""
    limit = polling_limit(catalog, op)
    if limit is None:
        return None
    start = float(op.payload.get("retried_at") or op.created_at)
    return max(start, float(op.payload.get("waited_at") or 0.0)) + limit


def timeout_reason(catalog: Catalog, op: Operation, where: str) -> str:
    return (f"timed out: not finished within the plan's maximum_polling_duration "
            f"({polling_limit(catalog, op)} s); {where}")


def record_failure(tx: Tx, op: Operation, now: float) -> None:
    """Leave the operation's instance or binding as a failure of ``op`` does. One rule for the engine, the
    deadline reaper and an operator's abandon. An operation halted by a later deprovision or unbind leaves
    the state to that request."""
    if op.cancel_requested:
        return
    if op.type in (OperationType.PROVISION, OperationType.DEPROVISION):
        tx.update_instance(op.instance_id, state=InstanceState.FAILED.value, updated_at=now)
    elif op.type == OperationType.UPDATE:
        tx.update_instance(op.instance_id, state=InstanceState.READY.value, updated_at=now)
    elif op.binding_id is not None:
        tx.update_binding(op.instance_id, op.binding_id, state=BindingState.FAILED.value, updated_at=now)


class Engine:
    def __init__(self, store: Store, catalog: Catalog, orchestrator: Orchestrator, *,
                 retry: RetryPolicy | None = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.catalog = catalog
        self.orchestrator = orchestrator
        self.retry = retry or RetryPolicy()
        self.clock = clock
        # Optional metrics sink: step_finished(action, seconds, ok, parked=...) and step_retried(action).
        self.observer: Any = None
        # Told of each operation's start, success and failure inside the transaction that records it, so
        # what they write (DR events, rehearsal schedules, snapshot marks) commits with the state change.
        # Each may define started(tx, op, now), succeeded(tx, op, before, after, outputs, now) and
        # failed(tx, op, reason, failed_action, now); ``before``/``after`` are the instance either side.
        self.listeners: list[Any] = []

    # public ---------------------------------------------------------------------------------------
    def plan_for(self, op: Operation) -> Plan:
        plan_id = op.payload.get("target_plan_id") or op.plan_id
        plan = self.catalog.plan(plan_id)
        if plan is None:
            raise PermanentBackendError(f"plan {plan_id} is no longer in the catalog")
        return plan

    def steps(self, op: Operation) -> tuple[Step, ...]:
        return steps_for(op.type, self.plan_for(op), op.payload)

    def deadline(self, op: Operation) -> float | None:
        return deadline(self.catalog, op)

    def expected_remaining(self, op: Operation) -> float:
        """Seconds until the running step should finish (for Retry-After)."""
        try:
            steps = self.steps(op)
        except PermanentBackendError:
            return 1.0
        if op.state != OperationState.IN_PROGRESS or op.step_index >= len(steps):
            return 1.0
        if op.lease_owner == PARKED and op.lease_until:
            return max(1.0, op.lease_until - self.clock())
        expected = self.orchestrator.expected_seconds(steps[op.step_index].action)
        elapsed = self.clock() - (op.step_started_at or self.clock())
        return max(1.0, expected - elapsed)

    def run(self, op_id: str, owner: str, should_stop: Callable[[], bool] = lambda: False) -> None:
        try:
            self._run(op_id, owner, should_stop)
        except LeaseLost:
            log.warning("operation %s: lease lost to another worker; stopping here", op_id)

    # internals ------------------------------------------------------------------------------------
    def _guard(self, owner: str) -> dict[str, Any]:
        return {"lease_owner": owner, "state": OperationState.IN_PROGRESS}

    def _load(self, op_id: str) -> tuple[Operation, Instance | None, Binding | None, dict[int, StepRecord]]:
        """Everything a run needs, read once: the instance and binding do not change under a running operation
        (the service refuses concurrent changes), and each later write is guarded on the lease."""
        with self.store.read() as tx:
            op = tx.get_operation(op_id)
            assert op is not None
            inst = tx.get_instance(op.instance_id)
            binding = tx.get_binding(op.instance_id, op.binding_id) if op.binding_id else None
            records = {r.idx: r for r in tx.steps(op.id)}
        return op, inst, binding, records

    def _context(self, op: Operation, inst: Instance | None, binding: Binding | None,
                 outputs: Mapping[str, Any]) -> StepContext:
        params = dict(inst.parameters if inst else {})
        if op.type == OperationType.UPDATE:
            params = dict(op.payload.get("target_parameters", params))
        return StepContext(
            operation_id=op.id, operation_type=op.type.value, instance_id=op.instance_id,
            plan=self.plan_for(op), parameters=params, context=dict(inst.context if inst else {}),
            binding_id=op.binding_id,
            binding_parameters=dict(binding.parameters if binding else {}),
            bind_resource=dict(binding.bind_resource if binding else {}),
            outputs=dict(outputs),
            identity_binding_id=op.payload.get("identity_binding_id"),
            operation_started_at=op.started_at or op.created_at,
        )

    def _run(self, op_id: str, owner: str, should_stop: Callable[[], bool]) -> None:
        op, inst, binding, records = self._load(op_id)
        if op.state != OperationState.IN_PROGRESS or op.lease_owner != owner:
            raise LeaseLost(op_id)
        steps = self.steps(op)
        outputs: dict[str, Any] = {}
        for idx in range(min(op.step_index, len(steps))):
            if idx in records:
                outputs.update(records[idx].outputs)

        if op.payload.get("failure"):
            # A crash interrupted compensation: finish it (compensations are idempotent).
            self._fail(op, inst, binding, steps, outputs, owner, op.payload["failure"],
                       failed_idx=op.payload.get("failed_idx", op.step_index))
            return

        pending: _Done | None = None  # a step performed whose record is written with the next transition
        for idx in range(op.step_index, len(steps)):
            if should_stop():
                self._release(op, owner, pending)
                return
            step = steps[idx]
            where = f"step {idx + 1}/{len(steps)} ({step.title})"
            due = self.deadline(op)
            if due is not None and self.clock() >= due:
                if pending is not None:
                    self._advance(op, owner, pending, None)
                    pending = None
                # The steps before idx are done and are compensated; so is step idx if an earlier run started
                # it (a crash may have left part of it behind; compensations are idempotent).
                self._fail(op, inst, binding, steps, outputs, owner,
                           timeout_reason(self.catalog, op, f"stopped before {where}"),
                           failed_idx=idx if idx in records else idx - 1)
                return
            if not self._advance(op, owner, pending, (idx, step, len(steps), records.get(idx))):
                self._halt(op, owner)
                return
            pending = None
            ctx = self._context(op, inst, binding, outputs)
            began = time.perf_counter()
            try:
                result = self.retry.call(
                    lambda step=step, ctx=ctx: self._perform(step.action, ctx, op, inst),
                    on_retry=lambda n, exc, idx=idx, step=step, op_id=op.id: self._note_retry(
                        op_id, idx, step, len(steps), n, exc, owner),
                    deadline=due, clock=self.clock,
                )
            except AwaitingApproval as exc:
                # waiting for a person is not a backend error: no alert may fire for it
                self._observe(step.action, began, ok=False, parked=True)
                self._park(op, owner, idx, step, len(steps), exc)
                return
            except RetryDeadline as exc:
                self._observe(step.action, began, ok=False)
                self._fail(op, inst, binding, steps, outputs, owner,
                           timeout_reason(self.catalog, op, f"{where} was still failing: {exc.last.description}"),
                           failed_idx=idx, failed_step=(idx, step, exc.last.description))
                return
            except BackendError as exc:
                self._observe(step.action, began, ok=False)
                self._fail(op, inst, binding, steps, outputs, owner, f"{where} failed: {exc.description}",
                           failed_idx=idx, failed_step=(idx, step, exc.description))
                return
            self._observe(step.action, began, ok=True)
            result = dict(result)
            # Credentials go straight to the binding row (the one place secrets are kept), never into the step
            # record or the outputs later steps see.
            credentials = result.pop("credentials", None)
            if credentials is not None:
                result["credentials_issued"] = True
            pending = _Done(idx, result, credentials)
            outputs.update(result)
        self._succeed(op, inst, owner, outputs, len(steps), pending)

    def _advance(self, op: Operation, owner: str, done: _Done | None,
                 start: tuple[int, Step, int, StepRecord | None] | None) -> bool:
        """One write transaction between steps: record the step just performed (``done``) and start the next
        one (``start``). False when the operation was asked to halt (a deprovision or unbind arrived): the
        performed step is still recorded, the next is not started. Raises LeaseLost when the lease is gone."""
        now = self.clock()
        with self.store.write() as tx:
            if start is None:
                if done is not None:
                    self._record_done(tx, op, owner, done, now)
                return True
            idx, step, total, previous = start
            fields: dict[str, Any] = dict(step_started_at=now, step_total=total,
                                          description=f"step {idx + 1}/{total}: {step.title}")
            if done is not None:
                fields["step_index"] = done.idx + 1
            if not tx.update_operation(op.id, expect={**self._guard(owner), "cancel_requested": False}, **fields):
                current = tx.get_operation(op.id)
                if current is None or current.lease_owner != owner or current.state != OperationState.IN_PROGRESS:
                    raise LeaseLost(op.id)
                if done is not None:
                    self._record_done(tx, op, owner, done, now)
                return False
            if done is not None:
                self._write_done(tx, op, done, now)
            tx.upsert_step(StepRecord(
                operation_id=op.id, idx=idx, name=step.action, state="running",
                attempts=(previous.attempts if previous else 0) + 1, started_at=now, finished_at=None,
                outputs={}, error=None), new=previous is None)
            if idx == 0 and previous is None:
                self._tell(tx, "started", op, now)
        return True

    def tell_failed(self, tx: Tx, op: Operation, reason: str, failed_action: str | None, now: float) -> None:
        """Tell the listeners of a failure recorded outside a run (the deadline reaper), in its transaction."""
        self._tell(tx, "failed", op, reason, failed_action, now)

    def _tell(self, tx: Tx, what: str, *args: Any) -> None:
        for listener in self.listeners:
            hook = getattr(listener, what, None)
            if hook is not None:
                hook(tx, *args)

    def _record_done(self, tx: Tx, op: Operation, owner: str, done: _Done, now: float) -> None:
        if not tx.update_operation(op.id, expect=self._guard(owner), step_index=done.idx + 1):
            raise LeaseLost(op.id)
        self._write_done(tx, op, done, now)

    @staticmethod
    def _write_done(tx: Tx, op: Operation, done: _Done, now: float) -> None:
        if done.credentials is not None:
            assert op.binding_id is not None
            tx.update_binding(op.instance_id, op.binding_id, credentials=done.credentials, updated_at=now)
        # attempts, started_at and the last transient error stay as the start and any retries wrote them
        tx.update_step(op.id, done.idx, state="done", finished_at=now, outputs=done.outputs)

    def _perform(self, action: str, ctx: StepContext, op: Operation, inst: Instance | None) -> Mapping[str, Any]:
        """One action; a backend error's text is redacted before anything records or logs it: an IBM error
        body may echo the request, which can carry the orchestrator password or an API key."""
        try:
            return self.orchestrator.perform(action, ctx)
        except BackendError as exc:
            clean = redact(exc.description, self._secrets(op, inst, ctx))
            if clean != exc.description:
                exc.description = clean
                exc.args = (clean,)
            raise

    def _secrets(self, op: Operation, inst: Instance | None, ctx: StepContext) -> set[str]:
        """The instance's (and the operation's target and binding's) writeOnly parameter values."""
        found: set[str] = set()
        plans = [self.catalog.plan(op.payload.get("target_plan_id") or op.plan_id),
                 self.catalog.plan(inst.plan_id) if inst else None]
        for plan in filter(None, plans):
            for slot, values in (("provision", inst.parameters if inst else {}), ("provision", ctx.parameters),
                                 ("update", ctx.parameters), ("bind", ctx.binding_parameters)):
                found |= write_only_values(values, plan.parameter_schema(slot))
        return found

    def _observe(self, action: str, began: float, *, ok: bool, parked: bool = False) -> None:
        if self.observer is not None:
            self.observer.step_finished(action, time.perf_counter() - began, ok, parked=parked)

    def _note_retry(self, op_id: str, idx: int, step: Step, total: int, attempt: int, exc: BaseException,
                    owner: str) -> None:
        if self.observer is not None:
            self.observer.step_retried(step.action)
        log.info("operation %s step %s: transient error (attempt %d), retrying: %s", op_id, step.action,
                 attempt, exc)
        with self.store.write() as tx:
            # Guarded like every other write: a retry must not go on once the lease is lost.
            if not tx.update_operation(op_id, expect=self._guard(owner),
                                       description=f"step {idx + 1}/{total}: {step.title} (retrying after a "
                                                   f"transient error, attempt {attempt + 1})"):
                raise LeaseLost(op_id)
            records = {r.idx: r for r in tx.steps(op_id)}
            rec = records.get(idx)
            if rec is not None:
                tx.upsert_step(StepRecord(**{**rec.__dict__, "attempts": rec.attempts + 1,
                                             "error": str(exc)[:2000]}))

    def _park(self, op: Operation, owner: str, idx: int, step: Step, total: int, exc: AwaitingApproval) -> None:
        """Leave the operation in progress, waiting for a person: its description says who must do what, no
        worker holds it until ``retry_after`` from now, and its deadline starts again (module docstring)."""
        now = self.clock()
        wait = float(exc.retry_after) if exc.retry_after is not None else 60.0
        with self.store.write() as tx:
            if not tx.update_operation(op.id, expect=self._guard(owner),
                                       description=f"step {idx + 1}/{total}: {step.title}: waiting: "
                                                   f"{exc.description}"[:10000],
                                       payload={**op.payload, "waited_at": now}, lease_owner=PARKED,
                                       lease_until=now + wait, heartbeat_at=now):
                raise LeaseLost(op.id)
            rec = {r.idx: r for r in tx.steps(op.id)}.get(idx)
            if rec is not None:
                tx.upsert_step(StepRecord(**{**rec.__dict__, "error": f"waiting: {exc.description}"[:2000]}))
        log.info("operation %s step %s: waiting for a person; tried again in %.0f s: %s", op.id, step.action,
                 wait, exc.description)

    def _release(self, op: Operation, owner: str, done: _Done | None = None) -> None:
        """Stop at a step boundary and let any worker (this one after a restart, or another) resume."""
        now = self.clock()
        with self.store.write() as tx:
            if done is not None:
                self._record_done(tx, op, owner, done, now)
            tx.update_operation(op.id, expect=self._guard(owner), lease_owner=None, lease_until=0.0)

    def _halt(self, op: Operation, owner: str) -> None:
        what = "deprovision" if op.type == OperationType.PROVISION else "unbind"
        now = self.clock()
        with self.store.write() as tx:
            if not tx.update_operation(op.id, expect=self._guard(owner), state=OperationState.FAILED,
                                       description=f"halted: a {what} request arrived; it removes what was "
                                                   "created", finished_at=now, lease_owner=None,
                                       lease_until=None, error="halted"):
                raise LeaseLost(op.id)

    def success_description(self, op: Operation, parameters: Mapping[str, Any]) -> str:
        action = op.payload.get("dr_action")
        verb = f"{action['type']} done" if action else _DONE_VERB[op.type]
        if op.type not in (OperationType.PROVISION, OperationType.UPDATE):
            return f"succeeded: {verb}"
        status = self.orchestrator.replication_status(op.instance_id)
        if status is None:
            return f"succeeded: {verb}"
        text = f"succeeded: {verb}; replication {status.state}"
        if status.freeze_time is not None:
            text += f", achieved RPO {max(0, round(self.clock() - status.freeze_time))} s"
            target = parameters.get("rpo_target_minutes")
            if target:
                text += f" (target {target} min)"
        return text

    def _succeed(self, op: Operation, inst: Instance | None, owner: str, outputs: dict[str, Any], total: int,
                 done: _Done | None) -> None:
        now = self.clock()
        params = op.payload.get("target_parameters") or (inst.parameters if inst else {})
        description = self.success_description(op, params)
        with self.store.write() as tx:
            if done is not None:
                self._record_done(tx, op, owner, done, now)
            if not tx.update_operation(op.id, expect=self._guard(owner), state=OperationState.SUCCEEDED,
                                       description=description,
                                       finished_at=now, lease_owner=None, lease_until=None,
                                       step_index=total):
                raise LeaseLost(op.id)
            inst = before = tx.get_instance(op.instance_id)
            dr_state = {**(inst.dr_state if inst else {}), **outputs.get("dr_state", {})}
            if op.type == OperationType.PROVISION:
                dr_state.setdefault("active_site", "primary")
                ready: dict[str, Any] = {"updated_at": now, "last_active": now, "dr_state": dr_state}
                # A deprovision that arrived during the last step (no boundary was left to halt at) owns the
                # instance's state now: it stays deprovisioning until that request has removed it.
                if inst is None or inst.state != InstanceState.DEPROVISIONING:
                    ready["state"] = InstanceState.READY.value
                tx.update_instance(op.instance_id, **ready)
            elif op.type == OperationType.UPDATE:
                fields: dict[str, Any] = {"state": InstanceState.READY.value, "updated_at": now,
                                          "parameters": op.payload["target_parameters"]}
                if op.payload.get("target_plan_id"):
                    fields["plan_id"] = op.payload["target_plan_id"]
                if op.payload.get("target_maintenance_version"):
                    fields["maintenance_version"] = op.payload["target_maintenance_version"]
                action = op.payload.get("dr_action")
                if action:
                    spec = DR_ACTIONS[action["type"]]
                    dr_state.update(spec.result)
                    dr_state["last_action"] = {"type": action["type"], "mode": action.get("mode"),
                                               "finished_at": now}
                    if action["type"] in REHEARSAL_ACTIONS:
                        dr_state["last_rehearsal_at"] = now
                        # The backend measures RTO (the rehearsal's start until every managed VM is ACTIVE) and
                        # compares it with the plan's target; the wall time stands in only if it did not.
                        rto = outputs.get("rto_seconds")
                        dr_state["last_rehearsal_rto_seconds"] = (
                            rto if rto is not None else round(now - (op.started_at or op.created_at), 3))
                        dr_state["last_rehearsal_rto_met"] = outputs.get("rto_met")
                        dr_state["last_rehearsal_rto_target_seconds"] = outputs.get("rto_target_seconds")
                fields["dr_state"] = dr_state
                tx.update_instance(op.instance_id, **fields)
            elif op.type == OperationType.DEPROVISION:
                tx.update_instance(op.instance_id, state=InstanceState.GONE.value, updated_at=now)
                for b in tx.list_bindings(op.instance_id):
                    tx.update_binding(op.instance_id, b.id, state=BindingState.GONE.value, credentials=None,
                                      updated_at=now)
            elif op.type == OperationType.BIND:
                assert op.binding_id is not None
                # Likewise an unbind that arrived during the last step owns the binding's state.
                binding = tx.get_binding(op.instance_id, op.binding_id)
                if binding is None or binding.state != BindingState.UNBINDING:
                    tx.update_binding(op.instance_id, op.binding_id, state=BindingState.BOUND.value,
                                      updated_at=now)
            elif op.type == OperationType.UNBIND:
                assert op.binding_id is not None
                tx.update_binding(op.instance_id, op.binding_id, state=BindingState.GONE.value,
                                  credentials=None, updated_at=now)
            if self.listeners:
                self._tell(tx, "succeeded", op, before, tx.get_instance(op.instance_id), outputs, now)
        log.info("operation %s (%s %s) succeeded", op.id, op.type.value, op.instance_id)

    def _mark_step(self, tx: Tx, op_id: str, idx: int, state: str, error: str | None) -> None:
        rec = {r.idx: r for r in tx.steps(op_id)}.get(idx)
        if rec is not None:
            tx.upsert_step(StepRecord(**{**rec.__dict__, "state": state,
                                         "finished_at": rec.finished_at or self.clock(),
                                         "error": error[:2000] if error else rec.error}))

    def _fail(self, op: Operation, inst: Instance | None, binding: Binding | None, steps: tuple[Step, ...],
              outputs: dict[str, Any], owner: str, reason: str, *, failed_idx: int,
              failed_step: tuple[int, Step, str] | None = None) -> None:
        cleaned: list[str] = []
        left: list[str] = []
        if failed_step is not None:
            with self.store.write() as tx:
                if not tx.update_operation(op.id, expect=self._guard(owner), heartbeat_at=self.clock()):
                    raise LeaseLost(op.id)
                self._mark_step(tx, op.id, failed_step[0], "failed", failed_step[2])
        if op.type not in (OperationType.DEPROVISION, OperationType.UNBIND):
            # Mark the failure first, so a crash during compensation resumes it rather than the steps.
            with self.store.write() as tx:
                payload = {**op.payload, "failure": reason, "failed_idx": failed_idx}
                if not tx.update_operation(op.id, expect=self._guard(owner), payload=payload,
                                           description=f"failed, cleaning up: {reason}"):
                    raise LeaseLost(op.id)
            ctx = self._context(op, inst, binding, outputs)
            for idx in reversed(range(failed_idx + 1)):
                step = steps[idx]
                if not step.compensation:
                    continue
                try:
                    self.retry.call(lambda step=step: self._perform(step.compensation, ctx, op, inst))
                    cleaned.append(step.compensation)
                    error = None
                except (PermanentBackendError, TransientBackendError) as exc:
                    left.append(f"{step.compensation} ({exc.description})")
                    error = f"compensation {step.compensation} failed: {exc.description}"
                with self.store.write() as tx:
                    if not tx.update_operation(op.id, expect=self._guard(owner), heartbeat_at=self.clock()):
                        raise LeaseLost(op.id)
                    if error is not None:
                        self._mark_step(tx, op.id, idx, "failed", error)
                    elif idx != (failed_step[0] if failed_step else None):
                        self._mark_step(tx, op.id, idx, "compensated", None)
        description = f"failed: {reason}"
        if cleaned:
            description += f"; cleaned up: {', '.join(cleaned)}"
        if left:
            description += f"; could not clean up: {'; '.join(left)}"
        now = self.clock()
        with self.store.write() as tx:
            if not tx.update_operation(op.id, expect=self._guard(owner), state=OperationState.FAILED,
                                       description=description[:10000], error=reason[:10000],
                                       finished_at=now, lease_owner=None, lease_until=None):
                raise LeaseLost(op.id)
            # Re-read: a deprovision or unbind that arrived during the last step now owns the state.
            record_failure(tx, tx.get_operation(op.id) or op, now)
            self._tell(tx, "failed", op, reason, failed_step[1].action if failed_step else None, now)
        log.warning("operation %s (%s %s) %s", op.id, op.type.value, op.instance_id, description)
