"""What the dashboard page shows, gathered from the store, the backend and the protection status.

The page only formats: the protection status (``broker.services.protection``) is the same one fetch instance
returns; this module adds what only a person looking at the page needs: each operation's duration and, for
the moves (failover, failback, rehearsal), its measured RTO against the plan's target; the orchestrator's
health as the broker last saw it; the protected volumes; both sites.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from broker.domain.catalog import Plan
from broker.domain.models import Operation, OperationState, OperationType, StepRecord
from broker.domain.sites import parse_workspace_crn

# The backend actions that talk to the DR orchestrator (KSYS / DR Automation): their outcome is what the broker
# knows of its health.
ORCHESTRATOR_ACTIONS = frozenset({
    "deploy_orchestrator", "add_sites", "manage_vms", "discover", "sync_standby_orchestrator",
    "update_orchestrator_api_key", "start_primary_vms", "stop_primary_vms", "start_secondary_vms",
    "stop_secondary_vms", "start_rehearsal", "verify_rehearsal", "cleanup_rehearsal",
})
# The moves whose duration is a recovery time; the step after which the workload runs again.
_MOVES = {"failover": "start_secondary_vms", "failback": "start_primary_vms", "test_failover": "verify_rehearsal",
          "rehearsal": "verify_rehearsal"}


def stamp(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock_text(ts: float, now: float) -> str:
    """An operation's time in a table: ``12:03:15`` today, ``03-01 12:03`` on another day (UTC)."""
    at = dt.datetime.fromtimestamp(ts, dt.UTC)
    same_day = at.date() == dt.datetime.fromtimestamp(now, dt.UTC).date()
    return at.strftime("%H:%M:%S" if same_day else "%m-%d %H:%M")


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class OperationRow:
    id: str
    at: float
    kind: str
    state: str
    step_index: int
    step_total: int
    took_seconds: float | None
    running: bool
    rto_seconds: float | None
    rto_target_seconds: float | None
    description: str

    @property
    def rto_met(self) -> bool | None:
        if self.rto_seconds is None or self.rto_target_seconds is None:
            return None
        return self.rto_seconds <= self.rto_target_seconds


def _kind(op: Operation) -> str:
    action = op.payload.get("dr_action")
    if action:
        mode = action.get("mode")
        return f"{action['type']} ({mode})" if mode and action["type"] == "failover" else str(action["type"])
    return op.type.value


def _rto(op: Operation, steps: Sequence[StepRecord]) -> float | None:
    """A finished move's recovery time: from the operation's start until its workload ran again (the VMs
    started, the rehearsal verified); the backend's own measure of a rehearsal when it made one."""
    action = (op.payload.get("dr_action") or {}).get("type")
    if action not in _MOVES or op.state != OperationState.SUCCEEDED:
        return None
    began = op.started_at or op.created_at
    for step in steps:
        if step.name == "verify_rehearsal" and isinstance(step.outputs.get("rto_seconds"), int | float):
            return float(step.outputs["rto_seconds"])
    ready = next((s.finished_at for s in steps if s.name == _MOVES[action] and s.finished_at), None)
    end = ready or op.finished_at
    return max(0.0, end - began) if end else None


def operation_rows(ops: Sequence[Operation], steps: dict[str, list[StepRecord]], plan: Plan | None,
                   now: float) -> list[OperationRow]:
    minutes = plan.features.get("rto_target_minutes") if plan else None
    target = float(minutes) * 60 if minutes else None
    rows = []
    for op in ops:
        began = op.started_at or op.created_at
        running = not op.state.finished
        took = (now if running else (op.finished_at or now)) - began
        rto = _rto(op, steps.get(op.id, []))
        rows.append(OperationRow(id=op.id, at=op.created_at, kind=_kind(op), state=op.state.value,
                                 step_index=op.step_index, step_total=op.step_total, took_seconds=max(0.0, took),
                                 running=running, rto_seconds=rto, rto_target_seconds=target if rto is not None
                                 else None, description=op.description or ""))
    return rows


def last_failed(rows: Sequence[OperationRow]) -> OperationRow | None:
    """The newest instance operation (not a binding's), when it failed: the banner names it."""
    newest = next((r for r in rows if r.kind not in ("bind", "unbind")), None)
    return newest if newest is not None and newest.state == OperationState.FAILED.value else None


def moves(ops: Sequence[Operation]) -> list[Operation]:
    """The operations whose steps the page reads: DR actions (their RTO) and those that touched the
    orchestrator (its health)."""
    return [o for o in ops if o.type in (OperationType.PROVISION, OperationType.UPDATE)]


@dataclass(frozen=True)
class OrchestratorHealth:
    kind: str  # "KSYS (DR Automation)" or "none"
    health: str  # "healthy", "failing", "unknown", "none"
    detail: str
    orchestrator_id: str | None
    standby: str


def orchestrator_health(plan: Plan | None, ops: Sequence[Operation], steps: dict[str, list[StepRecord]],
                        now: float) -> OrchestratorHealth:
    """The orchestrator as the broker last saw it: the newest orchestrator step of the instance's operations
    (done: healthy; failed: failing, with the error); the backends report no separate health probe."""
    features = plan.features if plan else {}
    if features.get("orchestrator") != "ksys":
        return OrchestratorHealth("none", "none", "this plan runs no DR orchestrator: you start the standby VMs "
                                  "at the secondary after a failover", None, "none")
    standby = "standby in the primary workspace" if features.get("standby") else "no standby on this plan"
    orch_id: str | None = None
    last: tuple[StepRecord, Operation] | None = None
    for op in ops:  # newest first
        for step in steps.get(op.id, []):
            if step.name == "deploy_orchestrator" and step.state == "done" and orch_id is None:
                orch_id = step.outputs.get("orchestrator_id")
            if step.name in ORCHESTRATOR_ACTIONS and step.state in ("done", "failed") and last is None:
                last = (step, op)
    if last is None:
        return OrchestratorHealth("KSYS (DR Automation)", "unknown", "no orchestrator step in the recent "
                                  "operations", orch_id, standby)
    step, op = last
    at = step.finished_at or op.created_at
    if step.state == "failed":
        why = (step.error or op.error or "no reason recorded").splitlines()[0][:300]
        return OrchestratorHealth("KSYS (DR Automation)", "failing", f"{step.name} failed {_ago(at, now)} "
                                  f"({_kind(op)}): {why}", orch_id, standby)
    return OrchestratorHealth("KSYS (DR Automation)", "healthy", f"last answered {_ago(at, now)}: {step.name} "
                              f"({_kind(op)})", orch_id, standby)


def _ago(ts: float, now: float) -> str:
    return f"{duration_text(max(0.0, now - ts))} ago"


@dataclass(frozen=True)
class Site:
    role: str
    crn: str
    zone: str
    active: bool


def sites(parameters: dict[str, Any], active_site: str) -> list[Site]:
    out = []
    for role in ("primary", "secondary"):
        crn = str(parameters.get(f"{role}_workspace_crn", ""))
        ref = parse_workspace_crn(crn)
        out.append(Site(role, crn, ref.zone if ref else "-", active_site == role))
    return out
