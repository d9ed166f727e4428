"""Contract of the orchestrator seam, run against every backend shipped: the simulated cloud, and the
ibmcloud backend talking over HTTP to the fake IBM Cloud (a real server on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.app import build_runtime
from broker.domain.errors import PermanentBackendError
from broker.domain.protocols import StepContext
from broker.services.requests import ProvisionRequest
from broker.workflows.definitions import all_actions
from tests.conftest import GRS_PARAMS, GRS_PLAN, SERVICE_ID, make_settings
from tests.ibmfake import fake_cloud, ibmcloud_env


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


def test_backend_implements_every_action_every_workflow_names(backend) -> None:
    for service in backend.catalog.services:
        for plan in service.plans:
            missing = all_actions(plan) - backend.orchestrator.actions()
            assert not missing, f"{backend.orchestrator.name} lacks {sorted(missing)} for plan {plan.name}"


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


def test_remove_actions_tolerate_missing_resources(backend) -> None:
    ctx = _ctx(backend)
    for action in ("delete_replication_group", "disable_replication", "remove_auxiliary_volumes",
                   "delete_root_key", "delete_key_ring", "delete_dr_policy", "remove_orchestrator",
                   "revoke_all_bindings"):
        assert backend.orchestrator.perform(action, ctx) is not None


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
