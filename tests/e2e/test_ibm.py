"""An IBM Cloud-shaped lifecycle over real HTTP: OSB 2.12, URL-encoded CRN ids with %3A and %2F, the
``ibmcloud`` context without org/space GUIDs, IBM's originating identity, and the /bluemix_v1 extension."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from tests.conftest import ACCOUNT, GRS_PARAMS, GRS_PLAN, SERVICE_ID
from tests.e2e.conftest import BrokerProcess, Client, ibm_identity, query

IAM_ID = "IBMid-550000ABCD"
INSTANCE_CRN = f"crn:v1:bluemix:public:powervs-dr:us-south:a/{ACCOUNT}:{uuid.UUID(int=0x1234)}::"
KEY_CRN = (f"crn:v1:bluemix:public:powervs-dr:us-south:a/{ACCOUNT}:{uuid.UUID(int=0x1234)}:"
           f"resource-key:{uuid.UUID(int=0x5678)}")
SERVICEID_CRN = f"crn:v1:bluemix:public:iam-identity::a/{ACCOUNT}::serviceid:ServiceId-{uuid.UUID(int=0x9abc)}"
CONTEXT = {
    "platform": "ibmcloud",
    "account_id": ACCOUNT,
    "crn": INSTANCE_CRN,
    "resource_group_crn": f"crn:v1:bluemix:public:resource-controller::a/{ACCOUNT}::resource-group:"
                          "0fedcba9876543210fedcba987654321",
    "target_crn": "crn:v1:bluemix:public:globalcatalog::::deployment:powervs-dr-us-south",
}


def test_ibm_shaped_lifecycle(broker_factory: Callable[..., BrokerProcess], client_for: Callable[..., Client],
                              db_path: Path) -> None:
    broker = broker_factory(db_path, DRBROKER_SIM_STEP_SECONDS="0.05")
    ibm = client_for(broker, version="2.12", headers={"X-Broker-API-Originating-Identity": ibm_identity(IAM_ID)})
    iid = quote(INSTANCE_CRN, safe="")
    bid = quote(KEY_CRN, safe="")
    assert "%3A" in iid and "%2F" in iid and "%2F" in bid
    instance_path = f"/v2/service_instances/{iid}"
    binding_path = f"{instance_path}/service_bindings/{bid}"
    bluemix_path = f"/bluemix_v1/service_instances/{iid}"
    ids = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN}

    r = ibm.get("/v2/catalog")
    assert r.status_code == 200, r.text

    # provision: IBM's body has a context and no org/space GUIDs; dashboard_url is in the first response
    body = {**ids, "context": CONTEXT, "parameters": {**GRS_PARAMS, "location": "us-south"}}
    r = ibm.put(f"{instance_path}?accepts_incomplete=true", body)
    assert r.status_code == 202, r.text
    first = r.json()
    assert first["operation"]
    assert first["dashboard_url"].startswith(broker.url + "/dashboard/instances/")
    assert first["dashboard_url"].split("?")[0].endswith(quote(INSTANCE_CRN, safe=""))
    r = ibm.get(f"{instance_path}/last_operation", params={"operation": first["operation"]})
    assert r.status_code == 200 and r.json()["state"] in ("in progress", "succeeded"), r.text
    assert ibm.wait(iid, timeout=30)["state"] == "succeeded"

    r = ibm.get(instance_path)
    assert r.status_code == 200, r.text
    # the same dashboard page, in a freshly signed link (docs/dashboard.md)
    assert r.json()["dashboard_url"].split("?")[0] == first["dashboard_url"].split("?")[0]
    assert r.json()["parameters"]["location"] == "us-south"
    dashboard = ibm.get(first["dashboard_url"][len(broker.url):])
    assert dashboard.status_code == 200 and INSTANCE_CRN in dashboard.text

    # the instance is stored under the decoded CRN
    (row,) = query(db_path, "SELECT id, context, organization_guid, space_guid FROM instances")
    assert row["id"] == INSTANCE_CRN
    assert json.loads(row["context"]) == CONTEXT
    assert row["organization_guid"] is None and row["space_guid"] is None

    # disable: binds are refused, the state says so
    r = ibm.put(bluemix_path, {"enabled": False, "initiator_id": IAM_ID, "reason_code": "billing"})
    assert r.status_code == 204, r.text
    r = ibm.get(bluemix_path)
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is False and r.json()["active"] is False
    assert isinstance(r.json()["last_active"], int)
    r = ibm.put(binding_path, {**ids, "bind_resource": {"serviceid_crn": SERVICEID_CRN}})
    assert r.status_code == 422, r.text
    assert "disabled" in r.json()["description"]
    assert query(db_path, "SELECT COUNT(*) AS n FROM bindings") == [{"n": 0}]

    # enable again, then bind with IBM's serviceid_crn
    r = ibm.put(bluemix_path, {"enabled": True})
    assert r.status_code == 204, r.text
    assert ibm.get(bluemix_path).json()["enabled"] is True
    assert ibm.get(bluemix_path).json()["active"] is True
    r = ibm.put(binding_path, {**ids, "bind_resource": {"serviceid_crn": SERVICEID_CRN}})
    assert r.status_code == 201, r.text
    credentials = r.json()["credentials"]
    assert credentials["iam"]["serviceid_crn"] == SERVICEID_CRN
    r = ibm.get(binding_path)
    assert r.status_code == 200 and r.json()["credentials"] == credentials, r.text
    (binding,) = query(db_path, "SELECT instance_id, id, state FROM bindings")
    assert binding == {"instance_id": INSTANCE_CRN, "id": KEY_CRN, "state": "bound"}

    # unbind, deprovision, gone
    r = ibm.delete(binding_path, params=ids)
    assert r.status_code == 200, r.text
    r = ibm.delete(instance_path, params={**ids, "accepts_incomplete": "true"})
    assert r.status_code == 202, r.text
    assert ibm.wait(iid, timeout=30)["state"] == "succeeded"
    assert ibm.delete(instance_path, params={**ids, "accepts_incomplete": "true"}).status_code == 410
    assert ibm.get(bluemix_path).status_code == 404

    # the originating identity is on every operation's record
    ops = query(db_path, "SELECT type, state, originating_identity FROM operations ORDER BY created_at")
    assert [(o["type"], o["state"]) for o in ops] == [
        ("provision", "succeeded"), ("bind", "succeeded"), ("unbind", "succeeded"), ("deprovision", "succeeded")]
    for op in ops:
        assert json.loads(op["originating_identity"]) == {"platform": "ibmcloud", "value": {"iam_id": IAM_ID}}, op
