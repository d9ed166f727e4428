"""DELETE /v2/service_instances/:instance_id (spec §2.4), including halting a running provision and
cleaning up a failed one."""

from __future__ import annotations

import pytest

from broker.domain.models import InstanceState, OperationState, OperationType
from tests.api.conftest import (
    assert_rejected,
    operation_row,
    pending_update,
    snapshot,
    wait_for,
)
from tests.conftest import GRS_PLAN, KSYS_PARAMS, KSYS_PLAN, SERVICE_ID

BASE = "/v2/service_instances/i-1"


def state(runtime, iid="i-1"):
    with runtime.store.read() as tx:
        return tx.get_instance(iid).state


def test_deprovision_returns_202_then_last_operation_succeeds_and_nothing_is_left(ready_db, osb, worker):
    assert worker.orchestrator.cloud.inventory("i-1")
    r = osb.deprovision("i-1")
    assert r.status_code == 202, r.get_data(as_text=True)
    assert r.json["operation"] and set(r.json) == {"operation"}
    assert osb.wait("i-1")["state"] == "succeeded"
    assert state(worker) == InstanceState.GONE
    assert worker.orchestrator.cloud.inventory("i-1") == []


def test_deprovision_repeat_while_running_without_accepts_incomplete_still_returns_202(ready_db, osb, worker):
    worker.worker.stop(timeout=10)
    first = osb.deprovision("i-1")
    second = osb.deprovision("i-1", query="")
    assert second.status_code == 202 and second.json["operation"] == first.json["operation"]


def test_deprovision_of_unknown_instance_returns_410(osb, runtime):
    before = snapshot(runtime)
    assert_rejected(runtime, before, osb.deprovision("never-existed"), 410, "Gone")


@pytest.mark.parametrize("query", ["", "&accepts_incomplete=false"])
def test_deprovision_without_accepts_incomplete_returns_422_async_required(ready_db, osb, worker, query):
    before = snapshot(worker)
    r = osb.deprovision("i-1", query=query)
    assert_rejected(worker, before, r, 422, "AsyncRequired")
    assert state(worker) == InstanceState.READY


def test_deprovision_while_an_update_runs_returns_422_concurrency_error(ready_db, osb, worker):
    worker.worker.stop(timeout=10)
    pending_update(osb, "i-1")
    before = snapshot(worker)
    assert_rejected(worker, before, osb.deprovision("i-1"), 422, "ConcurrencyError")


def test_deprovision_while_a_bind_runs_returns_422_concurrency_error(ready_db, osb, worker):
    worker.worker.stop(timeout=10)
    r = osb.put(f"{BASE}/service_bindings/b-1?accepts_incomplete=true",
                {"service_id": SERVICE_ID, "plan_id": GRS_PLAN})
    assert r.status_code == 202
    before = snapshot(worker)
    assert_rejected(worker, before, osb.deprovision("i-1"), 422, "ConcurrencyError")


@pytest.mark.parametrize(("query", "field"), [
    (f"plan_id={GRS_PLAN}&accepts_incomplete=true", "service_id"),
    (f"service_id={SERVICE_ID}&accepts_incomplete=true", "plan_id"),
    ("accepts_incomplete=true", "service_id"),
    (f"service_id=&plan_id={GRS_PLAN}&accepts_incomplete=true", "service_id"),
    (f"service_id={SERVICE_ID}&plan_id=&accepts_incomplete=true", "plan_id"),
    (f"service_id=nope&plan_id={GRS_PLAN}&accepts_incomplete=true", "service_id"),
    (f"service_id={SERVICE_ID}&plan_id=nope&accepts_incomplete=true", "plan_id"),
    (f"service_id=a%00b&plan_id={GRS_PLAN}&accepts_incomplete=true", "service_id"),
    (f"service_id={SERVICE_ID}&plan_id={'p' * 300}&accepts_incomplete=true", "plan_id"),
    (f"service_id={SERVICE_ID}&plan_id={GRS_PLAN}&accepts_incomplete=yes", "accepts_incomplete"),
    (f"service_id={SERVICE_ID}&plan_id={GRS_PLAN}&accepts_incomplete=", "accepts_incomplete"),
])
def test_deprovision_missing_or_malformed_query_parameter_returns_400(ready_db, osb, worker, query, field):
    before = snapshot(worker)
    r = osb.delete(f"{BASE}?{query}")
    body = assert_rejected(worker, before, r, 400, "BadRequest")
    assert body["description"].startswith(field), body


def test_deprovision_of_a_queued_provision_halts_it_and_deprovisions(osb, runtime):
    provision = osb.provision("i-1").json["operation"]
    r = osb.deprovision("i-1")
    assert r.status_code == 202
    halted = operation_row(runtime, provision)
    assert halted.state == OperationState.FAILED and "halted" in halted.description
    runtime.worker.start()
    report = osb.wait("i-1")
    assert report["state"] == "succeeded"
    assert operation_row(runtime, r.json["operation"]).type == OperationType.DEPROVISION
    assert runtime.orchestrator.cloud.inventory("i-1") == []
    assert osb.deprovision("i-1").status_code == 410


def test_deprovision_while_a_provision_is_running_halts_it_and_deprovisions(broker):
    b = broker(sim_step_seconds=0.2)
    provision = b.osb.provision("i-1", KSYS_PLAN, KSYS_PARAMS).json["operation"]
    # Wait until the provision has really started and created something.
    wait_for(lambda: operation_row(b.runtime, provision).step_index >= 2, what="provision running")
    assert operation_row(b.runtime, provision).state == OperationState.IN_PROGRESS
    r = b.osb.deprovision("i-1")
    assert r.status_code == 202, r.get_data(as_text=True)
    report = b.osb.get("/v2/service_instances/i-1/last_operation").json
    assert report["state"] == "in progress"  # last_operation shows the delete
    assert b.osb.wait("i-1", timeout=30)["state"] == "succeeded"
    halted = operation_row(b.runtime, provision)
    assert halted.state == OperationState.FAILED and halted.error == "halted"
    assert halted.step_index < halted.step_total  # it stopped before finishing
    assert b.runtime.orchestrator.cloud.inventory("i-1") == []
    assert state(b.runtime) == InstanceState.GONE
    assert b.osb.deprovision("i-1", KSYS_PLAN).status_code == 410


def test_deprovision_of_a_failed_provision_cleans_up_then_410(broker):
    b = broker(sim_faults="create_replication_group=fail")
    b.osb.provision("i-1")
    report = b.osb.wait("i-1")
    assert report["state"] == "failed" and "create" in report["description"]
    assert state(b.runtime) == InstanceState.FAILED
    r = b.osb.deprovision("i-1")
    assert r.status_code == 202, r.get_data(as_text=True)
    assert b.osb.wait("i-1")["state"] == "succeeded"
    assert b.runtime.orchestrator.cloud.inventory("i-1") == []
    before = snapshot(b.runtime)
    assert_rejected(b.runtime, before, b.osb.deprovision("i-1"), 410, "Gone")


def test_deprovision_removes_remaining_bindings(ready_db, osb, worker):
    assert osb.bind("i-1", "b-1").status_code == 201
    osb.deprovision("i-1")
    assert osb.wait("i-1")["state"] == "succeeded"
    assert osb.get(f"{BASE}/service_bindings/b-1").status_code == 404
    assert osb.unbind("i-1", "b-1").status_code == 410
    assert worker.orchestrator.cloud.inventory("i-1") == []


def test_instance_id_can_be_reused_after_deprovision(ready_db, osb, worker):
    osb.deprovision("i-1")
    osb.wait("i-1")
    osb.ready("i-1")
    assert osb.get(BASE).status_code == 200
