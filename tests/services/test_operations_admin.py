"""Operator interventions (``broker.services.operations``): retry a failed operation, abandon a stuck one,
and the rules that refuse them when they would do harm."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from broker.app import Runtime, create_app
from broker.domain.errors import NotFound, PermanentBackendError, Unprocessable
from broker.domain.models import BindingState, InstanceState, OperationState
from broker.services.operations import ABANDONED, OperationsAdmin
from tests.conftest import OSB, grs_params
from tests.workflows.helpers import (
    bind_async,
    deprovision,
    instance_state,
    op,
    provision,
    run_to_end,
    scripted_runtime,
    steps,
)


def _runtime(tmp_path: Path, made: list[Runtime], **settings):
    rt, scripted = scripted_runtime(tmp_path, sim_step_seconds=0.0, **settings)
    made.append(rt)
    return rt, scripted, OperationsAdmin(rt.store, rt.catalog)


# --- retry ---------------------------------------------------------------------------------------------

def test_retry_of_a_compensated_provision_restarts_from_step_one_and_succeeds(
        tmp_path: Path, made: list[Runtime]) -> None:
    rt, scripted, admin = _runtime(tmp_path, made)
    scripted.before["onboard_auxiliary_volumes"] = _fail_first_call
    op_id = provision(rt, "i-1", grs_params(0))
    run_to_end(rt.worker, op_id)
    failed = op(rt, op_id)
    assert failed.state == OperationState.FAILED and "cleaned up" in failed.description
    assert instance_state(rt, "i-1") == InstanceState.FAILED

    queued = admin.retry(op_id)
    assert queued.state == OperationState.QUEUED and queued.step_index == 0
    assert queued.description == "provision: queued again by an operator (from step 1)"
    assert queued.finished_at is None and queued.error is None and queued.lease_owner is None
    assert "failure" not in queued.payload and queued.payload["operator_retries"] == 1
    assert rt.engine.deadline(queued) == pytest.approx(queued.payload["retried_at"] + 7200)
    assert instance_state(rt, "i-1") == InstanceState.PROVISIONING
    osb = OSB(create_app(runtime=rt).test_client())
    assert osb.get("/v2/service_instances/i-1/last_operation").json["state"] == "in progress"

    run_to_end(rt.worker, op_id)
    assert op(rt, op_id).state == OperationState.SUCCEEDED
    assert instance_state(rt, "i-1") == InstanceState.READY
    assert scripted.actions_of(op_id).count("create_dr_policy") == 2  # undone, then done again
    assert {r.kind for r in rt.orchestrator.cloud.inventory("i-1")} >= {"dr_policy", "volume_group"}


def _fail_first_call(action, _ctx, n: int) -> None:
    if n == 1:
        raise PermanentBackendError(f"{action}: 500 (injected once)")


def test_retry_of_a_failed_deprovision_resumes_at_the_step_that_failed(tmp_path: Path, made: list[Runtime]) -> None:
    rt, scripted, admin = _runtime(tmp_path, made)
    run_to_end(rt.worker, provision(rt, "i-1", grs_params(0)))
    scripted.before["disable_replication"] = _fail_first_call
    dep = deprovision(rt, "i-1")
    run_to_end(rt.worker, dep)
    failed = op(rt, dep)
    assert failed.state == OperationState.FAILED and failed.step_index == 2
    assert instance_state(rt, "i-1") == InstanceState.FAILED

    queued = admin.retry(dep)
    assert queued.step_index == 2
    assert queued.description == "deprovision: queued again by an operator (from step 3)"
    assert instance_state(rt, "i-1") == InstanceState.DEPROVISIONING
    run_to_end(rt.worker, dep)
    assert op(rt, dep).state == OperationState.SUCCEEDED
    actions = scripted.actions_of(dep)
    assert actions.count("revoke_all_bindings") == 1 and actions.count("delete_replication_group") == 1
    assert actions.count("disable_replication") == 2
    assert rt.orchestrator.cloud.inventory("i-1") == []
    assert instance_state(rt, "i-1") == InstanceState.GONE
    assert steps(rt, dep)["disable_replication"].attempts == 2


def test_retry_of_a_failed_bind_binds(tmp_path: Path, made: list[Runtime]) -> None:
    rt, scripted, admin = _runtime(tmp_path, made)
    run_to_end(rt.worker, provision(rt, "i-1", grs_params(0)))
    scripted.before["issue_credentials"] = _fail_first_call
    bind = bind_async(rt, "i-1", "b-1")
    run_to_end(rt.worker, bind)
    assert op(rt, bind).state == OperationState.FAILED
    assert admin.retry(bind).step_index == 0
    with rt.store.read() as tx:
        assert tx.get_binding("i-1", "b-1").state == BindingState.BINDING
    run_to_end(rt.worker, bind)
    with rt.store.read() as tx:
        binding = tx.get_binding("i-1", "b-1")
    assert binding.state == BindingState.BOUND and binding.credentials["iam"]["apikey"]


@pytest.mark.parametrize("state", [OperationState.QUEUED, OperationState.IN_PROGRESS, OperationState.SUCCEEDED])
def test_retry_refuses_an_operation_that_has_not_failed(tmp_path: Path, made: list[Runtime], state) -> None:
    rt, _, admin = _runtime(tmp_path, made)
    op_id = provision(rt, "i-1", grs_params(0))
    with rt.store.write() as tx:
        tx.update_operation(op_id, state=state)
    with pytest.raises(Unprocessable, match=f"is {state.value}; only a failed operation can be retried"):
        admin.retry(op_id)
    assert op(rt, op_id).state == state


def test_retry_refuses_a_provision_halted_by_a_delete(tmp_path: Path, made: list[Runtime]) -> None:
    rt, _, admin = _runtime(tmp_path, made)
    op_id = provision(rt, "i-1", grs_params(0))
    dep = deprovision(rt, "i-1")  # halts the queued provision at once
    assert op(rt, op_id).error == "halted"
    with pytest.raises(Unprocessable, match="halted by a later deprovision request, which supersedes it"):
        admin.retry(op_id)
    run_to_end(rt.worker, dep)


def test_retry_refuses_an_operation_that_a_later_one_superseded(tmp_path: Path, made: list[Runtime]) -> None:
    rt, scripted, admin = _runtime(tmp_path, made)
    scripted.before["create_dr_policy"] = _fail_first_call
    op_id = provision(rt, "i-1", grs_params(0))
    run_to_end(rt.worker, op_id)
    dep = deprovision(rt, "i-1")
    run_to_end(rt.worker, dep)
    with pytest.raises(Unprocessable, match=f"not the latest of its instance: deprovision {dep} \\(succeeded\\)"):
        admin.retry(op_id)


def test_retry_refuses_while_another_operation_of_the_instance_runs(tmp_path: Path, made: list[Runtime]) -> None:
    rt, scripted, admin = _runtime(tmp_path, made)
    run_to_end(rt.worker, provision(rt, "i-1", grs_params(0)))
    scripted.before["issue_credentials"] = _fail_first_call
    bind = bind_async(rt, "i-1", "b-1")
    run_to_end(rt.worker, bind)
    bind_async(rt, "i-1", "b-2")  # queued
    with pytest.raises(Unprocessable, match=r"has a bind operation .* in progress"):
        admin.retry(bind)


def test_retry_and_abandon_of_an_unknown_operation_are_not_found(tmp_path: Path, made: list[Runtime]) -> None:
    _, _, admin = _runtime(tmp_path, made)
    for action in (admin.retry, admin.abandon, admin.show):
        with pytest.raises(NotFound, match="operation nope does not exist"):
            action("nope")


# --- abandon -------------------------------------------------------------------------------------------

def test_abandon_of_a_queued_provision_fails_it_and_a_delete_cleans_up(tmp_path: Path, made: list[Runtime]) -> None:
    rt, _, admin = _runtime(tmp_path, made)
    op_id = provision(rt, "i-1", grs_params(0))
    abandoned = admin.abandon(op_id)
    assert abandoned.state == OperationState.FAILED
    assert abandoned.description == ABANDONED and abandoned.error == ABANDONED
    assert abandoned.lease_owner is None and abandoned.lease_until is None and abandoned.finished_at
    assert instance_state(rt, "i-1") == InstanceState.FAILED
    assert rt.worker.claim_next() is None
    osb = OSB(create_app(runtime=rt).test_client())
    report = osb.get("/v2/service_instances/i-1/last_operation").json
    assert report == {"state": "failed", "description": ABANDONED}
    r = osb.deprovision("i-1")
    assert r.status_code == 202
    run_to_end(rt.worker, r.json["operation"])
    assert osb.deprovision("i-1").status_code == 410


def test_abandon_of_a_running_operation_stops_its_worker_at_the_next_write(
        tmp_path: Path, made: list[Runtime]) -> None:
    rt, scripted, admin = _runtime(tmp_path, made)
    inside, release = threading.Event(), threading.Event()

    def hold(_action, _ctx, _n) -> None:
        inside.set()
        assert release.wait(30)
    scripted.before["create_replication_group"] = hold
    op_id = provision(rt, "i-1", grs_params(0))
    assert rt.worker.claim(op_id)
    runner = threading.Thread(target=rt.worker.run_claimed, args=(op_id,), daemon=True)
    runner.start()
    assert inside.wait(10)

    abandoned = admin.abandon(op_id)
    assert abandoned.state == OperationState.FAILED and abandoned.lease_owner is None
    assert steps(rt, op_id)["create_replication_group"].state == "failed"
    release.set()
    runner.join(10)
    assert not runner.is_alive()
    after = op(rt, op_id)
    assert after.state == OperationState.FAILED and after.description == ABANDONED
    assert scripted.actions_of(op_id)[-1] == "create_replication_group", "no further step ran"
    assert instance_state(rt, "i-1") == InstanceState.FAILED

    # Abandoned, then retried: nothing was compensated, so it resumes where it stopped and succeeds.
    scripted.before.clear()
    queued = admin.retry(op_id)
    assert queued.step_index == 3
    run_to_end(rt.worker, op_id)
    assert op(rt, op_id).state == OperationState.SUCCEEDED
    assert instance_state(rt, "i-1") == InstanceState.READY


def test_abandon_of_a_bind_leaves_the_binding_failed(tmp_path: Path, made: list[Runtime]) -> None:
    rt, _, admin = _runtime(tmp_path, made)
    run_to_end(rt.worker, provision(rt, "i-1", grs_params(0)))
    bind = bind_async(rt, "i-1", "b-1")
    admin.abandon(bind)
    with rt.store.read() as tx:
        assert tx.get_binding("i-1", "b-1").state == BindingState.FAILED
        assert tx.get_instance("i-1").state == InstanceState.READY


def test_abandon_refuses_a_finished_operation(tmp_path: Path, made: list[Runtime]) -> None:
    rt, _, admin = _runtime(tmp_path, made)
    op_id = provision(rt, "i-1", grs_params(0))
    run_to_end(rt.worker, op_id)
    before = op(rt, op_id)
    with pytest.raises(Unprocessable, match="has already succeeded; only a queued or in-progress operation"):
        admin.abandon(op_id)
    assert op(rt, op_id) == before


def test_show_lists_every_planned_step_with_its_record(tmp_path: Path, made: list[Runtime]) -> None:
    rt, _, admin = _runtime(tmp_path, made, sim_faults="create_replication_group=transient:2")
    op_id = provision(rt, "i-1", grs_params(0))
    view = admin.show(op_id)
    assert [s.state for s in view.steps] == ["pending"] * 7 and view.steps[0].title == "validating sites"
    run_to_end(rt.worker, op_id)
    view = admin.show(op_id)
    assert [s.state for s in view.steps] == ["done"] * 7
    assert {s.action: s.attempts for s in view.steps}["create_replication_group"] == 3
    assert view.maximum_polling_duration == 7200
    assert view.deadline == pytest.approx(view.operation.created_at + 7200)
    data = view.as_dict()
    assert data["steps"][3]["action"] == "create_replication_group" and data["steps"][3]["attempts"] == 3
    assert time.time() - data["created_at"] < 60
