"""Is the instance protected right now? One answer, computed here, for fetch instance, the dashboard, metrics
and the client.

``assess`` is a pure function of the instance record (lifecycle state and ``dr_state``: active site, test
failover, last DR action), the replication status the backend reports, the clock and the plan. It says one
of four things, with the reason and what to do next:

- ``protected``: the active site is the primary, replication copies consistently and the achieved RPO is
  within the target;
- ``degraded``: replication runs but the RPO is over the target or cannot be checked, the secondary's copy is
  not consistent yet, or the state is one this module does not know (named in the reason);
- ``not protected``: the instance runs on the secondary (failed over, failback pending), replication is
  stopped, idling, disconnected or empty, or the instance is not ready;
- ``rehearsing``: a test failover is active while production still replicates.

The achieved RPO (now - last freeze time) is an RPO only while replication copies. Once it stops, the freeze
time is where the secondary's data stands, and a number that grows with the clock would read as a lag; so
then ``achieved_rpo_seconds`` is None, ``rpo_met`` False, and ``not_replicating_since`` says since when.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from broker.domain.catalog import Plan
from broker.domain.models import Instance, InstanceState
from broker.domain.protocols import ReplicationStatus


class ProtectionStatus(StrEnum):
    PROTECTED = "protected"
    DEGRADED = "degraded"
    NOT_PROTECTED = "not protected"
    REHEARSING = "rehearsing"


@dataclass(frozen=True)
class StateMeaning:
    """What a replication state means for protection."""

    copying: bool  # data flows from the active site to the other
    consistent: bool  # the receiving side holds a usable (consistent) copy
    reason: str
    next_step: str


_RESYNC = "run dr_action resync to restart replication from the primary"
_LINK = "restore the link between the sites (PowerVS Global Replication Services), then run dr_action resync"

# Every consistency-group state PowerVS GRS reports (the storage's remote-copy states; the simulated backend
# uses the same names). A state missing here is degraded, named in the reason.
REPLICATION_STATES: Mapping[str, StateMeaning] = {
    "consistent_copying": StateMeaning(True, True, "replication is consistent_copying", "none"),
    "consistent_synchronized": StateMeaning(True, True, "replication is consistent_synchronized", "none"),
    "inconsistent_copying": StateMeaning(
        True, False, "replication is inconsistent_copying: the secondary is being copied to and holds no "
        "consistent copy yet", "wait for consistent_copying (an initial copy or a resync); if it stays "
        "inconsistent, check the link between the sites"),
    "inconsistent_stopped": StateMeaning(
        False, False, "replication is stopped (inconsistent_stopped) and the secondary holds no consistent copy",
        _RESYNC),
    "consistent_stopped": StateMeaning(
        False, True, "replication is stopped (consistent_stopped): the secondary's copy is consistent but no "
        "longer updated", _RESYNC),
    "idling": StateMeaning(
        False, True, "replication is stopped with access (idling): both sites' volumes are writable and nothing "
        "is copied", _RESYNC),
    "idling_disconnected": StateMeaning(
        False, True, "replication is stopped (idling_disconnected) and the sites cannot reach each other", _LINK),
    "inconsistent_disconnected": StateMeaning(
        False, False, "the sites cannot reach each other (inconsistent_disconnected) and the secondary holds no "
        "consistent copy", "restore the link between the sites (PowerVS Global Replication Services)"),
    "consistent_disconnected": StateMeaning(
        False, True, "the sites cannot reach each other (consistent_disconnected): the secondary's copy is "
        "consistent but no longer updated", "restore the link between the sites; if the primary site is lost, "
        "run dr_action failover with mode unplanned"),
    "empty": StateMeaning(
        False, False, "the replication group holds no volumes (empty)",
        "update protected_volumes, or deprovision the instance"),
}

_NOT_READY = {
    InstanceState.PROVISIONING: ("the instance is being provisioned; protection starts once replication is "
                                 "consistent", "wait for the provision to finish"),
    InstanceState.FAILED: ("the instance failed to provision", "deprovision it and provision it again"),
    InstanceState.DEPROVISIONING: ("the instance is being deprovisioned", "none"),
    InstanceState.GONE: ("the instance is deprovisioned", "none"),
}


def when(ts: float, now: float) -> str:
    """A time as people read it on a status line: ``12:03 UTC`` today, ``2026-03-01 12:03 UTC`` otherwise."""
    at = dt.datetime.fromtimestamp(ts, dt.UTC)
    if at.date() == dt.datetime.fromtimestamp(now, dt.UTC).date():
        return at.strftime("%H:%M UTC")
    return at.strftime("%Y-%m-%d %H:%M UTC")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seconds_text(value: float) -> str:
    """``78 s``, ``7.2 min``, ``15 min``: seconds below two minutes, minutes above."""
    if value < 120:
        return f"{value:.0f} s"
    minutes = value / 60
    return f"{minutes:.0f} min" if minutes == int(minutes) else f"{minutes:.1f} min"


@dataclass(frozen=True)
class Protection:
    status: ProtectionStatus
    reason: str
    next_step: str
    rpo_met: bool | None  # None: no target, or nothing to compare (status unknown, instance not ready)
    achieved_rpo_seconds: float | None  # only while replication copies
    replicating: bool
    not_replicating_since: float | None  # when replication stopped (or the last freeze, if that is all we know)
    recovery_point: float | None  # the last freeze time: the secondary's data is as of then
    since: float | None  # when the current situation began, where known (failover, rehearsal)
    replication_state: str | None

    @property
    def headline(self) -> str:
        """One line for a banner: ``Not protected: <reason>; <next step>``."""
        text = f"{self.status.value.capitalize()}: {self.reason}"
        return text if self.next_step == "none" else f"{text}; {self.next_step}"

    def attributes(self) -> dict[str, Any]:
        """The fields fetch instance adds to ``metadata.attributes``."""
        out: dict[str, Any] = {"protection_status": self.status.value, "protection_reason": self.reason,
                               "next_step": self.next_step, "rpo_met": self.rpo_met}
        if self.achieved_rpo_seconds is not None:
            out["achieved_rpo_seconds"] = self.achieved_rpo_seconds
        if self.not_replicating_since is not None:
            out["not_replicating_since"] = iso(self.not_replicating_since)
        return out


def _rpo_target(inst: Instance) -> float | None:
    minutes = inst.parameters.get("rpo_target_minutes")
    return float(minutes) * 60 if minutes else None


def _moves_vms(plan: Plan | None) -> bool:
    return bool(plan and plan.features.get("orchestrator") == "ksys")


def _failed_over(inst: Instance, status: ReplicationStatus | None, meaning: StateMeaning | None, now: float,
                 plan: Plan | None) -> Protection:
    dr = inst.dr_state or {}
    action = dr.get("last_action") or {}
    since = action.get("finished_at") if action.get("type") == "failover" else None
    reason = "running on the secondary site"
    if since is not None:
        reason += f" since {when(since, now)}"
        if action.get("mode"):
            reason += f" ({action['mode']} failover)"
    state = status.state if status else None
    copying = bool(meaning and meaning.copying)
    if status is None:
        reason += "; the replication status could not be read"
    elif copying and status.primary_role == "aux":
        reason += f"; replication is copying from the secondary back to the primary ({state})"
    else:
        reason += f"; replication is {state}"
    step = "run dr_action failback when the primary site is back"
    if not _moves_vms(plan):
        step = "start your VMs at the secondary (this plan moves only the replicas); " + step
    freeze = status.freeze_time if status else None
    stopped = None if copying else (since if since is not None else freeze)
    return Protection(ProtectionStatus.NOT_PROTECTED, reason, step, rpo_met=False, achieved_rpo_seconds=None,
                      replicating=copying, not_replicating_since=stopped, recovery_point=freeze, since=since,
                      replication_state=state)


def _protected_next_step(inst: Instance, now: float) -> str:
    dr = inst.dr_state or {}
    last = dr.get("last_rehearsal_at")
    if not last:
        return "no rehearsal yet: run dr_action test_failover to measure the RTO"
    if dr.get("last_rehearsal_rto_met") is False:
        return (f"the last rehearsal ({when(last, now)}) missed its RTO target: review the recovery order, then "
                "rehearse again (dr_action test_failover)")
    return "none"


def assess(inst: Instance, status: ReplicationStatus | None, now: float, plan: Plan | None) -> Protection:
    """The instance's protection status now (see the module docstring)."""
    if inst.state != InstanceState.READY:
        reason, step = _NOT_READY[inst.state]
        return Protection(ProtectionStatus.NOT_PROTECTED, reason, step, rpo_met=None, achieved_rpo_seconds=None,
                          replicating=False, not_replicating_since=None, recovery_point=None, since=None,
                          replication_state=status.state if status else None)
    dr = inst.dr_state or {}
    meaning = REPLICATION_STATES.get(status.state) if status else None
    if dr.get("active_site", "primary") != "primary":
        return _failed_over(inst, status, meaning, now, plan)
    target = _rpo_target(inst)
    rehearsal = bool(dr.get("test_active"))
    if status is None:
        return Protection(ProtectionStatus.DEGRADED, "the replication status could not be read from the backend",
                          "check the broker's connection to PowerVS; the status is read again on the next request",
                          rpo_met=None, achieved_rpo_seconds=None, replicating=False, not_replicating_since=None,
                          recovery_point=None, since=None, replication_state=None)
    freeze = status.freeze_time
    if meaning is None:
        return Protection(ProtectionStatus.DEGRADED, f"replication reports the state {status.state!r}, which the "
                          "broker does not know", "check the replication group in PowerVS", rpo_met=None,
                          achieved_rpo_seconds=None, replicating=False, not_replicating_since=None,
                          recovery_point=freeze, since=None, replication_state=status.state)
    if not meaning.copying:
        reason = meaning.reason
        if freeze is not None:
            reason += f"; the secondary's data is as of {when(freeze, now)}"
        if rehearsal:
            reason += "; a test failover is also active"
        return Protection(ProtectionStatus.NOT_PROTECTED, reason, meaning.next_step, rpo_met=False,
                          achieved_rpo_seconds=None, replicating=False, not_replicating_since=freeze,
                          recovery_point=freeze, since=None, replication_state=status.state)
    achieved: float | None = None
    if freeze is not None:
        achieved = max(0, round(now - freeze))
    elif status.state == "consistent_synchronized":
        achieved = 0  # synchronous: the secondary is the primary's image
    status_out, reason, step = ProtectionStatus.PROTECTED, meaning.reason, meaning.next_step
    rpo_met: bool | None = None
    if not meaning.consistent:
        status_out, rpo_met = ProtectionStatus.DEGRADED, False
    elif achieved is None:
        status_out = ProtectionStatus.DEGRADED
        reason += " but the storage reports no freeze time, so the achieved RPO is unknown"
        step = "check the replication group's remote-copy relationships in PowerVS"
    elif target is not None:
        rpo_met = achieved <= target
        if rpo_met:
            reason += f"; achieved RPO {seconds_text(achieved)} within the target {seconds_text(target)}"
        else:
            status_out = ProtectionStatus.DEGRADED
            reason += (f"; achieved RPO {seconds_text(achieved)} is over the target {seconds_text(target)}")
            step = (f"check the link between the sites and the write rate on the protected volumes (cycle period "
                    f"{status.cycle_period_seconds} s)")
    else:
        reason += f"; achieved RPO {seconds_text(achieved)} (no target)"
    if status_out is ProtectionStatus.PROTECTED and step == "none":
        step = _protected_next_step(inst, now)
    since = None
    if rehearsal:
        since = dr.get("last_rehearsal_at")
        began = f" since {when(since, now)}" if since else ""
        extra = (f"; {reason}" if status_out is ProtectionStatus.DEGRADED
                 else f"; production still replicates ({reason})")
        reason = f"a test failover (rehearsal) is active{began}{extra}"
        step = "check the rehearsal VMs at the secondary, then run dr_action cleanup_test"
        status_out = ProtectionStatus.REHEARSING
    return Protection(status_out, reason, step, rpo_met=rpo_met, achieved_rpo_seconds=achieved, replicating=True,
                      not_replicating_since=None, recovery_point=freeze, since=since,
                      replication_state=status.state)
