"""An instance's DR history in a period: rehearsals, moves and failures, from its operations and the DR event log.

Both sources are read because each knows something the other does not: an operation row exists for every DR
action ever accepted (also those from before the event log), while the events say whether a rehearsal was
started by its schedule, carry the measured RTO, and record rehearsals that were skipped (no operation at all).
They are joined on the operation id; an event's facts win over what the operation row implies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from broker.domain.models import Operation, OperationState, OperationType, StepRecord
from broker.reports.model import Failure, Move, Rehearsal
from broker.workflows.definitions import REHEARSAL_ACTIONS

REHEARSAL_EVENTS = ("rehearsal.started", "rehearsal.passed", "rehearsal.failed", "rehearsal.skipped")
MOVE_EVENTS = ("failover.started", "failover.finished", "failback.started", "failback.finished")
FAILURE_EVENTS = ("step.failed",)
EVENT_TYPES = REHEARSAL_EVENTS + MOVE_EVENTS + FAILURE_EVENTS
_MOVES = ("failover", "failback")


def action_of(op: Operation) -> str | None:
    action = op.payload.get("dr_action") if op.type == OperationType.UPDATE else None
    return str(action["type"]) if action else None


def operation_name(op: Operation) -> str:
    return action_of(op) or op.type.value


def in_period(op: Operation, since: float, until: float) -> bool:
    """Started (accepted) before the period ends and not finished before it begins."""
    return op.created_at < until and (op.finished_at is None or op.finished_at >= since)


def _outcome(op: Operation) -> str:
    return {OperationState.SUCCEEDED: "succeeded", OperationState.FAILED: "failed"}.get(op.state, "running")


def _step_rto(steps: Sequence[StepRecord]) -> dict[str, Any]:
    for step in steps:
        if step.name == "verify_rehearsal" and isinstance(step.outputs.get("rto_seconds"), int | float):
            return step.outputs
    return {}


def _failed_step(steps: Sequence[StepRecord]) -> str | None:
    return next((s.name for s in steps if s.state == "failed"), None)


def _by_operation(events: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for ev in events:
        if ev.get("operation_id"):
            out.setdefault(ev["operation_id"], []).append(ev)
    return out


def rehearsals(ops: Sequence[Operation], steps: Mapping[str, Sequence[StepRecord]],
               events: Sequence[Mapping[str, Any]], rto_target: float | None) -> list[Rehearsal]:
    """Every rehearsal of the period, oldest first: one line per test_failover operation, and one per
    rehearsal event without an operation (a skipped scheduled rehearsal)."""
    evs = [e for e in events if e["type"] in REHEARSAL_EVENTS]
    by_op = _by_operation(evs)
    out: list[Rehearsal] = []
    for op in ops:
        if action_of(op) not in REHEARSAL_ACTIONS:
            continue
        action = op.payload.get("dr_action") or {}
        data: dict[str, Any] = dict(_step_rto(steps.get(op.id, ())))
        scheduled = bool(action.get("scheduled") or op.payload.get("scheduled"))
        outcome = {"succeeded": "passed", "failed": "failed"}.get(_outcome(op), "running")
        detail = op.description or ""
        for ev in by_op.get(op.id, []):
            data.update({k: v for k, v in ev["data"].items() if v is not None})
            scheduled = scheduled or bool(ev["data"].get("scheduled"))
            if ev["type"] in ("rehearsal.passed", "rehearsal.failed"):
                # The event log's verdict wins: a rehearsal whose operation succeeded but whose RTO missed the
                # target is a failed rehearsal (broker.events.listener).
                outcome = ev["type"].split(".", 1)[1]
                detail = str(ev["data"].get("reason") or detail)
        rto = data.get("rto_seconds")
        target = data.get("rto_target_seconds", rto_target if rto is not None else None)
        met = data.get("rto_met")
        if met is None and rto is not None and target is not None:
            met = rto <= target
        out.append(Rehearsal(at=op.started_at or op.created_at, operation_id=op.id, scheduled=scheduled,
                             outcome=outcome, rto_seconds=rto, rto_target_seconds=target, rto_met=met,
                             detail=detail))
    for ev in evs:
        # Rehearsal events of operations outside the period (or of none): a skip is a line of its own.
        if ev["type"] == "rehearsal.skipped":
            out.append(Rehearsal(at=ev["at"], operation_id=ev.get("operation_id"),
                                 scheduled=bool(ev["data"].get("scheduled", True)), outcome="skipped",
                                 rto_seconds=None, rto_target_seconds=None, rto_met=None, detail=ev["summary"]))
    return sorted(out, key=lambda r: r.at)


def moves(ops: Sequence[Operation], events: Sequence[Mapping[str, Any]]) -> list[Move]:
    """Failovers and failbacks of the period, oldest first, with outcome and duration."""
    by_op = _by_operation(e for e in events if e["type"] in MOVE_EVENTS)
    out = []
    for op in ops:
        kind = action_of(op)
        if kind not in _MOVES:
            continue
        started = op.started_at or op.created_at
        finished, outcome = op.finished_at, _outcome(op)
        for ev in by_op.get(op.id, []):
            if ev["type"].endswith(".started"):
                started = ev["at"]
            elif ev["data"].get("outcome"):
                finished, outcome = ev["at"], str(ev["data"]["outcome"])
        mode = (op.payload.get("dr_action") or {}).get("mode")
        out.append(Move(type=str(kind), mode=mode, started_at=started, finished_at=finished,
                        duration_seconds=round(finished - started, 3) if finished is not None else None,
                        outcome=outcome, operation_id=op.id))
    return sorted(out, key=lambda m: m.started_at)


def failures(ops: Sequence[Operation], steps: Mapping[str, Sequence[StepRecord]],
             events: Sequence[Mapping[str, Any]], since: float, until: float) -> list[Failure]:
    """Failed operations that ended in the period (with the step that failed), and ``step.failed`` events of
    operations that did not fail in the end (a step failed permanently, yet the operation was retried)."""
    step_events = [e for e in events if e["type"] == "step.failed"]
    by_op = _by_operation(step_events)
    out = []
    failed_ids = set()
    for op in ops:
        if op.state != OperationState.FAILED or op.finished_at is None or not since <= op.finished_at < until:
            continue
        failed_ids.add(op.id)
        ev = next(iter(by_op.get(op.id, [])), None)
        step = (ev["data"].get("action") if ev else None) or _failed_step(steps.get(op.id, ()))
        out.append(Failure(at=op.finished_at, operation_id=op.id, operation=operation_name(op), step=step,
                           reason=op.description or op.error or ""))
    names = {op.id: operation_name(op) for op in ops}
    for ev in step_events:
        if ev.get("operation_id") in failed_ids:
            continue
        out.append(Failure(at=ev["at"], operation_id=ev.get("operation_id"),
                           operation=names.get(ev.get("operation_id") or "", "operation"),
                           step=ev["data"].get("action"), reason=str(ev["data"].get("reason") or ev["summary"])))
    return sorted(out, key=lambda f: f.at)
