"""The recovery rules both backends keep: which VMs a DR action may touch, in which order, and the RTO check.

- Only plans with a DR orchestrator (``orchestrator: ksys``) move VMs, and only the VMs the instance
  manages: ``parameters.managed_vms``, or else those DR Automation was asked to manage at provisioning (the
  ``manage_vms`` step's record). Another VM in the workspace is never touched.
- ``managed_vms[].priority`` is the recovery order: VMs stop Low, Medium, High and start High, Medium, Low,
  a group only once the previous one has reached its state. DR Automation's API (ibm_dra_python_sdk 0.1.0
  ``create_manage_dr``) takes no priority, so the broker applies the order itself.
- A rehearsal's RTO runs from the operation's start until every rehearsal VM is ACTIVE, and is compared
  with the plan's ``rto_target_minutes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

PRIORITIES = ("High", "Medium", "Low")  # start order; stop order is the reverse
DEFAULT_PRIORITY = "Medium"

T = TypeVar("T")


def moves_vms(features: Mapping[str, Any]) -> bool:
    return features.get("orchestrator") == "ksys"


def listed_vms(parameters: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(pvm_instance_id, priority) of ``parameters.managed_vms``, in the order given."""
    return [(vm["pvm_instance_id"], vm.get("priority") or DEFAULT_PRIORITY)
            for vm in parameters.get("managed_vms") or []]


def priority_groups(items: Sequence[T], priority_of: Any, verb: str) -> list[tuple[str, list[T]]]:
    """``items`` grouped by priority in the order ``verb`` ("start" or "stop") acts on them; empty groups
    are left out and each group keeps the items' order."""
    order = PRIORITIES if verb == "start" else PRIORITIES[::-1]
    groups = [(p, [i for i in items if (priority_of(i) or DEFAULT_PRIORITY) == p]) for p in order]
    return [(p, g) for p, g in groups if g]


def rto_outcome(started_at: float | None, all_active_at: float, features: Mapping[str, Any]) -> dict[str, Any]:
    """What a rehearsal records: its RTO, the plan's target and whether it was met (None without a target)."""
    rto = round(max(0.0, all_active_at - (started_at if started_at is not None else all_active_at)), 3)
    minutes = features.get("rto_target_minutes")
    target = round(minutes * 60, 3) if minutes else None
    return {"rto_seconds": rto, "rto_target_seconds": target,
            "rto_met": (rto <= target) if target is not None else None, "all_active_at": all_active_at}
