"""Contract of the orchestrator seam, run against every backend shipped: the simulated cloud, and the
ibmcloud backend talking over HTTP to the fake IBM Cloud (a real server on loopback)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from broker.app import build_runtime
from broker.domain.errors import PermanentBackendError
from broker.domain.models import OperationType
from broker.domain.protocols import StepContext
from broker.services.requests import ProvisionRequest
from broker.workflows.definitions import DR_ACTIONS, Step, all_actions, steps_for, variants
from tests.conftest import GRS_PARAMS, GRS_PLAN, SERVICE_ID, make_settings
from tests.ibmfake import fake_cloud, ibmcloud_env

# every runtime here starts on a database already at head (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("migrated_state_db")


@pytest.fixture(params=["simulated", "ibmcloud"])
def backend(request, tmp_path: Path):
    if request.param == "simulated":
        yield build_runtime(make_settings(tmp_path, orchestrator="simulated"))
        return
    with fake_cloud() as fake:
        yield build_runtime(make_settings(tmp_path, orchestrator="ibmcloud", ibmcloud_env=ibmcloud_env(fake.url)))


def _inventory_kinds(backend, instance_id: str) -> list[str]:
    orch = backend.orchestrator
    if orch.name == "simulated":
        return [r.kind for r in orch.cloud.inventory(instance_id)]
    return [kind for kind, _ in orch.inventory(instance_id, GRS_PARAMS)]


def _workflows(plan) -> dict[str, tuple[Step, ...]]:
    """Every workflow broker/workflows/definitions.py builds for ``plan``: each operation type, and each
    day-2 action in each mode."""
    flows = {op_type.value: steps_for(op_type, plan) for op_type in OperationType}
    for i, payload in enumerate(variants(plan)):  # a bind's purpose, an update's new API key
        for op_type in (OperationType.BIND, OperationType.UPDATE):
            flows[f"{op_type.value}/variant-{i}"] = steps_for(op_type, plan, payload)
    for name in DR_ACTIONS:
        for mode in ("planned", "unplanned"):
            flows[f"{name}/{mode}"] = steps_for(OperationType.UPDATE, plan, {"dr_action": {"type": name,
                                                                                          "mode": mode}})
    return flows


def _named(plan) -> set[str]:
    return {name for steps in _workflows(plan).values() for step in steps
            for name in (step.action, step.compensation) if name}


def test_backend_implements_every_action_every_workflow_names(backend) -> None:
    plans = [plan for service in backend.catalog.services for plan in service.plans]
    assert plans
    for plan in plans:
        named = _named(plan)
        assert named == all_actions(plan)  # the engine's own list says the same
        missing = named - backend.orchestrator.actions()
        assert not missing, f"{backend.orchestrator.name} lacks {sorted(missing)} for plan {plan.name}"
        for action in sorted(named):
            assert backend.orchestrator.expected_seconds(action) >= 0, action


def _ctx(backend, action_plan: str = "grs-async", **kw) -> StepContext:
    plan = backend.catalog.find_plan(action_plan)
    base = dict(operation_id="op-1", operation_type="provision", instance_id="contract-1", plan=plan,
                parameters=dict(GRS_PARAMS))
    base.update(kw)
    return StepContext(**base)


def test_create_actions_are_idempotent(backend) -> None:
    orch = backend.orchestrator
    ctx = _ctx(backend)
    for action in ("create_dr_policy", "enable_replication", "create_replication_group"):
        first = dict(orch.perform(action, ctx))
        again = dict(orch.perform(action, ctx))
        # IBM's transaction ids differ per call by nature; everything else must be the same.
        first.pop("ibm_transaction_ids", None)
        again.pop("ibm_transaction_ids", None)
        assert first == again, action
    kinds = _inventory_kinds(backend, "contract-1")
    assert "volume_group" in kinds and kinds.count("volume_group") == 1, kinds
    if orch.name == "simulated":
        assert len(kinds) == len(set(kinds)), kinds


def _removals(plan) -> list[str]:
    """What a deprovision runs, and what undoes a provision step: each must cope with nothing being there."""
    flows = _workflows(plan)
    names = [s.action for s in flows["deprovision"]]
    names += [s.compensation for s in flows["provision"] if s.compensation and s.compensation not in names]
    return names


def test_remove_actions_tolerate_missing_resources(backend) -> None:
    plan = backend.catalog.find_plan("ksys-managed-byok")  # the plan with every part: keys, orchestrators
    removals = _removals(plan)
    assert {"delete_replication_group", "remove_orchestrator", "delete_root_key"} <= set(removals)
    ctx = _ctx(backend, "ksys-managed-byok")
    for action in removals:
        result = backend.orchestrator.perform(action, ctx)  # no resource exists: nothing to fail on
        assert isinstance(result, Mapping), (action, result)
        assert "credentials" not in result, action
    assert _inventory_kinds(backend, "contract-1") == []  # and nothing was made on the way


def _run_steps(orch, steps, ctx: StepContext) -> dict:
    """Perform ``steps`` in order, each seeing what the earlier ones returned, as the engine runs them."""
    outputs: dict = {}
    results: dict = {}
    for step in steps:
        result = dict(orch.perform(step.action, replace(ctx, outputs=dict(outputs))))
        results[step.action] = result
        credentials = result.pop("credentials", None)  # the engine keeps these out of later steps' view
        outputs.update(result)
        if credentials is not None:
            results[step.action]["credentials"] = credentials
    return results


def test_bind_outputs_carry_what_the_later_bind_steps_read(backend) -> None:
    plan = backend.catalog.find_plan("grs-async")
    steps = steps_for(OperationType.BIND, plan)
    assert steps[0].action == "create_service_id" and steps[-1].action == "issue_credentials"
    ctx = _ctx(backend, operation_type="bind", binding_id="b-contract", operation_id="op-bind")
    results = _run_steps(backend.orchestrator, steps, ctx)
    made = results["create_service_id"]
    assert made["serviceid_created"] is True
    assert made["serviceid_crn"].startswith("crn:v1:bluemix:public:iam-identity::a/")
    credentials = results["issue_credentials"]["credentials"]
    # issue_credentials read the service ID the first step made (from the outputs), not one of its own
    assert credentials["iam"]["serviceid_crn"] == made["serviceid_crn"]
    assert credentials["iam"]["apikey"]


def test_replication_outputs_carry_the_state_the_engine_records(backend) -> None:
    backend.service.provision(ProvisionRequest(
        instance_id="contract-1", service_id=SERVICE_ID, plan_id=GRS_PLAN, accepts_incomplete=True,
        organization_guid="o", space_guid="s", parameters=dict(GRS_PARAMS)))
    plan = backend.catalog.find_plan("grs-async")
    provision = [s for s in steps_for(OperationType.PROVISION, plan)
                 if s.action in ("create_dr_policy", "enable_replication", "create_replication_group",
                                 "wait_consistent_copying")]
    results = _run_steps(backend.orchestrator, provision, _ctx(backend))
    # the engine merges outputs["dr_state"] into the instance's DR state: it must say what the storage says
    status = backend.orchestrator.replication_status("contract-1")
    assert status is not None
    assert results["wait_consistent_copying"]["dr_state"] == {"replication": status.state}
    assert status.state == "consistent_copying"


def test_unknown_action_is_a_permanent_error(backend) -> None:
    with pytest.raises(PermanentBackendError):
        backend.orchestrator.perform("no_such_action", _ctx(backend))


def test_replication_status_is_none_before_provisioning(backend) -> None:
    assert backend.orchestrator.replication_status("never-provisioned") is None


def test_expected_seconds_is_never_negative(backend) -> None:
    assert all(backend.orchestrator.expected_seconds(a) >= 0 for a in backend.orchestrator.actions())


def test_check_protection_names_the_parameter(backend) -> None:
    problems = backend.orchestrator.check_protection(GRS_PARAMS["primary_workspace_crn"],
                                                     GRS_PARAMS["secondary_workspace_crn"], ["nope"])
    assert problems and all(p.startswith("parameters.") for p in problems)


def test_bulk_replication_status_reports_what_each_instance_reports(backend) -> None:
    # The ibmcloud backend finds the workspace through the stored instance's parameters.
    backend.service.provision(ProvisionRequest(
        instance_id="contract-1", service_id=SERVICE_ID, plan_id=GRS_PLAN, accepts_incomplete=True,
        organization_guid="o", space_guid="s", parameters=dict(GRS_PARAMS)))
    orch = backend.orchestrator
    for action in ("enable_replication", "create_replication_group"):
        orch.perform(action, _ctx(backend))
    ids = ["contract-1", "never-provisioned"]
    bulk = orch.replication_statuses(ids)
    assert set(bulk) == {"contract-1"}
    assert bulk == {iid: s for iid in ids if (s := orch.replication_status(iid)) is not None}
    assert orch.replication_statuses([]) == {}
