"""The report of a real runtime's database: instances provisioned through OSB, then a constructed history
(operations, samples and DR events written as the broker writes them) read back as report figures."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import insert

from broker.domain.errors import NotFound
from broker.domain.models import Operation, OperationState, OperationType
from broker.reports.build import Scope
from broker.store.tables import rehearsal_schedules
from tests.conftest import KSYS_PARAMS, KSYS_PLAN, OSB, grs_params
from tests.reports.conftest import DAY, HOUR, add_event, add_samples, report, set_instance


def _op(rt: Any, iid: str, action: str | None, state: OperationState, start: float, end: float | None,
        description: str = "", op_type: OperationType = OperationType.UPDATE, **action_extra: Any) -> str:
    """An operation row as the service and engine leave it (payload sealed by the store)."""
    op_id = str(uuid.uuid4())
    payload = {"dr_action": {"type": action, **action_extra}} if action else {}
    with rt.store.write() as tx:
        tx.insert_operation(Operation(id=op_id, instance_id=iid, binding_id=None, type=op_type, state=state,
                                      plan_id=KSYS_PLAN, request_hash="h", created_at=start, started_at=start,
                                      finished_at=end, description=description, payload=payload))
    return op_id


@pytest.fixture
def two(osb: OSB, worker: Any) -> Any:
    """Two ready KSYS instances, r1 (rehearsal schedule weekly) and r2, r2 moved to another account."""
    osb.ready("r1", KSYS_PLAN, {**KSYS_PARAMS, "dr_test_schedule": "weekly"})
    osb.ready("r2", KSYS_PLAN, {**KSYS_PARAMS, **{k: v for k, v in grs_params(3).items()
                                                   if k == "protected_volumes"}})
    now = time.time()
    set_instance(worker, "r1", created_at=now - 40 * DAY)
    set_instance(worker, "r2", created_at=now - 40 * DAY, account_id="fedcba9876543210fedcba9876543210")
    return worker, now


def test_rehearsal_history_shows_each_rehearsal_with_rto_against_target(two: Any) -> None:
    rt, now = two
    passed = _op(rt, "r1", "test_failover", OperationState.SUCCEEDED, now - 3 * DAY, now - 3 * DAY + 50)
    add_event(rt, "rehearsal.passed", "r1", now - 3 * DAY + 50, operation_id=passed,
              data={"rto_seconds": 50.0, "rto_target_seconds": 3600.0, "rto_met": True, "scheduled": True})
    slow = _op(rt, "r1", "rehearsal", OperationState.SUCCEEDED, now - 2 * DAY, now - 2 * DAY + 4000,
               scheduled=True)
    add_event(rt, "rehearsal.failed", "r1", now - 2 * DAY + 4000, operation_id=slow,
              data={"rto_seconds": 4000.0, "rto_target_seconds": 3600.0, "rto_met": False,
                    "reason": "the measured RTO 4000.0 s is over the target 3600.0 s"})
    broken = _op(rt, "r1", "test_failover", OperationState.FAILED, now - DAY, now - DAY + 20,
                 "failed: step 2/3 (starting rehearsal VMs) failed: no capacity")
    add_event(rt, "rehearsal.skipped", "r1", now - HOUR, data={"reason": "busy", "scheduled": True},
              summary="scheduled rehearsal skipped: an update operation is in progress")

    r1 = report(rt, Scope("instance", "r1"), now - 7 * DAY, now).instances[0]
    lines = [(h.outcome, h.rto_seconds, h.rto_met, h.scheduled, h.operation_id) for h in r1.rehearsals]
    assert lines == [("passed", 50.0, True, True, passed), ("failed", 4000.0, False, True, slow),
                     ("failed", None, None, False, broken), ("skipped", None, None, True, None)]
    assert r1.rehearsals[1].rto_target_seconds == 3600.0
    assert "over the target" in r1.rehearsals[1].detail
    assert "no capacity" in r1.rehearsals[2].detail
    assert (r1.rehearsal_count("passed"), r1.rehearsal_count("failed"), r1.rto_missed) == (1, 2, 1)
    # the failed operation is also a failure line, with the step the engine recorded
    assert [(f.operation_id, f.operation) for f in r1.failures] == [(broken, "test_failover")]


def test_rto_met_is_computed_from_the_plan_target_when_no_event_says(two: Any) -> None:
    rt, now = two
    op_id = _op(rt, "r1", "test_failover", OperationState.SUCCEEDED, now - DAY, now - DAY + 7200)
    with rt.store.write() as tx:  # the backend's measure, in the verify step's outputs (no event)
        from broker.domain.models import StepRecord

        tx.upsert_step(StepRecord(op_id, 2, "verify_rehearsal", "done", 1, now - DAY, now - DAY + 7200,
                                  {"rto_seconds": 7200.0}, None), new=True)
    (line,) = report(rt, Scope("instance", "r1"), now - 7 * DAY, now).instances[0].rehearsals
    assert (line.outcome, line.rto_seconds, line.rto_target_seconds, line.rto_met) == ("passed", 7200.0, 3600.0,
                                                                                      False)


def test_moves_have_outcome_and_duration_and_failures_list_step_failures(two: Any) -> None:
    rt, now = two
    fo = _op(rt, "r1", "failover", OperationState.SUCCEEDED, now - 5 * DAY, now - 5 * DAY + 300, mode="planned")
    add_event(rt, "failover.started", "r1", now - 5 * DAY + 1, operation_id=fo, data={"mode": "planned"})
    add_event(rt, "failover.finished", "r1", now - 5 * DAY + 301, operation_id=fo,
              data={"mode": "planned", "outcome": "succeeded"})
    fb = _op(rt, "r1", "failback", OperationState.FAILED, now - 4 * DAY, now - 4 * DAY + 90, "failed: link down")
    add_event(rt, "step.failed", "r1", now - 4 * DAY + 90, operation_id=fb,
              data={"action": "reverse_replication", "reason": "link down"})
    other = _op(rt, "r1", "resync", OperationState.SUCCEEDED, now - 3 * DAY, now - 3 * DAY + 10)
    add_event(rt, "step.failed", "r1", now - 3 * DAY + 5, operation_id=other,
              data={"action": "restart_replication", "reason": "503 from storage"})

    r1 = report(rt, Scope("instance", "r1"), now - 7 * DAY, now).instances[0]
    assert [(m.type, m.mode, m.outcome, m.duration_seconds) for m in r1.moves] == [
        ("failover", "planned", "succeeded", 300.0), ("failback", None, "failed", 90.0)]
    assert [(f.operation, f.step, f.reason) for f in r1.failures] == [
        ("failback", "reverse_replication", "failed: link down"), ("resync", "restart_replication", "503 from storage")]


def test_the_period_bounds_samples_events_and_operations(two: Any) -> None:
    rt, now = two
    since, until = now - 10 * DAY, now - 3 * DAY
    add_samples(rt, "r1", [(since - 60, 5000.0, "consistent_copying"),  # before: not counted
                           (since, 10.0, "consistent_copying"), (since + 60, 2000.0, "consistent_copying"),
                           (until - 60, 10.0, "consistent_copying"),
                           (until, 9000.0, "consistent_copying")])  # the end is excluded
    _op(rt, "r1", "test_failover", OperationState.SUCCEEDED, since - 2 * DAY, since - 2 * DAY + 10)
    inside = _op(rt, "r1", "test_failover", OperationState.SUCCEEDED, since + DAY, since + DAY + 10)
    _op(rt, "r1", "test_failover", OperationState.SUCCEEDED, until + 10, until + 20)
    add_event(rt, "rehearsal.skipped", "r1", until + 5, data={"reason": "busy"})

    r1 = report(rt, Scope("instance", "r1"), since, until, now=now).instances[0]
    assert (r1.rpo.samples, r1.rpo.within_target, r1.rpo.breaches) == (3, 2, 1)
    assert r1.rpo.worst is not None and r1.rpo.worst.achieved_rpo_seconds == 2000.0
    assert [h.operation_id for h in r1.rehearsals] == [inside]


def test_samples_older_than_the_retention_are_not_reported_and_the_cover_says_from_when(
        two: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rt, now = two
    add_samples(rt, "r1", [(now - 20 * DAY, 5000.0, "consistent_copying"), (now - DAY, 10.0, "consistent_copying")])
    monkeypatch.setattr(rt, "settings", replace(rt.settings, rpo_sample_keep_days=7.0))
    rep = report(rt, Scope("instance", "r1"), now - 30 * DAY, now)
    assert rep.period.rpo_covered_since == pytest.approx(now - 7 * DAY)
    assert rep.instances[0].rpo.samples == 1
    assert rep.instances[0].rpo.expected_samples == pytest.approx(7 * 24 * 60, abs=1)


def test_account_scope_reports_only_that_accounts_instances_with_totals(two: Any) -> None:
    rt, now = two
    add_samples(rt, "r1", [(now - 120, 10.0, "consistent_copying"), (now - 60, 1000.0, "consistent_copying")])
    add_samples(rt, "r2", [(now - 120, 3000.0, "consistent_stopped"), (now - 60, 10.0, "consistent_copying")])
    mine = report(rt, Scope("account", "fedcba9876543210fedcba9876543210"), now - DAY, now)
    assert [i.instance_id for i in mine.instances] == ["r2"]
    everything = report(rt, Scope("all"), now - DAY, now)
    assert [i.instance_id for i in everything.instances] == ["r1", "r2"]
    t = everything.totals
    assert (t.instances, t.samples, t.within_target, t.breaches, t.share_within_target) == (2, 4, 2, 2, 0.5)
    assert (t.worst_breach_instance, t.worst_breach_seconds) == ("r2", 3000.0)
    assert t.breach_minutes == 2.0
    assert report(rt, Scope("account", "nobody"), now - DAY, now).instances == []


def test_an_unknown_instance_is_not_found_and_a_gone_one_outside_the_period_is_left_out(two: Any) -> None:
    rt, now = two
    with pytest.raises(NotFound, match="nope"):
        report(rt, Scope("instance", "nope"), now - DAY, now)
    set_instance(rt, "r2", state="gone", updated_at=now - 20 * DAY)
    assert [i.instance_id for i in report(rt, Scope("all"), now - 7 * DAY, now).instances] == ["r1"]
    assert [i.instance_id for i in report(rt, Scope("all"), now - 30 * DAY, now).instances] == ["r1", "r2"]


def test_open_risks_from_the_instance_and_its_schedule(two: Any) -> None:
    rt, now = two
    r = report(rt, Scope("all"), now - DAY, now)
    codes = {i.instance_id: [k.code for k in i.risks] for i in r.instances}
    assert codes == {"r1": ["never_rehearsed"], "r2": ["never_rehearsed"]}
    # r1 (weekly) rehearsed 8 days ago with the RTO missed; r2 has a scheduler row whose due run never started
    set_instance(rt, "r1", dr_state={"active_site": "primary", "last_rehearsal_at": now - 8 * DAY,
                                     "last_rehearsal_rto_met": False, "test_active": True})
    set_instance(rt, "r2", dr_state={"active_site": "primary", "last_rehearsal_at": now - 2 * DAY})
    with rt.store.write() as tx:
        tx.conn.execute(insert(rehearsal_schedules).values(
            instance_id="r2", schedule="0 3 * * *", timezone="UTC", enabled=True, max_age_seconds=3 * DAY,
            next_due_at=now - 2 * HOUR, updated_at=now))
    r = report(rt, Scope("all"), now - DAY, now)
    codes = {i.instance_id: [k.code for k in i.risks] for i in r.instances}
    assert codes == {"r1": ["test_failover_active", "rehearsal_overdue", "rto_missed"], "r2": ["rehearsal_overdue"]}
    set_instance(rt, "r1", dr_state={"active_site": "secondary", "last_rehearsal_at": now - DAY,
                                     "last_action": {"type": "failover", "finished_at": now - HOUR}})
    set_instance(rt, "r2", state="failed")
    r = report(rt, Scope("all"), now - DAY, now)
    risks = {i.instance_id: i.risks for i in r.instances}
    assert [k.code for k in risks["r1"]] == ["failed_over"] and risks["r1"][0].severity == "critical"
    assert risks["r1"][0].since == pytest.approx(now - HOUR)
    assert [k.code for k in risks["r2"]] == ["provisioning_failed"]
