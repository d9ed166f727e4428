"""IBM Cloud: URL-encoded CRN ids with %2F, 2.12 requests with context.platform and no org/space, the
``ibmcloud`` originating identity, ``bind_resource.serviceid_crn``, and ``/bluemix_v1`` enable/disable."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from broker.domain.models import InstanceState
from tests.api.conftest import assert_error, assert_rejected, identity, operation_row, page_of, snapshot
from tests.conftest import ACCOUNT, GRS_PARAMS, GRS_PLAN, HEADERS, SERVICE_ID, auth_header

INSTANCE_CRN = f"crn:v1:bluemix:public:powervs-dr:us-south:a/{ACCOUNT}:8d7e6f5a-4b3c-4d2e-9f1a-0b9c8d7e6f5a::"
BINDING_CRN = f"crn:v1:bluemix:public:powervs-dr:us-south:a/{ACCOUNT}:8d7e6f5a-4b3c-4d2e-9f1a-0b9c8d7e6f5a:" \
              "resource-binding:5c4b3a29-1807-4f6e-8d5c-4b3a29180706"
IID = quote(INSTANCE_CRN, safe="")
BID = quote(BINDING_CRN, safe="")
IBM_HEADERS = {"X-Broker-API-Version": "2.12",
               "X-Broker-API-Originating-Identity": identity("ibmcloud", {"iam_id": "IBMid-310000ABCD"})}
CONTEXT = {"platform": "ibmcloud", "account_id": ACCOUNT, "crn": INSTANCE_CRN,
           "resource_group_crn": f"crn:v1:bluemix:public:resource-controller::a/{ACCOUNT}::resource-group:rg1",
           "target_crn": "crn:v1:bluemix:public:globalcatalog::::deployment:powervs-dr-us-south"}
STATE = f"/bluemix_v1/service_instances/{IID}"


def ibm_provision(osb):
    body = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "context": CONTEXT,
            "parameters": {**GRS_PARAMS, "location": "us-south"}}
    return osb.put(f"/v2/service_instances/{IID}?accepts_incomplete=true", body, headers=IBM_HEADERS)


@pytest.fixture
def ibm_ready(osb, worker):
    r = ibm_provision(osb)
    assert r.status_code == 202, r.get_data(as_text=True)
    assert osb.wait(IID)["state"] == "succeeded"
    return worker


def test_ibm_instance_crn_id_is_encoded_with_percent_2f():
    assert "%2F" in IID and "%3A" in IID and "/" not in IID


def test_ibm_provision_with_crn_id_2_12_and_no_org_space_returns_202(osb, runtime):
    r = ibm_provision(osb)
    assert r.status_code == 202, r.get_data(as_text=True)
    assert page_of(r.json["dashboard_url"]).endswith(f"/dashboard/instances/{IID}")
    with runtime.store.read() as tx:
        inst = tx.get_instance(INSTANCE_CRN)
    assert inst is not None and inst.context == CONTEXT
    assert inst.organization_guid is None and inst.space_guid is None


def test_ibm_originating_identity_is_stored_on_the_operation(osb, runtime):
    op = operation_row(runtime, ibm_provision(osb).json["operation"])
    assert op.originating_identity == {"platform": "ibmcloud", "value": {"iam_id": "IBMid-310000ABCD"}}


def test_ibm_full_lifecycle_on_crn_ids(osb, ibm_ready):
    base = f"/v2/service_instances/{IID}"
    assert osb.get(f"{base}/last_operation", headers=IBM_HEADERS).json["state"] == "succeeded"
    fetched = osb.get(base, headers=IBM_HEADERS)
    assert fetched.status_code == 200 and fetched.json["plan_id"] == GRS_PLAN
    dashboard = osb.get(fetched.json["dashboard_url"].replace("http://localhost", ""))
    assert dashboard.status_code == 200 and INSTANCE_CRN in dashboard.get_data(as_text=True)

    bind = osb.put(f"{base}/service_bindings/{BID}", {"service_id": SERVICE_ID, "plan_id": GRS_PLAN,
                                                      "context": CONTEXT}, headers=IBM_HEADERS)
    assert bind.status_code == 201, bind.get_data(as_text=True)
    with ibm_ready.store.read() as tx:
        assert tx.get_binding(INSTANCE_CRN, BINDING_CRN) is not None
    assert osb.get(f"{base}/service_bindings/{BID}", headers=IBM_HEADERS).status_code == 200
    assert osb.get(f"{base}/service_bindings/{BID}/last_operation", headers=IBM_HEADERS).json["state"] == "succeeded"
    unbind = osb.delete(f"{base}/service_bindings/{BID}?service_id={SERVICE_ID}&plan_id={GRS_PLAN}",
                        headers=IBM_HEADERS)
    assert unbind.status_code == 200

    gone = osb.delete(f"{base}?service_id={SERVICE_ID}&plan_id={GRS_PLAN}&accepts_incomplete=true",
                      headers=IBM_HEADERS)
    assert gone.status_code == 202
    assert osb.wait(IID)["state"] == "succeeded"
    again = osb.delete(f"{base}?service_id={SERVICE_ID}&plan_id={GRS_PLAN}&accepts_incomplete=true",
                       headers=IBM_HEADERS)
    assert_error(again, 410, "Gone")


def test_ibm_bind_resource_serviceid_crn_is_used_in_credentials(osb, ibm_ready):
    crn = f"crn:v1:bluemix:public:iam-identity::a/{ACCOUNT}::serviceid:ServiceId-8f7e6d5c"
    r = osb.put(f"/v2/service_instances/{IID}/service_bindings/{BID}",
                {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "bind_resource": {"serviceid_crn": crn}},
                headers=IBM_HEADERS)
    assert r.status_code == 201
    assert r.json["credentials"]["iam"]["serviceid_crn"] == crn


# --- /bluemix_v1 ---------------------------------------------------------------------------------------

def test_bluemix_v1_get_returns_enabled_active_last_active(osb, ibm_ready):
    r = osb.get(STATE)
    assert r.status_code == 200
    assert r.json["enabled"] is True and r.json["active"] is True
    assert isinstance(r.json["last_active"], int) and r.json["last_active"] > 0


def test_bluemix_v1_put_disable_returns_204_and_get_shows_it(osb, ibm_ready):
    r = osb.put(STATE, {"enabled": False, "initiator_id": "billing", "reason_code": "IBMCLOUD_ACCT_SUSPEND"})
    assert r.status_code == 204 and r.get_data() == b""
    state = osb.get(STATE).json
    assert state["enabled"] is False and state["active"] is False


def test_disabled_instance_refuses_bind_with_a_description(osb, ibm_ready):
    osb.put(STATE, {"enabled": False})
    before = snapshot(ibm_ready)
    r = osb.put(f"/v2/service_instances/{IID}/service_bindings/{BID}",
                {"service_id": SERVICE_ID, "plan_id": GRS_PLAN}, headers=IBM_HEADERS)
    body = assert_rejected(ibm_ready, before, r, 422, "InstanceDisabled")
    assert "disabled" in body["description"]


def test_disabled_instance_keeps_replicating(osb, ibm_ready):
    osb.put(STATE, {"enabled": False})
    with ibm_ready.store.read() as tx:
        assert tx.get_instance(INSTANCE_CRN).state == InstanceState.READY
    kinds = {r.kind for r in ibm_ready.orchestrator.cloud.inventory(INSTANCE_CRN)}
    assert "volume_group" in kinds
    # instance metadata on fetch is a 2.17 field (broker/api/versions.py); IBM's 2.12 never fetches instances
    fetched = osb.get(f"/v2/service_instances/{IID}", headers={**IBM_HEADERS, "X-Broker-API-Version": "2.17"})
    assert fetched.status_code == 200 and fetched.json["metadata"]["attributes"]["enabled"] is False


def test_re_enabled_instance_accepts_bind_again(osb, ibm_ready):
    osb.put(STATE, {"enabled": False})
    assert osb.put(STATE, {"enabled": True}).status_code == 204
    state = osb.get(STATE).json
    assert state["enabled"] is True and state["active"] is True
    r = osb.put(f"/v2/service_instances/{IID}/service_bindings/{BID}",
                {"service_id": SERVICE_ID, "plan_id": GRS_PLAN}, headers=IBM_HEADERS)
    assert r.status_code == 201


@pytest.mark.parametrize("body", [{}, {"enabled": "false"}, {"enabled": 0}, {"enabled": None}, b"{", b"[]", b""])
def test_bluemix_v1_put_without_boolean_enabled_returns_400(osb, ibm_ready, body):
    before = snapshot(ibm_ready)
    r = osb.put(STATE, body)
    assert_rejected(ibm_ready, before, r, 400, "BadRequest")


def test_bluemix_v1_unknown_instance_returns_404(osb, runtime):
    assert_error(osb.get("/bluemix_v1/service_instances/nope"), 404, "NotFound")
    before = snapshot(runtime)
    assert_rejected(runtime, before, osb.put("/bluemix_v1/service_instances/nope", {"enabled": False}), 404)


def test_bluemix_v1_requires_credentials(client, ibm_ready):
    assert_error(client.get(STATE), 401, "Unauthorized")
    before = snapshot(ibm_ready)
    r = client.put(STATE, json={"enabled": False}, headers={"Authorization": auth_header("platform", "bad")})
    assert_rejected(ibm_ready, before, r, 401, "Unauthorized")
    assert client.get(STATE, headers=HEADERS).json["enabled"] is True


def test_bluemix_v1_malformed_originating_identity_returns_400(osb, ibm_ready):
    before = snapshot(ibm_ready)
    r = osb.put(STATE, {"enabled": False}, headers={"X-Broker-API-Originating-Identity": "ibmcloud %%%"})
    assert_rejected(ibm_ready, before, r, 400, "BadRequest")
    assert osb.get(STATE).json["enabled"] is True
