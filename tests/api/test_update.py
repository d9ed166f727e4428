"""PATCH /v2/service_instances/:instance_id (spec §2.3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.app import build_runtime, create_app
from tests.api.conftest import assert_rejected, snapshot
from tests.conftest import GRS_PARAMS, GRS_PLAN, KSYS_PARAMS, KSYS_PLAN, OSB, ROOT, SERVICE_ID, make_settings

URL = "/v2/service_instances/i-1?accepts_incomplete=true"
UNKNOWN_PLAN = "9f8e7d6c-5b4a-4392-8170-6e5d4c3b2a19"  # a plan id no catalog has


def params(runtime, iid="i-1"):
    with runtime.store.read() as tx:
        return tx.get_instance(iid).parameters


def patch(osb, url=URL, **fields):
    return osb.patch(url, {"service_id": SERVICE_ID, **fields})


# --- success -------------------------------------------------------------------------------------------

def test_update_parameters_returns_202_then_applies_them(ready_db, osb, worker):
    r = patch(osb, parameters={"rpo_target_minutes": 30})
    assert r.status_code == 202, r.get_data(as_text=True)
    assert r.json["operation"]
    assert osb.wait("i-1")["state"] == "succeeded"
    assert params(worker)["rpo_target_minutes"] == 30
    assert osb.get("/v2/service_instances/i-1").json["parameters"]["rpo_target_minutes"] == 30


@pytest.mark.parametrize("fields", [
    {},
    {"parameters": {}},
    {"parameters": {"rpo_target_minutes": 15}},
    {"plan_id": GRS_PLAN},
    {"context": {"platform": "cloudfoundry", "instance_name": "renamed"}},
    {"maintenance_info": {"version": "1.0.0"}},
    {"previous_values": {"plan_id": GRS_PLAN}},
])
def test_update_without_effect_returns_200_even_without_accepts_incomplete(ready_db, osb, worker, fields):
    before = snapshot(worker)
    r = patch(osb, "/v2/service_instances/i-1", **fields)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.json == {}
    assert snapshot(worker) == before


def test_update_without_parameters_keeps_the_parameters(ready_db, osb, worker):
    before = params(worker)
    assert patch(osb, plan_id=GRS_PLAN).status_code == 200
    assert params(worker) == before


def test_update_failed_reports_instance_usable_and_update_repeatable(broker):
    b = broker(ready=True, sim_faults="apply_parameters=fail")
    assert patch(b.osb, parameters={"rpo_target_minutes": 30}).status_code == 202
    report = b.osb.wait("i-1")
    assert report["state"] == "failed"
    assert report["instance_usable"] is True and report["update_repeatable"] is True
    assert report["description"]
    assert params(b.runtime)["rpo_target_minutes"] == 15


# --- 422 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["", "?accepts_incomplete=false"])
def test_update_without_accepts_incomplete_returns_422_async_required(ready_db, osb, worker, query):
    before = snapshot(worker)
    r = patch(osb, f"/v2/service_instances/i-1{query}", parameters={"rpo_target_minutes": 30})
    assert_rejected(worker, before, r, 422, "AsyncRequired")
    assert params(worker)["rpo_target_minutes"] == 15


def test_update_while_provisioning_returns_422_concurrency_error(osb, runtime):
    assert osb.provision("i-1").status_code == 202
    before = snapshot(runtime)
    r = patch(osb, parameters={"rpo_target_minutes": 30})
    assert_rejected(runtime, before, r, 422, "ConcurrencyError")


def test_update_while_deprovisioning_returns_422_concurrency_error(ready_db, osb, worker):
    worker.worker.stop(timeout=10)
    assert osb.deprovision("i-1").status_code == 202
    before = snapshot(worker)
    r = patch(osb, parameters={"rpo_target_minutes": 30})
    assert_rejected(worker, before, r, 422, "ConcurrencyError")


def test_update_plan_change_on_a_plan_that_is_not_plan_updateable_returns_422(ready_db, osb, worker):
    before = snapshot(worker)
    r = patch(osb, plan_id=KSYS_PLAN)
    body = assert_rejected(worker, before, r, 422, "UnprocessableEntity")
    assert body["description"].startswith("plan_id") and "plan_updateable" in body["description"]


def test_update_disallowed_plan_change_returns_422_not_400(osb, worker):
    osb.ready("i-1", KSYS_PLAN, KSYS_PARAMS)
    before = snapshot(worker)
    r = patch(osb, plan_id=GRS_PLAN)
    body = assert_rejected(worker, before, r, 422, "UnprocessableEntity")
    assert "not supported" in body["description"] and "ksys-managed-ha" in body["description"]


def test_update_allowed_plan_change_returns_202_and_changes_the_plan(osb, worker):
    target = worker.catalog.find_plan("ksys-managed-ha")
    assert target is not None
    osb.ready("i-1", KSYS_PLAN, KSYS_PARAMS)
    r = patch(osb, plan_id=target.id, previous_values={"plan_id": KSYS_PLAN})
    assert r.status_code == 202, r.get_data(as_text=True)
    assert osb.wait("i-1")["state"] == "succeeded"
    assert osb.get("/v2/service_instances/i-1").json["plan_id"] == target.id


def test_update_to_a_plan_not_in_the_catalog_returns_400_naming_plan_id(osb, worker):
    osb.ready("i-1", KSYS_PLAN, KSYS_PARAMS)
    before = snapshot(worker)
    r = patch(osb, plan_id=UNKNOWN_PLAN)
    body = assert_rejected(worker, before, r, 400, "BadRequest")
    assert body["description"].startswith("plan_id")


def test_update_with_other_maintenance_version_returns_422_maintenance_info_conflict(ready_db, osb, worker):
    before = snapshot(worker)
    r = patch(osb, maintenance_info={"version": "0.9.0"}, parameters={"rpo_target_minutes": 30})
    assert_rejected(worker, before, r, 422, "MaintenanceInfoConflict")


def test_update_of_a_failed_instance_returns_422_with_instance_not_usable(broker):
    b = broker(sim_faults="create_replication_group=fail")
    b.osb.provision("i-1")
    assert b.osb.wait("i-1")["state"] == "failed"
    before = snapshot(b.runtime)
    r = patch(b.osb, parameters={"rpo_target_minutes": 30})
    body = assert_rejected(b.runtime, before, r, 422, "UnprocessableEntity")
    assert body["instance_usable"] is False and body["update_repeatable"] is False


def test_update_maintenance_info_upgrade_after_a_catalog_bump(ready_db, osb, worker, tmp_path: Path):
    worker.worker.stop(timeout=10)
    bumped = tmp_path / "catalog-1.1.0.yaml"
    bumped.write_text((ROOT / "catalog" / "powervs-dr.yaml").read_text().replace(
        "maintenance_info: {version: 1.0.0", "maintenance_info: {version: 1.1.0"))
    rt = build_runtime(make_settings(tmp_path, catalog_path=str(bumped)))  # same database file
    try:
        rt.worker.start()
        new = OSB(create_app(runtime=rt).test_client())
        assert new.get("/v2/catalog").json["services"][0]["plans"][0]["maintenance_info"]["version"] == "1.1.0"
        assert new.get("/v2/service_instances/i-1").json["maintenance_info"] == {"version": "1.0.0"}
        before = snapshot(rt)
        old = patch(new, maintenance_info={"version": "1.0.0"})
        assert_rejected(rt, before, old, 422, "MaintenanceInfoConflict")
        r = patch(new, maintenance_info={"version": "1.1.0"},
                  previous_values={"maintenance_info": {"version": "1.0.0"}})
        assert r.status_code == 202, r.get_data(as_text=True)
        assert new.wait("i-1")["state"] == "succeeded"
        assert new.get("/v2/service_instances/i-1").json["maintenance_info"] == {"version": "1.1.0"}
        assert patch(new, maintenance_info={"version": "1.1.0"}).status_code == 200
    finally:
        rt.worker.stop(timeout=10)
        rt.store.engine.dispose()


# --- 404 / 400 -------------------------------------------------------------------------------------

def test_update_of_unknown_instance_returns_404(osb, runtime):
    before = snapshot(runtime)
    r = patch(osb, parameters={"rpo_target_minutes": 30})
    assert_rejected(runtime, before, r, 404, "NotFound")


def test_update_of_deprovisioned_instance_returns_404(ready_db, osb, worker):
    osb.deprovision("i-1")
    assert osb.wait("i-1")["state"] == "succeeded"
    before = snapshot(worker)
    assert_rejected(worker, before, patch(osb, parameters={"rpo_target_minutes": 30}), 404, "NotFound")


@pytest.mark.parametrize(("body", "field"), [
    ({"parameters": {"rpo_target_minutes": 30}}, "service_id"),
    ({"service_id": "", "parameters": {}}, "service_id"),
    ({"service_id": 1}, "service_id"),
    ({"service_id": "7d0c2b1a-0000-4000-8000-000000000000"}, "service_id"),
    ({"service_id": SERVICE_ID, "plan_id": 3}, "plan_id"),
    ({"service_id": SERVICE_ID, "plan_id": ""}, "plan_id"),
    ({"service_id": SERVICE_ID, "parameters": "rpo=30"}, "parameters"),
    ({"service_id": SERVICE_ID, "context": [1]}, "context"),
    ({"service_id": SERVICE_ID, "previous_values": "x"}, "previous_values"),
    ({"service_id": SERVICE_ID, "maintenance_info": {"version": None}}, "maintenance_info.version"),
])
def test_update_malformed_field_returns_400_naming_the_field(ready_db, osb, worker, body, field):
    before = snapshot(worker)
    r = osb.patch(URL, body)
    b = assert_rejected(worker, before, r, 400, "BadRequest")
    assert b["description"].startswith(field), b


@pytest.mark.parametrize("raw", [b"", b"{", b"[1]", b"null"])
def test_update_malformed_json_returns_400(ready_db, osb, worker, raw):
    before = snapshot(worker)
    assert_rejected(worker, before, osb.patch(URL, raw), 400, "BadRequest")


def test_update_non_boolean_accepts_incomplete_returns_400(ready_db, osb, worker):
    before = snapshot(worker)
    r = patch(osb, "/v2/service_instances/i-1?accepts_incomplete=1", parameters={"rpo_target_minutes": 30})
    assert_rejected(worker, before, r, 400, "BadRequest")


@pytest.mark.parametrize(("change", "field"), [
    ({"primary_workspace_crn": GRS_PARAMS["secondary_workspace_crn"]}, "primary_workspace_crn"),
    ({"rpo_target_minute": 30}, "rpo_target_minute"),
    ({"rpo_target_minutes": 481}, "parameters.rpo_target_minutes"),
])
def test_update_parameters_rejected_by_the_update_schema_return_400_naming_the_field(ready_db, osb, worker, change,
                                                                                    field):
    before = snapshot(worker)
    r = patch(osb, parameters=change)
    b = assert_rejected(worker, before, r, 400, "InvalidParameters")
    assert field in b["description"]


def test_update_error_never_echoes_a_sensitive_value(ready_db, osb, worker):
    secret = "SECRET-" + "k" * 300
    before = snapshot(worker)
    r = patch(osb, parameters={"ibmcloud_api_key": secret})
    body = assert_rejected(worker, before, r, 400, "InvalidParameters")
    assert "parameters.ibmcloud_api_key" in body["description"]
    assert "SECRET" not in r.get_data(as_text=True)
