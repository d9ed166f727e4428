"""Regression tests for each gap of openbrokerapi 4.7.x that our own HTTP adapter closes (see the checklist,
"Known gaps of openbrokerapi 4.7.x"). Each test names the gap it guards."""

from __future__ import annotations

import logging
import os
import time
from urllib.parse import quote

import pytest
import yaml

from tests.api.conftest import assert_error, assert_rejected, identity, snapshot
from tests.conftest import (
    ACCOUNT,
    GRS_PARAMS,
    GRS_PLAN,
    KSYS_PARAMS,
    KSYS_PLAN,
    PASSWORD,
    ROOT,
    SERVICE_ID,
    auth_header,
    grs_params,
)

PROVISION = "/v2/service_instances/i-1?accepts_incomplete=true"
BODY = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "organization_guid": "o", "space_guid": "s",
        "parameters": GRS_PARAMS}


def test_gap_version_2_12_is_accepted_for_every_call(osb, worker):
    v212 = {"X-Broker-API-Version": "2.12"}
    assert osb.get("/v2/catalog", headers=v212).status_code == 200
    assert osb.put(PROVISION, BODY, headers=v212).status_code == 202
    assert osb.get("/v2/service_instances/i-1/last_operation", headers=v212).status_code == 200
    osb.wait("i-1")
    assert osb.put("/v2/service_instances/i-1/service_bindings/b-1",
                   {"service_id": SERVICE_ID, "plan_id": GRS_PLAN}, headers=v212).status_code == 201


def test_gap_ids_with_encoded_slash_are_routed_not_404(osb, worker):
    iid = quote(f"crn:v1:bluemix:public:powervs-dr:us-south:a/{ACCOUNT}:0f1e2d3c-4b5a-4697-8877-665544332211::",
                safe="")
    r = osb.put(f"/v2/service_instances/{iid}?accepts_incomplete=true", BODY)
    assert r.status_code == 202, r.get_data(as_text=True)
    assert osb.wait(iid)["state"] == "succeeded"
    bid = quote("a/b/c", safe="")
    assert osb.bind(iid, bid).status_code == 201
    assert osb.get(f"/v2/service_instances/{iid}/service_bindings/{bid}").status_code == 200


def test_gap_no_org_or_space_needed_when_context_platform_is_set(osb, runtime):
    body = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "parameters": GRS_PARAMS,
            "context": {"platform": "ibmcloud", "account_id": ACCOUNT}}
    assert osb.put(PROVISION, body).status_code == 202
    # ...and still required without context.platform (the checklist's decision):
    before = snapshot(runtime)
    r = osb.put("/v2/service_instances/i-2?accepts_incomplete=true",
                {k: v for k, v in body.items() if k != "context"})
    assert_rejected(runtime, before, r, 400, "BadRequest")


def test_gap_authorization_header_and_body_are_never_logged_at_debug(osb, worker, caplog):
    caplog.set_level(logging.DEBUG)
    api_key = "IBMCLOUD-API-KEY-must-not-be-logged"
    header = auth_header()
    secrets = [header, header.split()[1], PASSWORD, api_key, KSYS_PARAMS["orchestrator"]["password"]]
    params = {**KSYS_PARAMS, "ibmcloud_api_key": api_key}
    osb.ready("i-1", KSYS_PLAN, params)
    bound = osb.bind("i-1", "b-1", plan=KSYS_PLAN)
    secrets.append(bound.json["credentials"]["iam"]["apikey"])
    # failures too: a rejected body, a bad password
    osb.put("/v2/service_instances/i-2?accepts_incomplete=true",
            {**BODY, "parameters": {**GRS_PARAMS, "ibmcloud_api_key": api_key, "typo": 1}})
    osb.get("/v2/catalog", headers={"Authorization": auth_header("platform", "wrong-" + PASSWORD)})
    osb.patch("/v2/service_instances/i-1?accepts_incomplete=true",
              {"service_id": SERVICE_ID, "parameters": {"ibmcloud_api_key": api_key}})
    osb.wait("i-1")
    osb.unbind("i-1", "b-1", plan=KSYS_PLAN)
    assert caplog.records, "the broker logs nothing at DEBUG: this test would prove nothing"
    for record in caplog.records:
        text = record.getMessage() + (caplog.text if record.exc_info else "")
        for secret in secrets:
            assert secret not in text, f"{record.name} logged a secret: {text[:300]}"
    assert "wrong-" + PASSWORD not in caplog.text


@pytest.mark.parametrize(("user", "password"), [("platform", "wrong"), ("wrong", PASSWORD), ("", "")])
def test_gap_wrong_username_and_wrong_password_both_return_the_same_401(osb, runtime, user, password):
    before = snapshot(runtime)
    r = osb.put(PROVISION, BODY, headers={"Authorization": auth_header(user, password)})
    body = assert_rejected(runtime, before, r, 401, "Unauthorized")
    # Nothing in the answer tells which part was wrong.
    assert body == {"error": "Unauthorized", "description": "invalid credentials"}


def test_gap_missing_binding_on_binding_last_operation_is_404_not_500(ready_db, osb, worker):
    assert_error(osb.get("/v2/service_instances/i-1/service_bindings/missing/last_operation"), 404, "NotFound")


def test_gap_missing_instance_on_update_is_404_not_500(osb, runtime):
    before = snapshot(runtime)
    r = osb.patch(PROVISION, {"service_id": SERVICE_ID, "parameters": {"rpo_target_minutes": 5}})
    assert_rejected(runtime, before, r, 404, "NotFound")


def test_gap_quota_error_is_a_4xx_with_an_osb_body_not_500(broker):
    b = broker(ready=True, account_instance_limit=1)
    before = snapshot(b.runtime)
    r = b.osb.provision("i-2", params=grs_params(1))
    body = assert_rejected(b.runtime, before, r, 400, "InvalidParameters")
    assert "limit" in body["description"] and body["description"].startswith("parameters.")


@pytest.mark.parametrize("version", ["two.seventeen", "2.17.0", "2_17", "\x7f", "2.-1"])
def test_gap_malformed_version_header_is_412_not_500(osb, runtime, version):
    before = snapshot(runtime)
    assert_rejected(runtime, before, osb.put(PROVISION, BODY, headers={"X-Broker-API-Version": version}), 412)


def test_gap_maintenance_info_is_honoured(osb, worker):
    before = snapshot(worker)
    r = osb.put(PROVISION, {**BODY, "maintenance_info": {"version": "9.9.9"}})
    assert_rejected(worker, before, r, 422, "MaintenanceInfoConflict")
    assert osb.put(PROVISION, {**BODY, "maintenance_info": {"version": "1.0.0"}}).status_code == 202
    osb.wait("i-1")
    assert osb.get("/v2/service_instances/i-1").json["maintenance_info"] == {"version": "1.0.0"}


def test_gap_bind_resource_serviceid_crn_is_used_in_credentials(ready_db, osb, worker):
    crn = f"crn:v1:bluemix:public:iam-identity::a/{ACCOUNT}::serviceid:ServiceId-0a1b2c3d"
    r = osb.bind("i-1", "b-1", bind_resource={"serviceid_crn": crn, "app_guid": "app-1"})
    assert r.status_code == 201 and r.json["credentials"]["iam"]["serviceid_crn"] == crn


def test_gap_retry_after_is_present_while_in_progress(osb, runtime):
    osb.provision("i-1")
    r = osb.get("/v2/service_instances/i-1/last_operation")
    assert r.json["state"] == "in progress" and int(r.headers["Retry-After"]) >= 1


def test_gap_request_identity_is_echoed(osb):
    r = osb.put(PROVISION, BODY, headers={"X-Broker-API-Request-Identity": "7b4f0c8e-request"})
    assert r.status_code == 202 and r.headers["X-Broker-API-Request-Identity"] == "7b4f0c8e-request"


def test_gap_parameters_are_validated_against_the_plan_schema(osb, runtime):
    before = snapshot(runtime)
    r = osb.put(PROVISION, {**BODY, "parameters": {**GRS_PARAMS, "rpo_target": 15}})
    body = assert_rejected(runtime, before, r, 400, "InvalidParameters")
    assert "rpo_target" in body["description"]


def test_gap_async_required_is_422_when_202_was_not_allowed(osb, runtime):
    before = snapshot(runtime)
    r = osb.put("/v2/service_instances/i-1", BODY)
    assert_rejected(runtime, before, r, 422, "AsyncRequired")


def test_gap_catalog_is_loaded_once_not_per_request(broker, tmp_path):
    """The runtime is built from a catalog file written for this test; once it runs, that file changes and
    then goes away, and every request still sees the catalog read at start-up."""
    folder = tmp_path / "catalog-for-this-test"
    folder.mkdir()
    data = yaml.safe_load((ROOT / "catalog" / "powervs-dr.yaml").read_text())
    data["services"][0]["description"] = "the catalog read at start-up"
    catalog_file = folder / "powervs-dr.yaml"
    catalog_file.write_text(yaml.safe_dump(data, sort_keys=False))
    b = broker(catalog_path=str(folder))
    first = b.osb.get("/v2/catalog")
    assert first.status_code == 200
    assert first.json["services"][0]["description"] == "the catalog read at start-up"

    data["services"][0]["description"] = "changed on disk after start-up"
    data["services"][0]["plans"] = [p for p in data["services"][0]["plans"] if p["id"] != GRS_PLAN]
    catalog_file.write_text(yaml.safe_dump(data, sort_keys=False))
    os.utime(catalog_file, (time.time() + 5, time.time() + 5))  # a new mtime, whatever the clock's resolution
    assert b.osb.get("/v2/catalog").json == first.json
    assert b.osb.put(PROVISION, BODY).status_code == 202  # grs-async is still a plan for this broker

    catalog_file.unlink()
    assert b.osb.get("/v2/catalog").json == first.json
    assert b.osb.wait("i-1")["state"] == "succeeded"
    assert b.osb.bind("i-1", "b-1").status_code == 201


def test_gap_originating_identity_is_accepted_and_a_malformed_one_is_400_not_500(osb, runtime):
    before = snapshot(runtime)
    bad = osb.put(PROVISION, BODY, headers={"X-Broker-API-Originating-Identity": "kubernetes !!"})
    assert_rejected(runtime, before, bad, 400, "BadRequest")
    ok = identity("kubernetes", {"username": "u", "uid": "1", "groups": ["g"], "extra": {}})
    assert osb.put(PROVISION, BODY, headers={"X-Broker-API-Originating-Identity": ok}).status_code == 202
