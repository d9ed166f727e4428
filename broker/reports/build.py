"""Compute a DR report (``broker.reports.model``) from the broker's database: one instance, one account or all.

Read-only: one read transaction for the records, then the backend's replication status per instance for the
protection status now (the same ``BrokerService.dr_view`` fetch instance and the dashboard use).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from broker.domain.catalog import Catalog
from broker.domain.errors import NotFound
from broker.domain.models import Instance, InstanceState, Operation, OperationState
from broker.events.log import list_events
from broker.reports import history
from broker.reports.model import InstanceReport, Period, Report, Totals
from broker.reports.risks import open_risks
from broker.reports.rpo import Sample, compliance, expected_count
from broker.services.protection import Protection, assess
from broker.store.repository import Store
from broker.store.tables import rehearsal_schedules, rpo_samples

# An instance with more operations than this in one report is reported on its newest ones.
MAX_OPERATIONS = 10000


@dataclass(frozen=True)
class Scope:
    kind: str  # instance | account | all
    value: str | None = None


@dataclass(frozen=True)
class Sources:
    """What a report reads; the composition root (CLI, dashboard) fills it from the runtime."""

    store: Store
    catalog: Catalog
    protection: Callable[[Instance], Protection]  # the protection status now (BrokerService.dr_view)
    sample_interval_seconds: float
    sample_retention_seconds: float


def _selected(all_instances: Sequence[Instance], scope: Scope, since: float, until: float) -> list[Instance]:
    if scope.kind == "instance":
        found = [i for i in all_instances if i.id == scope.value]
        if not found:
            raise NotFound(f"instance {scope.value} does not exist")
        return found
    picked = [i for i in all_instances if scope.kind == "all" or i.account_id == scope.value]
    # Instances that existed during the period: created before its end, not removed before its start.
    return [i for i in picked if i.created_at < until and (i.state != InstanceState.GONE or i.updated_at >= since)]


def _samples(conn: Any, iid: str, since: float, until: float) -> list[Sample]:
    rows = conn.execute(select(rpo_samples.c.at, rpo_samples.c.achieved_rpo_seconds, rpo_samples.c.replication_state)
                        .where(rpo_samples.c.instance_id == iid, rpo_samples.c.at >= since, rpo_samples.c.at < until)
                        .order_by(rpo_samples.c.at))
    return [Sample(r[0], r[1], r[2]) for r in rows]


def _schedules(conn: Any, ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    if not ids:
        return {}
    rows = conn.execute(select(rehearsal_schedules).where(rehearsal_schedules.c.instance_id.in_(list(ids))))
    return {r.instance_id: dict(r._mapping) for r in rows}


def _rpo_target(inst: Instance) -> float | None:
    minutes = inst.parameters.get("rpo_target_minutes")
    return float(minutes) * 60 if minutes else None


def _protection(sources: Sources, inst: Instance, now: float) -> Protection:
    if inst.state != InstanceState.READY:  # nothing to ask the backend: the lifecycle state says it all
        return assess(inst, None, now, sources.catalog.plan(inst.plan_id))
    return sources.protection(inst)


def build_report(sources: Sources, scope: Scope, since: float, until: float, *, now: float) -> Report:
    """The report of ``scope`` over ``[since, until)``; ``NotFound`` for an unknown instance."""
    covered = max(since, now - sources.sample_retention_seconds)
    interval = sources.sample_interval_seconds
    rows: list[InstanceReport] = []
    with sources.store.read() as tx:
        chosen = _selected(tx.list_instances(include_gone=True), scope, since, until)
        ids = [i.id for i in chosen]
        schedules = _schedules(tx.conn, ids)
        events = list_events(tx.conn, instance_ids=ids, types=history.EVENT_TYPES, since=since, until=until,
                             limit=None) if ids else []
        gathered = []
        for inst in chosen:
            ops: list[Operation] = [o for o in tx.list_operations(instance_id=inst.id, limit=MAX_OPERATIONS)
                                    if history.in_period(o, since, until)]
            ops.reverse()  # oldest first
            steps = {o.id: tx.steps(o.id) for o in ops if history.action_of(o) or o.state == OperationState.FAILED}
            gathered.append((inst, ops, steps, _samples(tx.conn, inst.id, covered, until)))
    for inst, ops, steps, samples in gathered:
        plan = sources.catalog.plan(inst.plan_id)
        rto_minutes = plan.features.get("rto_target_minutes") if plan else None
        rto_target = float(rto_minutes) * 60 if rto_minutes else None
        mine = [e for e in events if e["instance_id"] == inst.id]
        # Buckets the instance could have been sampled in: while it existed, within the retention, until now.
        ended = inst.updated_at if inst.state == InstanceState.GONE else now
        expected = expected_count(max(covered, inst.created_at), min(until, ended, now), interval)
        protection = _protection(sources, inst, now)
        rows.append(InstanceReport(
            instance_id=inst.id, account_id=inst.account_id, plan=plan.name if plan else inst.plan_id,
            state=inst.state.value, protection_status=protection.status.value,
            protection_reason=protection.reason,
            rpo=compliance(samples, _rpo_target(inst), interval, expected=expected),
            rto_target_seconds=rto_target, last_rehearsal_at=(inst.dr_state or {}).get("last_rehearsal_at"),
            rehearsals=history.rehearsals(ops, steps, mine, rto_target),
            moves=history.moves(ops, mine),
            failures=history.failures(ops, steps, mine, since, until),
            risks=open_risks(inst, protection, schedules.get(inst.id), now)))
    return Report(generated_at=now, scope=scope.kind, scope_value=scope.value,
                  period=Period(since=since, until=until, rpo_covered_since=covered),
                  sample_interval_seconds=interval, sample_retention_seconds=sources.sample_retention_seconds,
                  instances=rows, totals=totals(rows))


def _worst_seconds(row: InstanceReport) -> float:
    return (row.rpo.worst.achieved_rpo_seconds or 0.0) if row.rpo.worst else 0.0


def totals(rows: Sequence[InstanceReport]) -> Totals:
    samples = sum(r.rpo.samples for r in rows)
    targeted = [r for r in rows if r.rpo.target_seconds is not None]
    targeted_samples = sum(r.rpo.samples for r in targeted)
    worst = max((r for r in rows if r.rpo.worst is not None), key=_worst_seconds, default=None)
    return Totals(
        instances=len(rows), samples=samples, within_target=sum(r.rpo.within_target for r in rows),
        breaches=sum(r.rpo.breaches for r in rows), breach_minutes=round(sum(r.rpo.breach_minutes for r in rows), 2),
        share_within_target=(round(sum(r.rpo.within_target for r in targeted) / targeted_samples, 4)
                             if targeted_samples else None),
        worst_breach_instance=worst.instance_id if worst else None,
        worst_breach_seconds=worst.rpo.worst.achieved_rpo_seconds if worst and worst.rpo.worst else None,
        worst_breach_at=worst.rpo.worst.at if worst and worst.rpo.worst else None,
        rehearsals=sum(len(r.rehearsals) for r in rows),
        rehearsals_passed=sum(r.rehearsal_count("passed") for r in rows),
        rehearsals_failed=sum(r.rehearsal_count("failed") for r in rows),
        rehearsals_skipped=sum(r.rehearsal_count("skipped") for r in rows),
        rto_missed=sum(r.rto_missed for r in rows), moves=sum(len(r.moves) for r in rows),
        failures=sum(len(r.failures) for r in rows), open_risks=sum(len(r.risks) for r in rows),
        instances_with_risks=sum(1 for r in rows if r.risks))


def runtime_sources(runtime: Any) -> Sources:
    """The sources of a broker runtime (``broker.app.Runtime``): its store, catalog and protection status."""
    from broker.reports.retention import sample_retention_seconds

    return Sources(store=runtime.store, catalog=runtime.catalog,
                   protection=lambda inst: runtime.service.dr_view(inst)[1],
                   # the sampler's own floor on its interval (broker.workflows.rpo_sampler)
                   sample_interval_seconds=max(1.0, float(runtime.settings.rpo_sample_seconds)),
                   sample_retention_seconds=sample_retention_seconds(runtime.settings))
