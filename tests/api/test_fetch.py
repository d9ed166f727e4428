"""GET /v2/service_instances/:id (spec §2.5) and GET .../service_bindings/:id (§2.10)."""

from __future__ import annotations

import json

from tests.api.conftest import assert_error, page_of, pending_update
from tests.conftest import GRS_PARAMS, GRS_PLAN, KSYS_PARAMS, KSYS_PLAN, SERVICE_ID

INST = "/v2/service_instances/i-1"
BIND = "/v2/service_instances/i-1/service_bindings/b-1"
API_KEY = "customer-api-key-0123456789-SENSITIVE"


# --- instance ------------------------------------------------------------------------------------------

def test_fetch_instance_returns_200_with_the_spec_fields(ready_db, osb, worker):
    r = osb.get(f"{INST}?service_id={SERVICE_ID}&plan_id={GRS_PLAN}")
    assert r.status_code == 200
    assert r.json["service_id"] == SERVICE_ID and r.json["plan_id"] == GRS_PLAN
    assert page_of(r.json["dashboard_url"]) == "http://localhost/dashboard/instances/i-1"
    assert r.json["parameters"] == GRS_PARAMS
    assert r.json["maintenance_info"] == {"version": "1.0.0"}
    assert set(r.json["metadata"]) == {"labels", "attributes"}


def test_fetch_instance_is_available_right_after_provision_succeeded(osb, worker):
    osb.provision("i-1")
    assert osb.wait("i-1")["state"] == "succeeded"
    assert osb.get(INST).status_code == 200


def test_fetch_instance_of_unknown_instance_returns_404(osb):
    assert_error(osb.get("/v2/service_instances/nope"), 404, "NotFound")


def test_fetch_instance_while_provisioning_returns_404(osb, runtime):
    osb.provision("i-1")
    assert_error(osb.get(INST), 404, "NotFound")


def test_fetch_instance_of_a_failed_provision_returns_404(broker):
    b = broker(sim_faults="create_replication_group=fail")
    b.osb.provision("i-1")
    b.osb.wait("i-1")
    assert_error(b.osb.get(INST), 404, "NotFound")


def test_fetch_instance_after_deprovision_returns_404(ready_db, osb, worker):
    osb.deprovision("i-1")
    osb.wait("i-1")
    assert_error(osb.get(INST), 404, "NotFound")


def test_fetch_instance_while_an_update_runs_returns_422_concurrency_error(ready_db, osb, worker):
    worker.worker.stop(timeout=10)
    pending_update(osb, "i-1")
    assert_error(osb.get(INST), 422, "ConcurrencyError")


def test_fetch_instance_never_returns_the_api_key(osb, worker):
    # (a KSYS plan: grs-async refuses the key, it runs no orchestrator to use it)
    osb.ready("i-1", KSYS_PLAN, {**KSYS_PARAMS, "ibmcloud_api_key": API_KEY})
    r = osb.get(INST)
    assert r.status_code == 200
    assert "ibmcloud_api_key" not in r.json["parameters"]
    assert API_KEY not in r.get_data(as_text=True)
    assert r.json["parameters"]["primary_workspace_crn"] == GRS_PARAMS["primary_workspace_crn"]


def test_fetch_instance_never_returns_the_orchestrator_password(osb, worker):
    osb.ready("i-1", KSYS_PLAN, KSYS_PARAMS)
    r = osb.get(INST)
    assert r.status_code == 200
    assert "password" not in r.json["parameters"]["orchestrator"]
    assert r.json["parameters"]["orchestrator"]["name"] == "ksys-prod"
    assert KSYS_PARAMS["orchestrator"]["password"] not in r.get_data(as_text=True)


def test_fetch_instance_after_an_update_with_a_new_api_key_still_hides_it(osb, worker):
    osb.ready("i-1", KSYS_PLAN, KSYS_PARAMS)
    r = osb.patch(f"{INST}?accepts_incomplete=true",
                  {"service_id": SERVICE_ID, "parameters": {"ibmcloud_api_key": API_KEY}})
    assert r.status_code == 202
    osb.wait("i-1")
    assert API_KEY not in osb.get(INST).get_data(as_text=True)


def test_fetch_instance_with_invalid_id_returns_400(osb):
    assert_error(osb.get("/v2/service_instances/a%00b"), 400, "BadRequest")


# --- binding -------------------------------------------------------------------------------------------

def test_fetch_binding_returns_200_with_credentials_parameters_and_metadata(ready_db, osb, worker):
    created = osb.bind("i-1", "b-1", parameters={"purpose": "readonly"})
    assert created.status_code == 201
    r = osb.get(f"{BIND}?service_id={SERVICE_ID}&plan_id={GRS_PLAN}")
    assert r.status_code == 200
    assert r.json["credentials"] == created.json["credentials"]
    assert r.json["parameters"] == {"purpose": "readonly", "role": "Reader"}
    assert "metadata" in r.json


def test_fetch_binding_of_an_async_bind_returns_the_credentials_once_succeeded(ready_db, osb, worker):
    r = osb.put(f"{BIND}?accepts_incomplete=true", {"service_id": SERVICE_ID, "plan_id": GRS_PLAN})
    assert r.status_code == 202 and "credentials" not in r.json
    assert osb.wait_binding("i-1", "b-1")["state"] == "succeeded"
    fetched = osb.get(BIND)
    assert fetched.status_code == 200 and fetched.json["credentials"]["iam"]["apikey"]


def test_fetch_binding_while_bind_in_progress_returns_404(ready_db, osb, worker):
    worker.worker.stop(timeout=10)
    assert osb.put(f"{BIND}?accepts_incomplete=true",
                   {"service_id": SERVICE_ID, "plan_id": GRS_PLAN}).status_code == 202
    assert_error(osb.get(BIND), 404, "NotFound")


def test_fetch_binding_of_unknown_binding_returns_404(ready_db, osb, worker):
    assert_error(osb.get(BIND), 404, "NotFound")


def test_fetch_binding_of_unknown_instance_returns_404(osb):
    assert_error(osb.get("/v2/service_instances/nope/service_bindings/b-1"), 404, "NotFound")


def test_fetch_binding_after_unbind_returns_404(ready_db, osb, worker):
    osb.bind("i-1", "b-1")
    assert osb.unbind("i-1", "b-1").status_code == 200
    assert_error(osb.get(BIND), 404, "NotFound")


def test_fetch_binding_never_leaks_the_instance_secrets(osb, worker):
    osb.ready("i-1", KSYS_PLAN, {**KSYS_PARAMS, "ibmcloud_api_key": API_KEY})
    created = osb.bind("i-1", "b-1", plan=KSYS_PLAN)
    assert created.status_code == 201
    for text in (created.get_data(as_text=True), osb.get(BIND).get_data(as_text=True)):
        assert API_KEY not in text
        assert KSYS_PARAMS["orchestrator"]["password"] not in text
    assert "orchestrator" in json.loads(created.get_data())["credentials"]
