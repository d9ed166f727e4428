"""The DR events of operations, written inside the transaction that records an operation's start, success or
failure (``broker.workflows.engine.Engine.listeners``), so an event exists exactly when its state change does.

``operation_failed`` is also called by the two paths that fail operations outside the engine: the deadline
reaper (``broker.workflows.worker``) and an operator's ``drbroker operations abandon``.

A rehearsal whose measured RTO misses the plan's target is ``rehearsal.failed`` (its operation succeeded, its
VMs are up until ``cleanup_test``): a rehearsal exists to prove the RTO, and one that missed it proved nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from broker.domain.models import Instance, Operation, OperationType
from broker.events.log import DrEvent, record
from broker.workflows.definitions import REHEARSAL_ACTIONS as REHEARSALS

MOVES = frozenset({"failover", "failback"})


def dr_action(op: Operation) -> dict[str, Any]:
    """The update's ``dr_action`` (``{}`` for anything else)."""
    if op.type != OperationType.UPDATE:
        return {}
    return dict(op.payload.get("dr_action") or {})


def _rehearsal_data(op: Operation, action: Mapping[str, Any]) -> dict[str, Any]:
    return {"operation_id": op.id, "action": action.get("type"), "scheduled": bool(
        action.get("scheduled") or op.payload.get("scheduled"))}


def _emit(conn: Connection, op: Operation, type_: str, summary: str, data: Mapping[str, Any], now: float) -> None:
    record(conn, DrEvent(type_, op.instance_id, summary, data, binding_id=op.binding_id, operation_id=op.id),
           at=now)


def operation_failed(conn: Connection, op: Operation, reason: str, failed_action: str | None, now: float) -> None:
    """The events of a failed operation: ``step.failed`` when a step failed, and the end of a rehearsal or a
    move. ``reason`` is already redacted (the engine redacts backend errors before recording them)."""
    action = dr_action(op)
    kind = action.get("type")
    if failed_action is not None:
        _emit(conn, op, "step.failed", f"{op.type.value}{f' ({kind})' if kind else ''}: {failed_action} failed",
              {"action": failed_action, "operation_type": op.type.value, "dr_action": kind, "reason": reason},
              now)
    if kind in REHEARSALS:
        _emit(conn, op, "rehearsal.failed", f"rehearsal failed: {reason}"[:300],
              {**_rehearsal_data(op, action), "rto_seconds": None, "rto_target_seconds": None, "rto_met": None,
               "reason": reason}, now)
    elif kind in MOVES:
        _emit(conn, op, f"{kind}.finished", f"{kind} failed: {reason}"[:300],
              {"mode": action.get("mode"), "outcome": "failed", "reason": reason}, now)


class EventListener:
    """The engine listener (``broker.jobs.LISTENERS``)."""

    def __init__(self, catalog: Any) -> None:
        self.catalog = catalog

    def started(self, tx: Any, op: Operation, now: float) -> None:
        action = dr_action(op)
        kind = action.get("type")
        if kind in REHEARSALS:
            how = "scheduled" if _rehearsal_data(op, action)["scheduled"] else "requested"
            _emit(tx.conn, op, "rehearsal.started", f"rehearsal ({kind}, {how}) started",
                  _rehearsal_data(op, action), now)
        elif kind in MOVES:
            mode = action.get("mode")
            _emit(tx.conn, op, f"{kind}.started", f"{kind}{f' ({mode})' if mode else ''} started",
                  {"mode": mode}, now)

    def succeeded(self, tx: Any, op: Operation, before: Instance | None, after: Instance | None,
                  outputs: Mapping[str, Any], now: float) -> None:
        conn = tx.conn
        if op.type == OperationType.PROVISION:
            _emit(conn, op, "instance.provisioned", "instance provisioned: replication is set up",
                  {"plan_id": op.plan_id}, now)
        elif op.type == OperationType.DEPROVISION:
            _emit(conn, op, "instance.deprovisioned", "instance deprovisioned: everything it made is removed",
                  {"plan_id": op.plan_id}, now)
        elif op.type in (OperationType.BIND, OperationType.UNBIND):
            purpose = self._purpose(op)
            issued = op.type == OperationType.BIND
            predecessor = op.payload.get("predecessor_binding_id") if issued else None
            if predecessor:  # a rotation's successor (broker/services/rotation.py): one event says both
                _emit(conn, op, "binding.rotated", f"binding {op.binding_id} rotated from {predecessor} ({purpose})",
                      {"purpose": purpose, "predecessor_binding_id": predecessor}, now)
                return
            _emit(conn, op, "binding.issued" if issued else "binding.revoked",
                  f"binding {op.binding_id} {'issued' if issued else 'revoked'} ({purpose})",
                  {"purpose": purpose}, now)
        else:
            self._action_done(conn, op, after, outputs, now)

    def failed(self, tx: Any, op: Operation, reason: str, failed_action: str | None, now: float) -> None:
        operation_failed(tx.conn, op, reason, failed_action, now)

    def _purpose(self, op: Operation) -> str:
        from broker.workflows.definitions import bind_purpose

        plan = self.catalog.plan(op.plan_id)
        if plan is None:
            return str(op.payload.get("purpose") or "unknown")
        return bind_purpose(plan, op.payload)

    def _action_done(self, conn: Connection, op: Operation, after: Instance | None, outputs: Mapping[str, Any],
                     now: float) -> None:
        action = dr_action(op)
        kind = action.get("type")
        if kind in REHEARSALS:
            dr = (after.dr_state if after else None) or {}
            rto = outputs.get("rto_seconds", dr.get("last_rehearsal_rto_seconds"))
            target = outputs.get("rto_target_seconds", dr.get("last_rehearsal_rto_target_seconds"))
            met = outputs.get("rto_met", dr.get("last_rehearsal_rto_met"))
            data = {**_rehearsal_data(op, action), "rto_seconds": rto, "rto_target_seconds": target,
                    "rto_met": met}
            if met is False:
                data["reason"] = f"the measured RTO {rto} s is over the target {target} s"
                _emit(conn, op, "rehearsal.failed", f"rehearsal missed its RTO: {rto} s (target {target} s)",
                      data, now)
            else:
                within = f" (target {target} s)" if target is not None else " (no target)"
                _emit(conn, op, "rehearsal.passed", f"rehearsal passed: RTO {rto} s{within}", data, now)
        elif kind in MOVES:
            mode = action.get("mode")
            _emit(conn, op, f"{kind}.finished", f"{kind}{f' ({mode})' if mode else ''} succeeded",
                  {"mode": mode, "outcome": "succeeded"}, now)


def make_listener(runtime: Any) -> EventListener:
    """``broker.jobs.LISTENERS`` factory: the DR event log is always on."""
    return EventListener(runtime.catalog)
