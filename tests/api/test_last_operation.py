"""GET .../last_operation for instances (spec §2.6) and bindings (§2.7), with Retry-After."""

from __future__ import annotations

import pytest

from tests.api.conftest import assert_error, pending_update, wait_for
from tests.conftest import GRS_PLAN, SERVICE_ID, grs_params

LAST = "/v2/service_instances/i-1/last_operation"
BLAST = "/v2/service_instances/i-1/service_bindings/b-1/last_operation"


def async_bind(osb, bid="b-1", **body):
    return osb.put(f"/v2/service_instances/i-1/service_bindings/{bid}?accepts_incomplete=true",
                   {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, **body})


# --- instance ------------------------------------------------------------------------------------------

def test_last_operation_in_progress_returns_200_with_retry_after(osb, runtime):
    op = osb.provision("i-1").json["operation"]
    r = osb.get(f"{LAST}?operation={op}")
    assert r.status_code == 200
    assert r.json["state"] == "in progress" and r.json["description"]
    assert int(r.headers["Retry-After"]) >= 1


def test_last_operation_retry_after_follows_the_running_step(broker):
    b = broker(sim_step_seconds=0.5)
    b.osb.provision("i-1")
    seen = []

    def running() -> bool:
        r = b.osb.get(LAST)
        if r.json["state"] == "in progress" and r.json["description"].startswith("step"):
            seen.append(r)
        return bool(seen)

    wait_for(running, what="a running step")
    assert seen[0].headers["Retry-After"].isdigit() and int(seen[0].headers["Retry-After"]) >= 1
    assert "/" in seen[0].json["description"]  # "step 2/7: ..."


def test_last_operation_succeeded_has_no_retry_after(osb, worker):
    op = osb.provision("i-1").json["operation"]
    osb.wait("i-1")
    r = osb.get(f"{LAST}?operation={op}&service_id={SERVICE_ID}&plan_id={GRS_PLAN}")
    assert r.status_code == 200
    assert r.json["state"] == "succeeded" and r.json["description"]
    assert "Retry-After" not in r.headers
    assert "instance_usable" not in r.json


def test_last_operation_failed_provision_returns_200_failed_with_description(broker):
    b = broker(sim_faults="create_replication_group=fail")
    op = b.osb.provision("i-1").json["operation"]
    r = b.osb.wait("i-1")
    assert r["state"] == "failed"
    assert "creating replication group" in r["description"] and "cleaned up" in r["description"]
    assert b.osb.get(f"{LAST}?operation={op}").json == r


def test_last_operation_of_unknown_instance_returns_404(osb):
    assert_error(osb.get("/v2/service_instances/nope/last_operation"), 404, "NotFound")


@pytest.mark.parametrize("operation", ["not-an-operation", "%2F..%2F", "x" * 300, "%00"])
def test_last_operation_unknown_operation_value_is_a_hint_never_400(ready_db, osb, worker, operation):
    r = osb.get(f"{LAST}?operation={operation}")
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.json["state"] == "succeeded"


def test_last_operation_ignores_an_operation_of_another_instance(ready_db, osb, worker):
    other = osb.provision("i-2", params=grs_params(1)).json["operation"]
    osb.wait("i-2")
    pending = osb.deprovision("i-1").json["operation"]
    assert pending
    r = osb.get(f"{LAST}?operation={other}")
    assert r.status_code == 200
    # the report is about i-1's own latest operation (the deprovision), not i-2's provision
    osb.wait("i-1")
    assert osb.get(f"{LAST}?operation={other}").json["description"].startswith("succeeded: deprovisioned")


def test_last_operation_reports_the_running_update(ready_db, osb, worker):
    worker.worker.stop(timeout=10)
    op = pending_update(osb, "i-1").json["operation"]
    r = osb.get(f"{LAST}?operation={op}&plan_id={GRS_PLAN}")
    assert r.json["state"] == "in progress" and "update" in r.json["description"]
    assert "Retry-After" in r.headers


def test_last_operation_after_deprovision_keeps_a_tombstone_succeeded(ready_db, osb, worker):
    op = osb.deprovision("i-1").json["operation"]
    osb.wait("i-1")
    for url in (LAST, f"{LAST}?operation={op}"):
        r = osb.get(url)
        assert r.status_code == 200 and r.json["state"] == "succeeded"


def test_last_operation_invalid_instance_id_returns_400(osb):
    assert_error(osb.get("/v2/service_instances/%FF/last_operation"), 400, "BadRequest")


# --- binding -------------------------------------------------------------------------------------------

def test_binding_last_operation_in_progress_returns_200_with_retry_after(ready_db, osb, worker):
    worker.worker.stop(timeout=10)
    op = async_bind(osb).json["operation"]
    r = osb.get(f"{BLAST}?operation={op}&service_id={SERVICE_ID}&plan_id={GRS_PLAN}")
    assert r.status_code == 200
    assert r.json["state"] == "in progress"
    assert int(r.headers["Retry-After"]) >= 1


def test_binding_last_operation_succeeded_returns_200_without_retry_after(ready_db, osb, worker):
    op = async_bind(osb).json["operation"]
    report = osb.wait_binding("i-1", "b-1")
    assert report["state"] == "succeeded"
    assert set(report) <= {"state", "description"}
    r = osb.get(f"{BLAST}?operation={op}")
    assert "Retry-After" not in r.headers


def test_binding_last_operation_failed_bind_returns_200_failed(broker):
    b = broker(ready=True, sim_faults="issue_credentials=fail")
    assert async_bind(b.osb).status_code == 202
    report = b.osb.wait_binding("i-1", "b-1")
    assert report["state"] == "failed" and "issuing credentials" in report["description"]
    assert "instance_usable" not in report


def test_binding_last_operation_of_missing_binding_returns_404(ready_db, osb, worker):
    assert_error(osb.get(BLAST), 404, "NotFound")


def test_binding_last_operation_of_unknown_instance_returns_404(osb):
    assert_error(osb.get("/v2/service_instances/nope/service_bindings/b-1/last_operation"), 404, "NotFound")


def test_binding_last_operation_unknown_operation_value_is_a_hint_never_400(ready_db, osb, worker):
    async_bind(osb)
    osb.wait_binding("i-1", "b-1")
    r = osb.get(f"{BLAST}?operation=garbage")
    assert r.status_code == 200 and r.json["state"] == "succeeded"


def test_binding_last_operation_after_async_unbind_reports_succeeded(ready_db, osb, worker):
    async_bind(osb)
    osb.wait_binding("i-1", "b-1")
    r = osb.unbind("i-1", "b-1", query="&accepts_incomplete=true")
    assert r.status_code == 202
    assert osb.wait_binding("i-1", "b-1")["state"] == "succeeded"
    assert osb.unbind("i-1", "b-1", query="&accepts_incomplete=true").status_code == 410


def test_last_operation_failed_deprovision_reports_instance_not_usable(broker):
    b = broker(ready=True, sim_faults="delete_replication_group=fail")
    assert b.osb.deprovision("i-1").status_code == 202
    report = b.osb.wait("i-1")
    assert report["state"] == "failed" and "deleting the replication group" in report["description"]
    assert report["instance_usable"] is False
