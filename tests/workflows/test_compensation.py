"""Compensation and orphan mitigation: a permanent failure undoes the finished steps in reverse and reports
what it cleaned and what it could not; a crash during compensation resumes the compensation; a DELETE that
arrives while a provision runs halts it and deprovisions; a DELETE of a half-failed provision cleans up and
then answers 410."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.app import Runtime, create_app
from broker.domain.errors import PermanentBackendError
from broker.domain.models import BindingState, InstanceState, OperationState, OperationType
from broker.services.requests import ProvisionRequest, UnbindRequest
from tests.conftest import GRS_PLAN, OSB, SERVICE_ID, grs_params
from tests.workflows.helpers import (
    Crash,
    bind_async,
    deprovision,
    expire_lease,
    instance_state,
    op,
    provision,
    run_to_end,
    scripted_runtime,
    second_worker,
    steps,
)

PROVISION_COMPENSATIONS = ["remove_auxiliary_volumes", "delete_replication_group", "disable_replication",
                           "delete_dr_policy"]


def _runtime(tmp_path: Path, made: list[Runtime], **settings):
    rt, scripted = scripted_runtime(tmp_path, sim_step_seconds=0.0, **settings)
    made.append(rt)
    return rt, scripted


def test_permanent_failure_compensates_finished_steps_in_reverse_and_reports_them(
        tmp_path: Path, made: list[Runtime]) -> None:
    rt, scripted = _runtime(tmp_path, made, sim_faults="onboard_auxiliary_volumes=fail")
    params = grs_params(0)
    op_id = provision(rt, "i-1", params)
    run_to_end(rt.worker, op_id)

    failed = op(rt, op_id)
    assert failed.state == OperationState.FAILED
    assert failed.description.startswith("failed: step 6/7 (onboarding auxiliary volumes at the secondary) "
                                         "failed: onboard_auxiliary_volumes failed (injected permanent fault)")
    assert f"cleaned up: {', '.join(PROVISION_COMPENSATIONS)}" in failed.description
    assert "could not clean up" not in failed.description
    # Forward steps, then the compensations of the failed and the finished steps, newest first.
    actions = scripted.actions_of(op_id)
    cut = actions.index("onboard_auxiliary_volumes") + 1
    assert actions[cut:] == PROVISION_COMPENSATIONS
    states = {name: s.state for name, s in steps(rt, op_id).items()}
    assert states == {"validate_sites": "done", "create_dr_policy": "compensated",
                      "enable_replication": "compensated", "create_replication_group": "compensated",
                      "wait_consistent_copying": "done", "onboard_auxiliary_volumes": "failed"}
    assert rt.orchestrator.cloud.inventory("i-1") == []
    assert instance_state(rt, "i-1") == InstanceState.FAILED
    # The customer's volumes are free again: a new instance may protect them.
    assert rt.orchestrator.check_protection(params["primary_workspace_crn"], params["secondary_workspace_crn"],
                                            params["protected_volumes"]) == []


def test_a_compensation_that_fails_is_reported_and_a_later_delete_cleans_up_then_answers_410(
        tmp_path: Path, made: list[Runtime]) -> None:
    rt, scripted = _runtime(tmp_path, made, sim_faults="create_replication_group=fail")

    def refuse_during_provision(_action, ctx, _n) -> None:
        if ctx.operation_type == "provision":
            raise PermanentBackendError("DR policy service: 500 (injected)")
    scripted.before["delete_dr_policy"] = refuse_during_provision
    osb = OSB(create_app(runtime=rt).test_client())
    r = osb.provision("i-1", params=grs_params(0))
    assert r.status_code == 202
    run_to_end(rt.worker, r.json["operation"])
    report = osb.wait("i-1")
    assert report["state"] == "failed"
    assert "cleaned up: delete_replication_group, disable_replication" in report["description"]
    assert "could not clean up: delete_dr_policy (DR policy service: 500 (injected))" in report["description"]
    assert [r.kind for r in rt.orchestrator.cloud.inventory("i-1")] == ["dr_policy"]
    assert steps(rt, r.json["operation"])["create_dr_policy"].state == "failed"

    # Orphan mitigation: the platform deletes the failed instance; the deprovision removes what was left.
    r = osb.deprovision("i-1")
    assert r.status_code == 202, r.get_data(as_text=True)
    run_to_end(rt.worker, r.json["operation"])
    assert osb.wait("i-1")["state"] == "succeeded"
    assert rt.orchestrator.cloud.inventory("i-1") == []
    assert osb.deprovision("i-1").status_code == 410


def test_transient_errors_in_a_compensation_are_retried(tmp_path: Path, made: list[Runtime]) -> None:
    rt, scripted = _runtime(tmp_path, made,
                            sim_faults="onboard_auxiliary_volumes=fail,delete_replication_group=transient:2")
    op_id = provision(rt, "i-1", grs_params(0))
    run_to_end(rt.worker, op_id)
    failed = op(rt, op_id)
    assert f"cleaned up: {', '.join(PROVISION_COMPENSATIONS)}" in failed.description
    assert scripted.calls[(op_id, "delete_replication_group")] == 3
    assert rt.orchestrator.cloud.inventory("i-1") == []


def test_a_crash_during_compensation_resumes_the_compensation_not_the_steps(
        tmp_path: Path, made: list[Runtime]) -> None:
    rt, scripted = _runtime(tmp_path, made, sim_faults="onboard_auxiliary_volumes=fail")

    def crash_once(_action, _ctx, n) -> None:
        if n == 1:
            raise Crash("died while compensating")
    scripted.after["disable_replication"] = crash_once
    op_id = provision(rt, "i-1", grs_params(0))
    with pytest.raises(Crash):
        run_to_end(rt.worker, op_id)
    midway = op(rt, op_id)
    assert midway.state == OperationState.IN_PROGRESS
    assert midway.description.startswith("failed, cleaning up: step 6/7")
    assert midway.payload["failure"] and midway.payload["failed_idx"] == 5

    expire_lease(rt, op_id)
    run_to_end(second_worker(rt, scripted), op_id)
    failed = op(rt, op_id)
    assert failed.state == OperationState.FAILED
    assert f"cleaned up: {', '.join(PROVISION_COMPENSATIONS)}" in failed.description
    # No forward step ran again; the compensations (idempotent) ran again from the start.
    for action in ("validate_sites", "create_dr_policy", "enable_replication", "create_replication_group",
                   "wait_consistent_copying", "onboard_auxiliary_volumes"):
        assert scripted.calls[(op_id, action)] == 1, action
    assert scripted.calls[(op_id, "disable_replication")] == 2
    assert rt.orchestrator.cloud.inventory("i-1") == []
    assert instance_state(rt, "i-1") == InstanceState.FAILED


def test_a_failed_bind_compensates_and_leaves_the_instance_untouched(tmp_path: Path, made: list[Runtime]) -> None:
    rt, _ = _runtime(tmp_path, made, sim_faults="issue_credentials=fail")
    run_to_end(rt.worker, provision(rt, "i-1", grs_params(0)))
    before = sorted((r.kind, r.id) for r in rt.orchestrator.cloud.inventory("i-1"))
    op_id = bind_async(rt, "i-1", "b-1")
    run_to_end(rt.worker, op_id)
    failed = op(rt, op_id)
    assert failed.state == OperationState.FAILED
    assert "cleaned up: revoke_credentials, revoke_access, delete_service_id" in failed.description
    assert sorted((r.kind, r.id) for r in rt.orchestrator.cloud.inventory("i-1")) == before
    with rt.store.read() as tx:
        assert tx.get_binding("i-1", "b-1").state == BindingState.FAILED
        assert tx.get_instance("i-1").state == InstanceState.READY


def test_delete_arriving_while_a_provision_runs_halts_it_at_the_next_step_and_deprovisions(
        tmp_path: Path, made: list[Runtime]) -> None:
    rt, scripted = _runtime(tmp_path, made)
    accepted: list[str] = []

    def platform_deletes(_action, _ctx, _n) -> None:
        # The DELETE arrives (and is answered 202) while enable_replication is running.
        accepted.append(deprovision(rt, "i-1"))
    scripted.after["enable_replication"] = platform_deletes
    provision_id = provision(rt, "i-1", grs_params(0))
    run_to_end(rt.worker, provision_id)

    halted = op(rt, provision_id)
    assert halted.state == OperationState.FAILED and halted.error == "halted"
    assert scripted.actions_of(provision_id)[-1] == "enable_replication", "it stopped at the next boundary"
    (deprovision_id,) = accepted
    assert op(rt, deprovision_id).blocked_by == provision_id
    assert instance_state(rt, "i-1") == InstanceState.DEPROVISIONING
    assert rt.orchestrator.cloud.inventory("i-1"), "the halted provision had created resources"

    assert rt.worker.claim_next() == deprovision_id  # unblocked now that the provision stopped
    rt.worker.run_claimed(deprovision_id)
    assert op(rt, deprovision_id).state == OperationState.SUCCEEDED
    assert rt.orchestrator.cloud.inventory("i-1") == []
    assert instance_state(rt, "i-1") == InstanceState.GONE
    osb = OSB(create_app(runtime=rt).test_client())
    assert osb.get("/v2/service_instances/i-1/last_operation").json["state"] == "succeeded"
    assert osb.deprovision("i-1").status_code == 410



def test_delete_arriving_during_the_last_step_leaves_the_instance_to_the_deprovision(
        tmp_path: Path, made: list[Runtime]) -> None:
    """No step boundary is left to halt at: the provision finishes, but the instance is the deprovision's now and
    stays deprovisioning (not ready) until the deprovision has removed it."""
    rt, scripted = _runtime(tmp_path, made)
    provision_id = provision(rt, "i-1", grs_params(0))
    last = rt.engine.steps(op(rt, provision_id))[-1].action
    accepted: list[str] = []

    def platform_deletes(_action, _ctx, _n) -> None:
        accepted.append(deprovision(rt, "i-1"))
    scripted.after[last] = platform_deletes
    run_to_end(rt.worker, provision_id)

    assert op(rt, provision_id).state == OperationState.SUCCEEDED
    assert instance_state(rt, "i-1") == InstanceState.DEPROVISIONING
    osb = OSB(create_app(runtime=rt).test_client())
    assert osb.get("/v2/service_instances/i-1/last_operation").json["state"] == "in progress"
    (deprovision_id,) = accepted
    run_to_end(rt.worker, deprovision_id)
    assert op(rt, deprovision_id).state == OperationState.SUCCEEDED
    assert instance_state(rt, "i-1") == InstanceState.GONE


def test_unbind_arriving_during_the_last_bind_step_leaves_the_binding_to_the_unbind(
        tmp_path: Path, made: list[Runtime]) -> None:
    rt, scripted = _runtime(tmp_path, made)
    run_to_end(rt.worker, provision(rt, "i-1", grs_params(0)))
    bind_id = bind_async(rt, "i-1", "b-1")
    last = rt.engine.steps(op(rt, bind_id))[-1].action
    accepted: list[str] = []

    def platform_unbinds(_action, _ctx, _n) -> None:
        result = rt.service.unbind(UnbindRequest(instance_id="i-1", binding_id="b-1", service_id=SERVICE_ID,
                                                 plan_id=GRS_PLAN, accepts_incomplete=True))
        assert result.status == "accepted"
        accepted.append(result.operation)
    scripted.after[last] = platform_unbinds
    run_to_end(rt.worker, bind_id)

    assert op(rt, bind_id).state == OperationState.SUCCEEDED
    with rt.store.read() as tx:
        assert tx.get_binding("i-1", "b-1").state == BindingState.UNBINDING
    (unbind_id,) = accepted
    run_to_end(rt.worker, unbind_id)
    with rt.store.read() as tx:
        binding = tx.get_binding("i-1", "b-1")
    assert op(rt, unbind_id).state == OperationState.SUCCEEDED
    assert binding.state == BindingState.GONE and binding.credentials is None

def _request_halt(rt: Runtime):
    """A hook that does what a DELETE during a provision does to it: asks it to halt (cancel_requested)."""
    def hook(_action, ctx, _n) -> None:
        with rt.store.write() as tx:
            assert tx.update_operation(ctx.operation_id, cancel_requested=True)
    return hook


@pytest.mark.parametrize("action", ["validate_sites", "create_replication_group", "onboard_auxiliary_volumes"])
def test_a_halt_requested_while_a_step_runs_records_that_step_done_and_starts_no_later_one(
        tmp_path: Path, made: list[Runtime], db_url: str, action: str) -> None:
    rt, scripted = _runtime(tmp_path, made, database_url=db_url)
    op_id = provision(rt, "i-1", grs_params(0))
    actions = [s.action for s in rt.engine.steps(op(rt, op_id))]
    k = actions.index(action)
    assert k + 1 < len(actions), "the halt is seen at the boundary before the next step"
    scripted.before[action] = _request_halt(rt)
    run_to_end(rt.worker, op_id)

    halted = op(rt, op_id)
    assert halted.state == OperationState.FAILED and halted.error == "halted"
    assert halted.description.startswith("halted"), halted.description
    assert halted.step_index == k + 1
    assert halted.lease_owner is None and halted.finished_at is not None
    assert scripted.actions_of(op_id) == actions[:k + 1], "no later step was performed"
    with rt.store.read() as tx:
        records = tx.steps(op_id)
    assert [(r.idx, r.name) for r in records] == list(enumerate(actions[:k + 1])), "no later step was recorded"
    assert all(r.state == "done" and r.finished_at is not None and r.attempts == 1 for r in records), records
    assert records[k].outputs == json.loads(json.dumps(scripted.results[(op_id, action)]))


def test_a_halt_requested_before_the_first_step_starts_no_step(
        tmp_path: Path, made: list[Runtime], db_url: str) -> None:
    rt, scripted = _runtime(tmp_path, made, database_url=db_url)
    op_id = provision(rt, "i-1", grs_params(0))
    with rt.store.write() as tx:
        assert tx.update_operation(op_id, cancel_requested=True)
    run_to_end(rt.worker, op_id)
    halted = op(rt, op_id)
    assert halted.state == OperationState.FAILED and halted.error == "halted"
    assert halted.description.startswith("halted") and halted.step_index == 0
    assert scripted.actions_of(op_id) == []
    assert steps(rt, op_id) == {}

def test_delete_of_a_half_failed_provision_then_provision_again_with_the_same_id(
        tmp_path: Path, made: list[Runtime]) -> None:
    rt, _ = _runtime(tmp_path, made, sim_faults="wait_consistent_copying=fail")
    osb = OSB(create_app(runtime=rt).test_client())
    provision_id = osb.provision("i-1", params=grs_params(0)).json["operation"]
    run_to_end(rt.worker, provision_id)
    assert osb.wait("i-1")["state"] == "failed"
    r = osb.deprovision("i-1")
    assert r.status_code == 202
    run_to_end(rt.worker, r.json["operation"])
    assert osb.wait("i-1")["state"] == "succeeded"
    assert osb.deprovision("i-1").status_code == 410
    assert rt.orchestrator.cloud.inventory("i-1") == []
    # Nothing of the failed attempt stands in the way of a new instance on the same volumes.
    again = rt.service.provision(ProvisionRequest(
        instance_id="i-1", service_id=SERVICE_ID, plan_id=GRS_PLAN, accepts_incomplete=True,
        organization_guid="o", space_guid="s", parameters=grs_params(0)))
    assert again.status == "accepted"
    assert op(rt, again.operation).type == OperationType.PROVISION
