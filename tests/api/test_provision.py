"""PUT /v2/service_instances/:instance_id (spec §2.2)."""

from __future__ import annotations

import json

import pytest

from broker.domain.models import InstanceState, OperationType
from tests.api.conftest import assert_rejected, page_of, snapshot
from tests.conftest import GRS_PARAMS, GRS_PLAN, KSYS_PARAMS, KSYS_PLAN, SERVICE_ID

URL = "/v2/service_instances/i-1?accepts_incomplete=true"


def body(**changes):
    base = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "organization_guid": "org-1",
            "space_guid": "space-1", "parameters": dict(GRS_PARAMS)}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def instance(runtime, iid="i-1"):
    with runtime.store.read() as tx:
        return tx.get_instance(iid)


# --- success -------------------------------------------------------------------------------------------

def test_provision_returns_202_with_operation_and_dashboard_url_in_first_response(osb, runtime):
    r = osb.put(URL, body())
    assert r.status_code == 202, r.get_data(as_text=True)
    assert r.json["operation"]
    assert page_of(r.json["dashboard_url"]) == "http://localhost/dashboard/instances/i-1"
    inst = instance(runtime)
    assert inst.state == InstanceState.PROVISIONING
    with runtime.store.read() as tx:
        op = tx.get_operation(r.json["operation"])
    assert op.type == OperationType.PROVISION and op.instance_id == "i-1"


def test_provision_uses_the_public_url_for_dashboard_url(broker):
    b = broker(start=False, public_url="https://dr.example.com/")
    r = b.osb.put(URL, body())
    assert r.status_code == 202
    assert page_of(r.json["dashboard_url"]) == "https://dr.example.com/dashboard/instances/i-1"


def test_provision_completes_and_last_operation_succeeds(osb, worker):
    assert osb.put(URL, body()).status_code == 202
    assert osb.wait("i-1")["state"] == "succeeded"
    assert instance(worker).state == InstanceState.READY


def test_provision_applies_schema_defaults(osb, runtime):
    params = {k: v for k, v in GRS_PARAMS.items() if k != "rpo_target_minutes"}
    assert osb.put(URL, body(parameters=params)).status_code == 202
    assert instance(runtime).parameters["rpo_target_minutes"] == 60


def test_provision_with_matching_maintenance_info_returns_202(osb, runtime):
    r = osb.put(URL, body(maintenance_info={"version": "1.0.0", "description": "x"}))
    assert r.status_code == 202, r.get_data(as_text=True)
    assert instance(runtime).maintenance_version == "1.0.0"


def test_provision_ksys_plan_returns_202(osb, worker):
    r = osb.put(URL, body(plan_id=KSYS_PLAN, parameters=KSYS_PARAMS))
    assert r.status_code == 202, r.get_data(as_text=True)
    assert osb.wait("i-1")["state"] == "succeeded"


# --- 422 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["", "?accepts_incomplete=false"])
def test_provision_without_accepts_incomplete_returns_422_async_required(osb, runtime, query):
    before = snapshot(runtime)
    r = osb.put(f"/v2/service_instances/i-1{query}", body())
    b = assert_rejected(runtime, before, r, 422, "AsyncRequired")
    assert "accepts_incomplete=true" in b["description"]


def test_provision_with_other_maintenance_version_returns_422_maintenance_info_conflict(osb, runtime):
    before = snapshot(runtime)
    r = osb.put(URL, body(maintenance_info={"version": "2.0.0"}))
    b = assert_rejected(runtime, before, r, 422, "MaintenanceInfoConflict")
    assert "2.0.0" in b["description"] and "1.0.0" in b["description"]


# --- 400 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "field"), [
    ({"service_id": ...}, "service_id"),
    ({"plan_id": ...}, "plan_id"),
    ({"service_id": ""}, "service_id"),
    ({"plan_id": ""}, "plan_id"),
    ({"service_id": None}, "service_id"),
    ({"service_id": 42}, "service_id"),
    ({"plan_id": ["x"]}, "plan_id"),
    ({"service_id": "b5a0a0c8-0000-0000-0000-000000000000"}, "service_id"),
    ({"plan_id": "b5a0a0c8-0000-0000-0000-000000000000"}, "plan_id"),
    ({"parameters": "rpo=15"}, "parameters"),
    ({"parameters": [GRS_PARAMS]}, "parameters"),
    ({"context": "cf"}, "context"),
    ({"organization_guid": 7}, "organization_guid"),
    ({"space_guid": {"a": 1}}, "space_guid"),
    ({"organization_guid": "x" * 300}, "organization_guid"),
    ({"maintenance_info": "1.0.0"}, "maintenance_info"),
    ({"maintenance_info": {}}, "maintenance_info.version"),
    ({"maintenance_info": {"version": 1}}, "maintenance_info.version"),
    ({"organization_guid": ...}, "organization_guid"),
    ({"space_guid": ...}, "space_guid"),
    ({"organization_guid": ..., "space_guid": ...}, "organization_guid and space_guid"),
    ({"organization_guid": "", "context": {"platform": ""}}, "organization_guid"),
])
def test_provision_malformed_or_missing_field_returns_400_naming_the_field(osb, runtime, change, field):
    before = snapshot(runtime)
    r = osb.put(URL, body(**change))
    b = assert_rejected(runtime, before, r, 400, "BadRequest")
    assert b["description"].startswith(field), b


@pytest.mark.parametrize("raw", [b"", b"   ", b"{", b"{'service_id': 1}", b"[]", b'"text"', b"null", b"42",
                                 b"\xff\xfe{}", b'{"a": NaN', b"[" * 5000 + b"]" * 5000,
                                 json.dumps({"parameters": {"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]
                                                                 ]]]]]]]]]]]]]]]]]]}}).encode()])
def test_provision_malformed_json_body_returns_400(osb, runtime, raw):
    before = snapshot(runtime)
    r = osb.put(URL, raw)
    b = assert_rejected(runtime, before, r, 400, "BadRequest")
    assert b["description"].startswith("body")


@pytest.mark.parametrize("value", ["yes", "True", "1", "", "TRUE", "true,false"])
def test_provision_non_boolean_accepts_incomplete_returns_400(osb, runtime, value):
    before = snapshot(runtime)
    r = osb.put(f"/v2/service_instances/i-1?accepts_incomplete={value}", body())
    b = assert_rejected(runtime, before, r, 400, "BadRequest")
    assert "accepts_incomplete" in b["description"]


def test_provision_unknown_parameter_is_rejected_naming_the_field(osb, runtime):
    before = snapshot(runtime)
    r = osb.put(URL, body(parameters={**GRS_PARAMS, "rpo_taget_minutes": 5}))
    b = assert_rejected(runtime, before, r, 400, "InvalidParameters")
    assert "rpo_taget_minutes" in b["description"]


@pytest.mark.parametrize(("params", "field"), [
    ({**GRS_PARAMS, "rpo_target_minutes": 0}, "parameters.rpo_target_minutes"),
    ({**GRS_PARAMS, "rpo_target_minutes": "15"}, "parameters.rpo_target_minutes"),
    ({**GRS_PARAMS, "protected_volumes": []}, "parameters.protected_volumes"),
    ({**GRS_PARAMS, "protected_volumes": ["v", "v"]}, "parameters.protected_volumes"),
    ({**GRS_PARAMS, "protected_volumes": ["v", 3]}, "parameters.protected_volumes[1]"),
    ({**GRS_PARAMS, "primary_workspace_crn": "crn:v1:nope"}, "parameters.primary_workspace_crn"),
    ({k: v for k, v in GRS_PARAMS.items() if k != "secondary_workspace_crn"}, "secondary_workspace_crn"),
])
def test_provision_parameters_failing_the_plan_schema_return_400_naming_the_field(osb, runtime, params, field):
    before = snapshot(runtime)
    r = osb.put(URL, body(parameters=params))
    b = assert_rejected(runtime, before, r, 400, "InvalidParameters")
    assert field in b["description"]


def test_provision_ksys_without_orchestrator_returns_400(osb, runtime):
    before = snapshot(runtime)
    r = osb.put(URL, body(plan_id=KSYS_PLAN, parameters=GRS_PARAMS))
    b = assert_rejected(runtime, before, r, 400, "InvalidParameters")
    assert "orchestrator" in b["description"]


@pytest.mark.parametrize("iid", ["%00", "a%0Ab", "x" * 256, "%FF", "%C3%28"])
def test_provision_invalid_instance_id_returns_400(osb, runtime, iid):
    before = snapshot(runtime)
    r = osb.put(f"/v2/service_instances/{iid}?accepts_incomplete=true", body())
    b = assert_rejected(runtime, before, r, 400, "BadRequest")
    assert b["description"].startswith("instance_id")


def test_provision_without_org_and_space_is_accepted_when_context_platform_is_set(osb, runtime):
    r = osb.put(URL, body(organization_guid=..., space_guid=...,
                          context={"platform": "kubernetes", "namespace": "ns", "clusterid": "c"}))
    assert r.status_code == 202, r.get_data(as_text=True)
    assert instance(runtime).context["platform"] == "kubernetes"


def test_provision_accepts_the_cloud_foundry_context(osb):
    ctx = {"platform": "cloudfoundry", "organization_guid": "org-1", "space_guid": "space-1",
           "organization_name": "o", "space_name": "s", "instance_name": "dr"}
    assert osb.put(URL, body(context=ctx)).status_code == 202


def test_provision_different_attributes_of_a_failed_provision_returns_409(broker):
    b = broker(sim_faults="create_replication_group=fail")
    b.osb.put(URL, body())
    assert b.osb.wait("i-1")["state"] == "failed"
    before = snapshot(b.runtime)
    assert_rejected(b.runtime, before, b.osb.put(URL, body(space_guid="space-9")), 409, "Conflict")


def test_provision_error_is_never_a_5xx_for_a_client_mistake(osb, runtime):
    before = snapshot(runtime)
    for raw in (body(parameters=None, plan_id=None), body(context=[]), body(maintenance_info=[]),
                body(parameters={"orchestrator": {"password": 1}})):
        r = osb.put(URL, raw)
        assert 400 <= r.status_code < 500, r.get_data(as_text=True)
        assert_rejected(runtime, before, r, r.status_code)


SECRET = "Sup3r-SECRET-value"


@pytest.mark.parametrize(("plan", "params", "field"), [
    (GRS_PLAN, {**GRS_PARAMS, "ibmcloud_api_key": SECRET * 20}, "parameters.ibmcloud_api_key"),
    (GRS_PLAN, {**GRS_PARAMS, "ibmcloud_api_key": ""}, "parameters.ibmcloud_api_key"),
    (GRS_PLAN, {**GRS_PARAMS, "ibmcloud_api_key": 12345}, "parameters.ibmcloud_api_key"),
    (GRS_PLAN, {**GRS_PARAMS, "ibmcloud_api_key": [SECRET]}, "parameters.ibmcloud_api_key"),
    (GRS_PLAN, {**GRS_PARAMS, "ibmcloud_api_key": SECRET, "rpo_target_minutes": 0},
     "parameters.rpo_target_minutes"),
    (GRS_PLAN, {**GRS_PARAMS, "ibmcloud_api_key": SECRET, "unknown": 1}, "unknown"),
    (KSYS_PLAN, {**GRS_PARAMS, "orchestrator": {"name": "ksys", "password": "Sup3r"}},
     "parameters.orchestrator.password"),
    (KSYS_PLAN, {**GRS_PARAMS, "orchestrator": {"name": "ksys", "password": {"v": SECRET}}},
     "parameters.orchestrator.password"),
    (KSYS_PLAN, {**GRS_PARAMS, "orchestrator": {"name": "bad name!", "password": SECRET}},
     "parameters.orchestrator.name"),
    (KSYS_PLAN, {**GRS_PARAMS, "orchestrator": {"password": SECRET}}, "parameters.orchestrator"),
    (KSYS_PLAN, {**GRS_PARAMS, "orchestrator": {"name": "k", "password": SECRET, "pasword": SECRET}},
     "parameters.orchestrator"),
    (KSYS_PLAN, {**GRS_PARAMS, "orchestrator": [{"name": "k", "password": SECRET}]}, "parameters.orchestrator"),
])
def test_provision_error_never_echoes_a_sensitive_value(osb, runtime, plan, params, field):
    before = snapshot(runtime)
    r = osb.put(URL, body(plan_id=plan, parameters=params))
    b = assert_rejected(runtime, before, r, 400, "InvalidParameters")
    assert field in b["description"]
    assert "Sup3r" not in r.get_data(as_text=True)
