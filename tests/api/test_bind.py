"""PUT and DELETE /v2/service_instances/:id/service_bindings/:binding_id (spec §2.8, §2.9)."""

from __future__ import annotations

import pytest

from broker.domain.models import BindingState, OperationState
from tests.api.conftest import (
    assert_error,
    assert_rejected,
    operation_row,
    pending_update,
    snapshot,
    wait_for,
)
from tests.conftest import GRS_PLAN, KSYS_PARAMS, KSYS_PLAN, SERVICE_ID

BIND = "/v2/service_instances/i-1/service_bindings/b-1"


def binding(runtime, bid="b-1"):
    with runtime.store.read() as tx:
        return tx.get_binding("i-1", bid)


def body(**changes):
    base = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


@pytest.fixture
def ready(ready_db, worker):
    return worker


# --- bind: success (repeats are in test_idempotency.py) ----------------------------------------------

def test_bind_returns_201_with_credentials(osb, ready):
    r = osb.put(BIND, body(bind_resource={"app_guid": "app-1"}))
    assert r.status_code == 201, r.get_data(as_text=True)
    creds = r.json["credentials"]
    assert creds["replication"]["primary"]["volume_group_id"]
    assert creds["iam"]["apikey"] and creds["iam"]["serviceid_crn"]
    assert binding(ready).state == BindingState.BOUND


def test_bind_credentials_are_unique_per_binding(osb, ready):
    a = osb.bind("i-1", "b-1").json["credentials"]["iam"]["apikey"]
    b = osb.bind("i-1", "b-2").json["credentials"]["iam"]["apikey"]
    assert a != b


def test_bind_with_accepts_incomplete_returns_202_without_credentials(osb, ready):
    r = osb.put(f"{BIND}?accepts_incomplete=true", body())
    assert r.status_code == 202, r.get_data(as_text=True)
    assert set(r.json) == {"operation"}
    assert osb.wait_binding("i-1", "b-1")["state"] == "succeeded"


def test_bind_honours_bind_resource_serviceid_crn(osb, ready):
    crn = "crn:v1:bluemix:public:iam-identity::a/0123456789abcdef0123456789abcdef::serviceid:ServiceId-1234"
    r = osb.put(BIND, body(bind_resource={"serviceid_crn": crn}))
    assert r.status_code == 201
    assert r.json["credentials"]["iam"]["serviceid_crn"] == crn


def test_bind_ksys_plan_returns_the_orchestrator_endpoint(osb, worker):
    osb.ready("i-1", KSYS_PLAN, KSYS_PARAMS)
    r = osb.put(BIND, body(plan_id=KSYS_PLAN))
    assert r.status_code == 201
    assert r.json["credentials"]["orchestrator"]["endpoint"].startswith("https://")


# --- bind: 4xx -------------------------------------------------------------------------------------

def test_bind_to_unknown_instance_returns_404(osb, runtime):
    before = snapshot(runtime)
    r = osb.put("/v2/service_instances/nope/service_bindings/b-1", body())
    assert_rejected(runtime, before, r, 404, "NotFound")


def test_bind_to_deprovisioned_instance_returns_404(osb, ready):
    osb.deprovision("i-1")
    osb.wait("i-1")
    before = snapshot(ready)
    assert_rejected(ready, before, osb.put(BIND, body()), 404, "NotFound")


def test_bind_while_instance_is_provisioning_returns_422_concurrency_error(osb, runtime):
    osb.provision("i-1")
    before = snapshot(runtime)
    assert_rejected(runtime, before, osb.put(BIND, body()), 422, "ConcurrencyError")


def test_bind_while_an_update_runs_returns_422_concurrency_error(ready_db, osb, worker):
    worker.worker.stop(timeout=10)
    pending_update(osb, "i-1")
    before = snapshot(worker)
    assert_rejected(worker, before, osb.put(BIND, body()), 422, "ConcurrencyError")


def test_bind_to_a_failed_instance_returns_422(broker):
    b = broker(sim_faults="create_replication_group=fail")
    b.osb.provision("i-1")
    b.osb.wait("i-1")
    before = snapshot(b.runtime)
    body_ = assert_rejected(b.runtime, before, b.osb.put(BIND, body()), 422, "UnprocessableEntity")
    assert "failed" in body_["description"]


@pytest.mark.parametrize(("change", "field"), [
    ({"service_id": ...}, "service_id"),
    ({"plan_id": ...}, "plan_id"),
    ({"service_id": ""}, "service_id"),
    ({"plan_id": 5}, "plan_id"),
    ({"service_id": "11111111-2222-4333-8444-555555555555"}, "service_id"),
    ({"plan_id": "11111111-2222-4333-8444-555555555555"}, "plan_id"),
    ({"plan_id": KSYS_PLAN}, "plan_id"),  # a real plan, but not this instance's
    ({"parameters": "purpose=readonly"}, "parameters"),
    ({"bind_resource": "app-1"}, "bind_resource"),
    ({"bind_resource": {"app_guid": 1}}, "bind_resource.app_guid"),
    ({"bind_resource": {"route": ["r"]}}, "bind_resource.route"),
    ({"bind_resource": {"serviceid_crn": {}}}, "bind_resource.serviceid_crn"),
    ({"context": "x"}, "context"),
    ({"app_guid": 12}, "app_guid"),
])
def test_bind_malformed_or_missing_field_returns_400_naming_the_field(osb, ready, change, field):
    before = snapshot(ready)
    r = osb.put(BIND, body(**change))
    b = assert_rejected(ready, before, r, 400, "BadRequest")
    assert b["description"].startswith(field), b


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"nul"])
def test_bind_malformed_json_returns_400(osb, ready, raw):
    before = snapshot(ready)
    assert_rejected(ready, before, osb.put(BIND, raw), 400, "BadRequest")


def test_bind_unknown_parameter_is_rejected_naming_the_field(osb, ready):
    before = snapshot(ready)
    r = osb.put(BIND, body(parameters={"purpose": "readonly", "scope": "all"}))
    b = assert_rejected(ready, before, r, 400, "InvalidParameters")
    assert "scope" in b["description"]


def test_bind_parameter_outside_the_schema_enum_returns_400_naming_the_field(osb, ready):
    before = snapshot(ready)
    r = osb.put(BIND, body(parameters={"role": "Administrator"}))
    b = assert_rejected(ready, before, r, 400, "InvalidParameters")
    assert "parameters.role" in b["description"]


def test_bind_non_boolean_accepts_incomplete_returns_400(osb, ready):
    before = snapshot(ready)
    assert_rejected(ready, before, osb.put(f"{BIND}?accepts_incomplete=no", body()), 400, "BadRequest")


def test_bind_invalid_binding_id_returns_400(osb, ready):
    before = snapshot(ready)
    r = osb.put("/v2/service_instances/i-1/service_bindings/%FF", body())
    b = assert_rejected(ready, before, r, 400, "BadRequest")
    assert b["description"].startswith("binding_id")


# --- unbind --------------------------------------------------------------------------------------------

def test_unbind_returns_200_empty_body_and_revokes_credentials(osb, ready):
    osb.bind("i-1", "b-1")
    assert any(r.binding_id == "b-1" for r in ready.orchestrator.cloud.inventory("i-1"))
    r = osb.unbind("i-1", "b-1")
    assert r.status_code == 200 and r.json == {}
    assert binding(ready).state == BindingState.GONE
    assert not any(r.binding_id == "b-1" for r in ready.orchestrator.cloud.inventory("i-1"))


def test_unbind_of_unknown_binding_returns_410(osb, ready):
    before = snapshot(ready)
    assert_rejected(ready, before, osb.unbind("i-1", "never"), 410, "Gone")


def test_unbind_of_binding_on_unknown_instance_returns_410(osb, runtime):
    before = snapshot(runtime)
    assert_rejected(runtime, before, osb.unbind("nope", "b-1"), 410, "Gone")


def test_unbind_async_returns_202_and_identical_repeat_returns_same_operation(osb, ready):
    osb.bind("i-1", "b-1")
    ready.worker.stop(timeout=10)
    first = osb.unbind("i-1", "b-1", query="&accepts_incomplete=true")
    second = osb.unbind("i-1", "b-1", query="&accepts_incomplete=true")
    assert first.status_code == 202 and second.status_code == 202
    assert second.json["operation"] == first.json["operation"]
    ready.worker.start()
    assert osb.wait_binding("i-1", "b-1")["state"] == "succeeded"
    assert osb.unbind("i-1", "b-1", query="&accepts_incomplete=true").status_code == 410


@pytest.mark.parametrize(("query", "field"), [
    (f"plan_id={GRS_PLAN}", "service_id"),
    (f"service_id={SERVICE_ID}", "plan_id"),
    ("", "service_id"),
    (f"service_id=&plan_id={GRS_PLAN}", "service_id"),
    (f"service_id={SERVICE_ID}&plan_id=unknown", "plan_id"),
    (f"service_id={SERVICE_ID}&plan_id={GRS_PLAN}&accepts_incomplete=TRUE", "accepts_incomplete"),
])
def test_unbind_missing_or_malformed_query_parameter_returns_400(osb, ready, query, field):
    osb.bind("i-1", "b-1")
    before = snapshot(ready)
    r = osb.delete(f"{BIND}?{query}")
    b = assert_rejected(ready, before, r, 400, "BadRequest")
    assert b["description"].startswith(field), b


def test_unbind_while_an_update_runs_returns_422_concurrency_error(osb, ready):
    assert osb.bind("i-1", "b-1").status_code == 201
    ready.worker.stop(timeout=10)
    pending_update(osb, "i-1")
    before = snapshot(ready)
    assert_rejected(ready, before, osb.unbind("i-1", "b-1"), 422, "ConcurrencyError")


def test_unbind_while_the_bind_is_queued_halts_the_bind(osb, ready):
    ready.worker.stop(timeout=10)
    bind_op = osb.put(f"{BIND}?accepts_incomplete=true", body()).json["operation"]
    r = osb.unbind("i-1", "b-1", query="&accepts_incomplete=true")
    assert r.status_code == 202, r.get_data(as_text=True)
    assert operation_row(ready, bind_op).state == OperationState.FAILED
    ready.worker.start()
    assert osb.wait_binding("i-1", "b-1")["state"] == "succeeded"  # the unbind
    report = osb.get(f"{BIND}/last_operation?operation={bind_op}").json
    assert report["state"] == "failed" and "halted" in report["description"]
    assert_error(osb.get(BIND), 404, "NotFound")
    assert not any(r.binding_id == "b-1" for r in ready.orchestrator.cloud.inventory("i-1"))


def test_unbind_while_the_bind_is_running_halts_the_bind_and_revokes(broker):
    b = broker(ready=True, sim_faults="create_service_id=latency:1")
    bind_op = b.osb.put(f"{BIND}?accepts_incomplete=true", body()).json["operation"]
    wait_for(lambda: operation_row(b.runtime, bind_op).state == OperationState.IN_PROGRESS, what="bind running")
    r = b.osb.unbind("i-1", "b-1", query="&accepts_incomplete=true")
    assert r.status_code == 202, r.get_data(as_text=True)
    assert b.osb.wait_binding("i-1", "b-1")["state"] == "succeeded"  # the unbind
    halted = operation_row(b.runtime, bind_op)
    assert halted.state == OperationState.FAILED and halted.error == "halted"
    assert binding(b.runtime).state == BindingState.GONE
    assert not any(res.binding_id == "b-1" for res in b.runtime.orchestrator.cloud.inventory("i-1"))
    assert b.osb.unbind("i-1", "b-1").status_code == 410


def test_unbind_of_a_failed_bind_cleans_up_then_410(broker):
    b = broker(ready=True, sim_faults="issue_credentials=fail")
    r = b.osb.put(BIND, body())
    assert_error(r, 502)  # the backend failed: a 5xx, so the platform orphan-mitigates with an unbind
    assert binding(b.runtime).state == BindingState.FAILED
    assert b.osb.unbind("i-1", "b-1").status_code == 200
    assert not any(res.binding_id == "b-1" for res in b.runtime.orchestrator.cloud.inventory("i-1"))
    before = snapshot(b.runtime)
    assert_rejected(b.runtime, before, b.osb.unbind("i-1", "b-1"), 410, "Gone")
