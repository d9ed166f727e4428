"""Per-instance DR gauges of ``/metrics``, read at scrape time from the database and the backend.

The protection status, ``rpo_met``, the achieved RPO and "not replicating since" come from
``broker.services.protection.assess``: the one computation behind fetch instance and the dashboard too. So the
achieved RPO is reported only while replication copies; once it stops, the age of the last freeze time would
grow with the clock and read as a lag, and the timestamp gauge ``..._not_replicating_since_timestamp_seconds``
says since when instead.

Labels are bounded: every series carries ``instance_id`` and ``plan`` (the plan's name), and the state sets one
more whose values are a fixed list (``INSTANCE_STATES``, ``PROTECTION_STATUSES``, ``REPLICATION_STATES``,
``SITES``). Deprovisioned instances report nothing, so the series grow with the live instances only:
``SERIES_PER_INSTANCE`` at most each (docs/operations.md, Metrics).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from broker.api.metrics_rehearsals import SERIES_PER_INSTANCE as REHEARSAL_SERIES
from broker.domain.catalog import Plan
from broker.domain.models import Instance, InstanceState
from broker.rehearsals.spec import LEGACY, effective
from broker.services.protection import REPLICATION_STATES as KNOWN_REPLICATION
from broker.services.protection import Protection, ProtectionStatus, assess

DAY = 86400.0
# How old the last rehearsal may be under each dr_test_schedule: the longest month and quarter, so that a
# rehearsal on the same day of each month (or quarter) is never reported late. The mapping itself lives with
# the rehearsal parameter (broker.rehearsals.spec.LEGACY); an instance's effective max age is max_age_seconds.
REHEARSAL_INTERVALS: Mapping[str, float] = {name: days * DAY for name, (_, days) in LEGACY.items()}


def max_age_seconds(parameters: Mapping[str, Any]) -> float | None:
    """How old the last passed rehearsal may be: the rehearsal parameter's max age (``max_age_days``, else the
    longest gap between its runs), or dr_test_schedule's; None without either."""
    spec = effective(parameters)
    return spec.effective_max_age() if spec is not None else None

INSTANCE_STATES = tuple(s.value for s in InstanceState if s is not InstanceState.GONE)
PROTECTION_STATUSES = tuple(s.value for s in ProtectionStatus)
# "other": a state the broker does not know (named in protection_reason); "unknown": no status was read (no
# replication group yet, or the backend did not answer).
REPLICATION_STATES = (*KNOWN_REPLICATION, "other", "unknown")
SITES = ("primary", "secondary")

_LABELS = ["instance_id", "plan"]
_SCALARS: tuple[tuple[str, str], ...] = (
    ("failed_over", "1 while the instance runs on the secondary site (failed over, failback pending)"),
    ("test_failover_active", "1 while a test failover (rehearsal) is active"),
    ("replicating", "1 while replication copies data from the active site to the other"),
    ("rpo_met", "1 when the achieved RPO is within the target, 0 when not or not replicating (absent: no target, "
                "or nothing to compare)"),
    ("achieved_rpo_seconds", "now - last consistent freeze time, only while replication copies (absent "
                             "otherwise: see not_replicating_since_timestamp_seconds)"),
    ("not_replicating_since_timestamp_seconds", "When replication stopped (or the last freeze time, if that is "
                                                "all the storage says); absent while it copies"),
    ("rpo_target_seconds", "The instance's RPO target (parameter rpo_target_minutes)"),
    ("last_rehearsal_age_seconds", "Seconds since the last successful test failover (absent: never)"),
    ("last_rehearsal_rto_seconds", "The RTO the last rehearsal measured"),
    ("rto_target_seconds", "The plan's RTO target, which every rehearsal is held to"),
    ("rehearsal_interval_seconds", "How old the last rehearsal may be under the instance's rehearsal schedule "
                                   "(rehearsal.max_age_days, or dr_test_schedule's; absent: no schedule)"),
    ("age_seconds", "Seconds since the instance was provisioned"),
)
_SETS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("state", "state", INSTANCE_STATES, "The instance's lifecycle state: 1 for the current one"),
    ("protection_status", "status", PROTECTION_STATUSES,
     "Protection status (as fetch instance's protection_status): 1 for the current one"),
    ("replication_state", "state", REPLICATION_STATES,
     "The replication group's state as the storage reports it: 1 for the current one"),
    ("active_site", "site", SITES, "Which site runs the workload: 1 for the active one"),
)
# ... plus the rehearsal schedule's own (broker.api.metrics_rehearsals)
SERIES_PER_INSTANCE = len(_SCALARS) + sum(len(values) for _, _, values, _ in _SETS) + REHEARSAL_SERIES


def _facts(inst: Instance, plan: Plan | None, protection: Protection, now: float) -> dict[str, float | None]:
    """The scalar gauges of one instance; None leaves the series out."""
    dr = inst.dr_state or {}
    minutes = inst.parameters.get("rpo_target_minutes")
    rto_minutes = plan.features.get("rto_target_minutes") if plan else None
    last = dr.get("last_rehearsal_at")
    rpo_met = protection.rpo_met
    return {
        "failed_over": float(dr.get("active_site", "primary") != "primary"),
        "test_failover_active": float(bool(dr.get("test_active"))),
        "replicating": float(protection.replicating),
        "rpo_met": None if rpo_met is None else float(rpo_met),
        "achieved_rpo_seconds": protection.achieved_rpo_seconds,
        "not_replicating_since_timestamp_seconds": protection.not_replicating_since,
        "rpo_target_seconds": float(minutes) * 60 if minutes else None,
        "last_rehearsal_age_seconds": max(0.0, now - last) if last else None,
        "last_rehearsal_rto_seconds": dr.get("last_rehearsal_rto_seconds"),
        "rto_target_seconds": float(rto_minutes) * 60 if rto_minutes else None,
        "rehearsal_interval_seconds": max_age_seconds(inst.parameters),
        "age_seconds": max(0.0, now - inst.created_at),
    }


def _current(inst: Instance, protection: Protection) -> dict[str, str]:
    """The value each state set marks 1."""
    replication = protection.replication_state
    if replication is None:
        replication = "unknown"
    elif replication not in KNOWN_REPLICATION:
        replication = "other"
    site = (inst.dr_state or {}).get("active_site", "primary")
    return {"state": inst.state.value, "protection_status": protection.status.value,
            "replication_state": replication, "active_site": site if site in SITES else "secondary"}


def instance_families(runtime: Any) -> Iterator[GaugeMetricFamily]:
    """Every per-instance family, each instance's protection assessed once from one bulk status read."""
    with runtime.store.read() as tx:
        live = tx.list_instances()
    statuses = runtime.orchestrator.replication_statuses([i.id for i in live]) if live else {}
    now = runtime.service.clock()
    scalars = {name: GaugeMetricFamily(f"drbroker_instance_{name}", text, labels=_LABELS) for name, text in _SCALARS}
    sets = {name: GaugeMetricFamily(f"drbroker_instance_{name}", text, labels=[*_LABELS, label])
            for name, label, _, text in _SETS}
    for inst in live:
        plan = runtime.catalog.plan(inst.plan_id)
        labels = [inst.id, plan.name if plan else inst.plan_id]
        protection = assess(inst, statuses.get(inst.id), now, plan)
        for name, value in _facts(inst, plan, protection, now).items():
            if value is not None:
                scalars[name].add_metric(labels, float(value))
        current = _current(inst, protection)
        for name, _, values, _ in _SETS:
            for value in values:
                sets[name].add_metric([*labels, value], 1.0 if value == current[name] else 0.0)
    yield from sets.values()
    yield from scalars.values()
