"""The plan's maximum_polling_duration bounds an operation: past it, the operation ends failed with a
description (and compensates like any failure), whether it is between steps, retrying a transient error,
or still queued."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from broker.app import Runtime, create_app
from broker.domain.models import InstanceState, OperationState
from broker.workflows.retry import RetryPolicy
from broker.workflows.worker import Worker
from tests.conftest import OSB, grs_params
from tests.workflows.helpers import (
    Clock,
    Crash,
    catalog_with_polling,
    deprovision,
    expire_lease,
    instance_state,
    op,
    provision,
    run_to_end,
    scripted_runtime,
    second_worker,
    steps,
    wait_op,
)

LIMIT = "timed out: not finished within the plan's maximum_polling_duration"


def test_an_operation_past_its_deadline_fails_at_the_next_step_and_compensates(
        tmp_path: Path, made: list[Runtime]) -> None:
    clock = Clock()
    rt, scripted = scripted_runtime(tmp_path, clock=clock, sim_step_seconds=0.0)
    made.append(rt)
    scripted.after["create_replication_group"] = lambda *_: setattr(clock, "offset", 7201.0)
    op_id = provision(rt, "i-1", grs_params(0))
    run_to_end(rt.worker, op_id)

    failed = op(rt, op_id)
    assert failed.state == OperationState.FAILED
    assert failed.description.startswith(
        f"failed: {LIMIT} (7200 s); stopped before step 5/7 (waiting for consistent_copying); "
        "cleaned up: delete_replication_group, disable_replication, delete_dr_policy"), failed.description
    assert failed.error.startswith(LIMIT)
    assert "wait_consistent_copying" not in scripted.actions_of(op_id)
    assert rt.orchestrator.cloud.inventory("i-1") == []
    assert instance_state(rt, "i-1") == InstanceState.FAILED


def test_a_short_maximum_polling_duration_in_the_catalog_fails_a_slow_provision(
        tmp_path: Path, made: list[Runtime]) -> None:
    rt, _ = scripted_runtime(tmp_path, catalog_path=catalog_with_polling(tmp_path, 1), sim_step_seconds=0.3)
    made.append(rt)
    osb = OSB(create_app(runtime=rt).test_client())
    started = time.monotonic()
    r = osb.provision("i-1", params=grs_params(0))
    assert r.status_code == 202
    rt.worker.start()
    report = osb.wait("i-1", timeout=30)
    assert report["state"] == "failed"
    assert report["description"].startswith(f"failed: {LIMIT} (1 s); stopped before step "), report
    assert "cleaned up: " in report["description"]
    assert time.monotonic() - started < 10
    assert rt.orchestrator.cloud.inventory("i-1") == []
    # The platform's orphan mitigation still works: its DELETE gets a fresh deadline of its own.
    rt.orchestrator.step_seconds = 0.0
    assert osb.deprovision("i-1").status_code == 202
    assert osb.wait("i-1", timeout=30)["state"] == "succeeded"
    assert osb.deprovision("i-1").status_code == 410


def test_transient_retries_stop_at_the_deadline(tmp_path: Path, made: list[Runtime]) -> None:
    rt, _ = scripted_runtime(tmp_path, catalog_path=catalog_with_polling(tmp_path, 1), sim_step_seconds=0.0,
                             sim_faults="create_dr_policy=transient:100000",
                             retry=RetryPolicy(attempts=100000, initial=0.05, maximum=0.1))
    made.append(rt)
    op_id = provision(rt, "i-1", grs_params(0))
    started = time.monotonic()
    run_to_end(rt.worker, op_id)
    took = time.monotonic() - started
    failed = op(rt, op_id)
    assert failed.state == OperationState.FAILED
    assert failed.description.startswith(
        f"failed: {LIMIT} (1 s); step 2/7 (creating DR policy) was still failing: create_dr_policy: 503 "
        "Service Unavailable (injected, call "), failed.description
    assert took < 3, took
    record = steps(rt, op_id)["create_dr_policy"]
    assert 3 < record.attempts < 100, record.attempts
    assert record.state == "failed" and "503" in record.error


def test_a_deprovision_past_its_deadline_fails_without_compensation_and_a_new_delete_finishes(
        tmp_path: Path, made: list[Runtime]) -> None:
    clock = Clock()
    rt, scripted = scripted_runtime(tmp_path, clock=clock, sim_step_seconds=0.0)
    made.append(rt)
    run_to_end(rt.worker, provision(rt, "i-1", grs_params(0)))
    scripted.after["delete_replication_group"] = lambda *_: setattr(clock, "offset", 7201.0)
    first = deprovision(rt, "i-1")
    run_to_end(rt.worker, first)
    failed = op(rt, first)
    assert failed.state == OperationState.FAILED
    assert failed.description == f"failed: {LIMIT} (7200 s); stopped before step 3/8 (disabling volume replication)"
    assert instance_state(rt, "i-1") == InstanceState.FAILED
    assert rt.orchestrator.cloud.inventory("i-1"), "a deprovision has nothing to compensate"

    scripted.after.clear()
    clock.offset = 0.0
    second = deprovision(rt, "i-1")
    assert second != first
    run_to_end(rt.worker, second)
    assert op(rt, second).state == OperationState.SUCCEEDED
    assert rt.orchestrator.cloud.inventory("i-1") == []


def test_a_queued_operation_past_its_deadline_is_reaped(tmp_path: Path, made: list[Runtime]) -> None:
    rt, _ = scripted_runtime(tmp_path, sim_step_seconds=0.0)
    made.append(rt)
    op_id = provision(rt, "i-1", grs_params(0))
    assert Worker(rt.store, rt.engine).reap_expired() == []  # not yet
    late = Worker(rt.store, rt.engine, clock=lambda: time.time() + 7201)
    assert late.reap_expired() == [op_id]
    reaped = op(rt, op_id)
    assert reaped.state == OperationState.FAILED and reaped.lease_owner is None
    assert reaped.description == f"failed: {LIMIT} (7200 s); it was still queued"
    assert instance_state(rt, "i-1") == InstanceState.FAILED
    assert late.reap_expired() == []
    # The platform's DELETE then works as for any failed provision.
    osb = OSB(create_app(runtime=rt).test_client())
    r = osb.deprovision("i-1")
    assert r.status_code == 202
    run_to_end(rt.worker, r.json["operation"])
    assert osb.deprovision("i-1").status_code == 410


def test_a_deprovision_stuck_behind_a_provision_that_never_stops_is_reaped(
        tmp_path: Path, made: list[Runtime]) -> None:
    rt, _ = scripted_runtime(tmp_path, sim_step_seconds=0.0)
    made.append(rt)
    provision_id = provision(rt, "i-1", grs_params(0))
    # Another process holds the provision with a live lease and never reaches a step boundary.
    with rt.store.write() as tx:
        assert tx.update_operation(provision_id, state=OperationState.IN_PROGRESS, lease_owner="elsewhere:1:x",
                                   lease_until=time.time() + 100000)
    deprovision_id = deprovision(rt, "i-1")
    assert op(rt, deprovision_id).blocked_by == provision_id
    assert rt.worker.claim_next() is None

    late = Worker(rt.store, rt.engine, clock=lambda: time.time() + 7201)
    assert late.reap_expired() == [deprovision_id]
    reaped = op(rt, deprovision_id)
    assert reaped.state == OperationState.FAILED
    assert reaped.description == (f"failed: {LIMIT} (7200 s); it was still queued behind operation "
                                  f"{provision_id}")
    assert op(rt, provision_id).state == OperationState.IN_PROGRESS, "a claimed operation is the engine's"
    assert instance_state(rt, "i-1") == InstanceState.FAILED


def test_the_worker_loop_reaps_by_itself(tmp_path: Path, made: list[Runtime]) -> None:
    rt, _ = scripted_runtime(tmp_path, sim_step_seconds=0.0)
    made.append(rt)
    provision_id = provision(rt, "i-1", grs_params(0))
    with rt.store.write() as tx:
        assert tx.update_operation(provision_id, state=OperationState.IN_PROGRESS, lease_owner="elsewhere:1:x",
                                   lease_until=time.time() + 100000)
    deprovision_id = deprovision(rt, "i-1")
    rt.worker = Worker(rt.store, rt.engine, poll_seconds=0.01, reap_seconds=0.05,
                       clock=lambda: time.time() + 7201)
    rt.worker.start()
    assert wait_op(rt, deprovision_id, timeout=10).state == OperationState.FAILED


def test_a_step_interrupted_by_a_crash_is_compensated_when_the_resumed_operation_has_timed_out(
        tmp_path: Path, made: list[Runtime]) -> None:
    clock = Clock()
    rt, scripted = scripted_runtime(tmp_path, clock=clock, sim_step_seconds=0.0)
    made.append(rt)

    def crash_once(_action, _ctx, n) -> None:
        if n == 1:
            raise Crash("died after the group was created, before the step was recorded")
    scripted.after["create_replication_group"] = crash_once
    op_id = provision(rt, "i-1", grs_params(0))
    with pytest.raises(Crash):
        run_to_end(rt.worker, op_id)
    assert {r.kind for r in rt.orchestrator.cloud.inventory("i-1")} >= {"volume_group"}

    clock.offset = 7201.0  # the restart comes too late
    expire_lease(rt, op_id)
    run_to_end(second_worker(rt, scripted, clock=clock), op_id)
    failed = op(rt, op_id)
    assert failed.description.startswith(f"failed: {LIMIT} (7200 s); stopped before step 4/7 (creating "
                                         "replication group); cleaned up: delete_replication_group, "
                                         "disable_replication, delete_dr_policy"), failed.description
    assert rt.orchestrator.cloud.inventory("i-1") == []


def test_a_step_waiting_for_a_person_parks_the_operation_past_its_deadline(
        tmp_path: Path, made: list[Runtime]) -> None:
    from broker.domain.errors import AwaitingApproval
    from broker.workflows.engine import PARKED

    clock = Clock()
    rt, scripted = scripted_runtime(tmp_path, clock=clock, sim_step_seconds=0.0)
    made.append(rt)
    run_to_end(rt.worker, provision(rt, "i-1", grs_params(0)))

    def awaited(_action: str, _ctx: object, n: int) -> None:
        if n <= 2:  # a day passes, twice, before the second approver acts
            clock.offset += 86400.0
            raise AwaitingApproval("a second approver must delete key k-1", retry_after=900.0)

    scripted.before["delete_root_key"] = awaited
    op_id = deprovision(rt, "i-1")
    run_to_end(rt.worker, op_id)
    parked = op(rt, op_id)
    assert parked.state == OperationState.IN_PROGRESS and parked.lease_owner == PARKED
    assert parked.description.endswith(": deleting the root key: waiting: a second approver must delete key k-1")
    assert 800 < rt.engine.expected_remaining(parked) <= 900  # last_operation's Retry-After: its next look
    assert not rt.worker.claim(op_id)  # no worker takes it before then
    for _ in range(2):
        expire_lease(rt, op_id)  # its next look is due
        run_to_end(rt.worker, op_id)
    done = op(rt, op_id)
    assert done.state == OperationState.SUCCEEDED, done.description
    assert scripted.actions_of(op_id).count("delete_root_key") == 3
    assert steps(rt, op_id)["delete_root_key"].attempts == 3
