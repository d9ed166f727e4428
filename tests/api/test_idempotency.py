"""The idempotency table of spec §2.11, one test per cell.

| Repeat of …        | same request, still running | same request, done | different attributes        |
| provision PUT      | 202, same operation         | 200                | 409 (running or done)       |
| bind PUT           | 202, same operation         | 200                | 409 (running or done)       |
| update PATCH       | 202, same operation         | 200                | 422 ConcurrencyError if one runs |
| deprovision DELETE | 202, same operation         | 410                | -                           |
| unbind DELETE      | 202, same operation         | 410                | -                           |

"Still running" is made deterministic by stopping the worker: the operation stays queued (in progress).
"""

from __future__ import annotations

import pytest

from tests.api.conftest import assert_rejected, page_of, pending_update, snapshot
from tests.conftest import GRS_PARAMS, GRS_PLAN, KSYS_PARAMS, KSYS_PLAN, SERVICE_ID, grs_params

INST = "/v2/service_instances/i-1"
BIND = f"{INST}/service_bindings/b-1"
ASYNC = "?accepts_incomplete=true"


def provision_body(**changes):
    return {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "organization_guid": "org-1",
            "space_guid": "space-1", "parameters": GRS_PARAMS, **changes}


def bind_body(**changes):
    return {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, **changes}


# --- provision ---------------------------------------------------------------------------------------

def test_provision_identical_repeat_while_running_returns_202_same_operation(osb, runtime):
    first = osb.put(INST + ASYNC, provision_body())
    before = snapshot(runtime)
    second = osb.put(INST + ASYNC, provision_body())
    assert first.status_code == second.status_code == 202
    # same operation, same dashboard page (each answer carries a freshly signed link to it)
    assert second.json["operation"] == first.json["operation"]
    assert page_of(second.json["dashboard_url"]) == page_of(first.json["dashboard_url"])
    assert snapshot(runtime) == before


def test_provision_identical_repeat_after_success_returns_200(osb, worker):
    osb.put(INST + ASYNC, provision_body())
    osb.wait("i-1")
    r = osb.put(INST + ASYNC, provision_body())
    assert r.status_code == 200
    assert set(r.json) == {"dashboard_url"}
    assert page_of(r.json["dashboard_url"]) == "http://localhost/dashboard/instances/i-1"


def test_provision_different_attributes_while_running_returns_409(osb, runtime):
    osb.put(INST + ASYNC, provision_body())
    before = snapshot(runtime)
    r = osb.put(INST + ASYNC, provision_body(parameters={**GRS_PARAMS, "rpo_target_minutes": 30}))
    assert_rejected(runtime, before, r, 409, "Conflict")


@pytest.mark.parametrize("change", [
    {"plan_id": KSYS_PLAN, "parameters": KSYS_PARAMS},
    {"parameters": grs_params(1)},
    {"organization_guid": "org-2"},
    {"space_guid": "space-2"},
    {"maintenance_info": {"version": "1.0.0"}},
])
def test_provision_different_attributes_after_success_returns_409(osb, worker, change):
    osb.put(INST + ASYNC, provision_body())
    osb.wait("i-1")
    before = snapshot(worker)
    assert_rejected(worker, before, osb.put(INST + ASYNC, provision_body(**change)), 409, "Conflict")


# --- bind --------------------------------------------------------------------------------------------

def test_bind_identical_repeat_while_running_returns_202_same_operation(ready_db, osb, worker):
    worker.worker.stop(timeout=10)
    first = osb.put(BIND + ASYNC, bind_body())
    before = snapshot(worker)
    second = osb.put(BIND + ASYNC, bind_body())
    assert first.status_code == second.status_code == 202
    assert second.json == first.json and "credentials" not in second.json
    assert snapshot(worker) == before


def test_bind_identical_repeat_after_success_returns_200_with_same_credentials(ready_db, osb, worker):
    first = osb.put(BIND, bind_body(parameters={"purpose": "readonly"}))
    second = osb.put(BIND, bind_body(parameters={"purpose": "readonly"}))
    assert first.status_code == 201 and second.status_code == 200
    assert second.json["credentials"] == first.json["credentials"]


def test_bind_different_attributes_while_running_returns_409(ready_db, osb, worker):
    worker.worker.stop(timeout=10)
    osb.put(BIND + ASYNC, bind_body())
    before = snapshot(worker)
    r = osb.put(BIND + ASYNC, bind_body(parameters={"role": "Reader"}))
    assert_rejected(worker, before, r, 409, "Conflict")


@pytest.mark.parametrize("change", [
    {"parameters": {"purpose": "readonly"}},
    {"bind_resource": {"app_guid": "other-app"}},
    {"app_guid": "other-app"},
])
def test_bind_different_attributes_after_success_returns_409(ready_db, osb, worker, change):
    osb.put(BIND, bind_body())
    before = snapshot(worker)
    assert_rejected(worker, before, osb.put(BIND, bind_body(**change)), 409, "Conflict")


# --- update ------------------------------------------------------------------------------------------

def test_update_identical_repeat_while_running_returns_202_same_operation(ready_db, osb, worker):
    worker.worker.stop(timeout=10)
    first = pending_update(osb, "i-1")
    before = snapshot(worker)
    second = pending_update(osb, "i-1")
    assert second.json["operation"] == first.json["operation"]
    assert snapshot(worker) == before


def test_update_identical_repeat_after_success_returns_200(ready_db, osb, worker):
    pending_update(osb, "i-1")
    assert osb.wait("i-1")["state"] == "succeeded"
    r = osb.patch(INST + ASYNC, {"service_id": SERVICE_ID, "parameters": {"rpo_target_minutes": 30}})
    assert r.status_code == 200 and r.json == {}


def test_update_different_request_while_an_update_runs_returns_422_concurrency_error(ready_db, osb, worker):
    worker.worker.stop(timeout=10)
    pending_update(osb, "i-1", rpo=30)
    before = snapshot(worker)
    r = osb.patch(INST + ASYNC, {"service_id": SERVICE_ID, "parameters": {"rpo_target_minutes": 45}})
    assert_rejected(worker, before, r, 422, "ConcurrencyError")


# --- deprovision -------------------------------------------------------------------------------------

def test_deprovision_identical_repeat_while_running_returns_202_same_operation(ready_db, osb, worker):
    worker.worker.stop(timeout=10)
    first = osb.deprovision("i-1")
    before = snapshot(worker)
    second = osb.deprovision("i-1")
    assert first.status_code == second.status_code == 202
    assert second.json == first.json
    assert snapshot(worker) == before


def test_deprovision_repeat_after_success_returns_410(ready_db, osb, worker):
    osb.deprovision("i-1")
    assert osb.wait("i-1")["state"] == "succeeded"
    before = snapshot(worker)
    assert_rejected(worker, before, osb.deprovision("i-1"), 410, "Gone")


# --- unbind ------------------------------------------------------------------------------------------

def test_unbind_identical_repeat_while_running_returns_202_same_operation(ready_db, osb, worker):
    assert osb.bind("i-1", "b-1").status_code == 201
    worker.worker.stop(timeout=10)
    first = osb.unbind("i-1", "b-1", query="&accepts_incomplete=true")
    before = snapshot(worker)
    second = osb.unbind("i-1", "b-1", query="&accepts_incomplete=true")
    assert first.status_code == second.status_code == 202
    assert second.json == first.json
    assert snapshot(worker) == before


def test_unbind_repeat_after_success_returns_410(ready_db, osb, worker):
    osb.bind("i-1", "b-1")
    assert osb.unbind("i-1", "b-1").status_code == 200
    before = snapshot(worker)
    assert_rejected(worker, before, osb.unbind("i-1", "b-1"), 410, "Gone")


def test_unbind_async_repeat_after_success_returns_410(ready_db, osb, worker):
    osb.bind("i-1", "b-1")
    assert osb.unbind("i-1", "b-1", query="&accepts_incomplete=true").status_code == 202
    assert osb.wait_binding("i-1", "b-1")["state"] == "succeeded"
    before = snapshot(worker)
    assert_rejected(worker, before, osb.unbind("i-1", "b-1", query="&accepts_incomplete=true"), 410, "Gone")
