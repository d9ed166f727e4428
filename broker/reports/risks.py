"""The open risks of an instance at the time of the report: what someone should act on now.

Each is a code (stable, for scripts), a severity and a sentence. They come from the instance record, the
protection status the dashboard shows (``broker.services.protection.assess``) and the rehearsal schedule:
the instance's row in ``rehearsal_schedules`` when the scheduler manages it (its ``max_age_seconds``, else a
due rehearsal that has not started within an hour), otherwise its ``dr_test_schedule`` parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.domain.models import Instance, InstanceState
from broker.reports.model import Risk
from broker.services.protection import Protection, ProtectionStatus, seconds_text, when

DAY = 86400.0
# dr_test_schedule: how old the last rehearsal may be before the next one is overdue.
SCHEDULE_MAX_AGE = {"weekly": 7 * DAY, "monthly": 31 * DAY, "quarterly": 92 * DAY}
# A due scheduled rehearsal that has not started this long after it was due is overdue.
DUE_GRACE_SECONDS = 3600.0


def rehearsal_max_age(inst: Instance, schedule: Mapping[str, Any] | None) -> float | None:
    if schedule and schedule.get("enabled") and schedule.get("max_age_seconds"):
        return float(schedule["max_age_seconds"])
    return SCHEDULE_MAX_AGE.get(str(inst.parameters.get("dr_test_schedule") or ""))


def _rehearsal_risks(inst: Instance, schedule: Mapping[str, Any] | None, now: float) -> list[Risk]:
    dr = inst.dr_state or {}
    last = dr.get("last_rehearsal_at")
    out = []
    if not last:
        out.append(Risk("never_rehearsed", "warning",
                        "never rehearsed: run dr_action test_failover to measure the RTO"))
    max_age = rehearsal_max_age(inst, schedule)
    if last and max_age is not None and now - last > max_age:
        out.append(Risk("rehearsal_overdue", "warning",
                        f"rehearsal overdue: the last one was {when(last, now)}, the schedule asks for one every "
                        f"{seconds_text(max_age)}", since=last + max_age))
    elif schedule and schedule.get("enabled") and schedule.get("next_due_at") is not None \
            and now - float(schedule["next_due_at"]) > DUE_GRACE_SECONDS:
        due = float(schedule["next_due_at"])
        out.append(Risk("rehearsal_overdue", "warning",
                        f"rehearsal overdue: the scheduled one due {when(due, now)} has not started", since=due))
    if last and dr.get("last_rehearsal_rto_met") is False:
        out.append(Risk("rto_missed", "warning",
                        f"the last rehearsal ({when(last, now)}) missed its RTO target", since=last))
    return out


def open_risks(inst: Instance, protection: Protection, schedule: Mapping[str, Any] | None,
               now: float) -> list[Risk]:
    """The instance's open risks now; none for a deprovisioned one."""
    if inst.state == InstanceState.GONE:
        return []
    if inst.state == InstanceState.FAILED:
        return [Risk("provisioning_failed", "critical", protection.reason + ": " + protection.next_step)]
    if inst.state != InstanceState.READY:
        return [Risk("not_protected", "warning", protection.reason)]
    dr = inst.dr_state or {}
    out: list[Risk] = []
    if dr.get("active_site", "primary") != "primary":
        out.append(Risk("failed_over", "critical", "failed over and not failed back: " + protection.reason,
                        since=protection.since))
    elif protection.status is ProtectionStatus.NOT_PROTECTED:
        out.append(Risk("not_protected", "critical", f"not protected: {protection.reason}",
                        since=protection.not_replicating_since))
    elif protection.rpo_met is False:
        out.append(Risk("rpo_breached", "warning", f"RPO currently breached: {protection.reason}"))
    elif protection.status is ProtectionStatus.DEGRADED:
        out.append(Risk("degraded", "warning", f"degraded: {protection.reason}"))
    if dr.get("test_active"):
        out.append(Risk("test_failover_active", "warning",
                        "a test failover is still active: run dr_action cleanup_test when the rehearsal is checked",
                        since=dr.get("last_rehearsal_at")))
    if not inst.enabled:
        out.append(Risk("disabled", "warning", "disabled by the platform: DR actions are refused"))
    return out + _rehearsal_risks(inst, schedule, now)
