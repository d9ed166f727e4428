"""The whole OSB lifecycle against a real ``drbroker serve`` over HTTP."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tests.conftest import GRS_PARAMS, GRS_PLAN, SERVICE_ID
from tests.e2e.conftest import BrokerProcess, Client, query

STEP = re.compile(r"^step (\d+)/(\d+): \S")


def test_full_lifecycle(broker_factory: Callable[..., BrokerProcess], client_for: Callable[..., Client],
                        db_path: Path) -> None:
    broker = broker_factory(db_path, DRBROKER_SIM_STEP_SECONDS="0.3")
    osb = client_for(broker)
    iid, bid = "e2e-lifecycle-1", "e2e-binding-1"

    # catalog
    r = osb.get("/v2/catalog")
    assert r.status_code == 200, r.text
    services = r.json()["services"]
    assert [s["id"] for s in services] == [SERVICE_ID]
    assert GRS_PLAN in {p["id"] for p in services[0]["plans"]}

    # provision: 202 and an operation
    r = osb.provision(iid)
    assert r.status_code == 202, r.text
    operation = r.json()["operation"]
    assert operation
    assert r.json()["dashboard_url"].startswith(broker.url)

    # poll: in progress with Retry-After and "step n/7: ...", then succeeded
    seen: list = []
    final = osb.wait(iid, timeout=60, seen=seen, interval=0.1)
    assert final["state"] == "succeeded", final
    assert seen, "the provision finished before a single in-progress poll"
    steps_seen, totals = set(), set()
    for resp in seen:
        assert resp.json()["state"] == "in progress"
        retry_after = resp.headers.get("Retry-After")
        assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1, resp.headers
        description = resp.json()["description"]
        match = STEP.match(description)
        if match:
            totals.add(int(match.group(2)))
            steps_seen.add(int(match.group(1)))
        else:
            assert description == "provision: queued", description
    assert steps_seen, [s.json() for s in seen]
    (provision_op,) = query(db_path, "SELECT id, step_total FROM operations WHERE instance_id = ?", (iid,))
    assert provision_op["id"] == operation
    assert totals == {provision_op["step_total"]} and max(steps_seen) <= provision_op["step_total"], totals
    assert osb.last_operation(iid, operation).json()["state"] == "succeeded"

    # fetch instance
    r = osb.get(f"/v2/service_instances/{iid}")
    assert r.status_code == 200, r.text
    inst = r.json()
    assert inst["service_id"] == SERVICE_ID and inst["plan_id"] == GRS_PLAN
    assert inst["parameters"]["protected_volumes"] == GRS_PARAMS["protected_volumes"]
    assert inst["parameters"]["primary_workspace_crn"] == GRS_PARAMS["primary_workspace_crn"]
    assert inst["dashboard_url"].startswith(broker.url)

    # bind (synchronous): 201 with credentials
    binding_path = f"/v2/service_instances/{iid}/service_bindings/{bid}"
    r = osb.put(binding_path, {"service_id": SERVICE_ID, "plan_id": GRS_PLAN})
    assert r.status_code == 201, r.text
    credentials = r.json()["credentials"]
    assert credentials["iam"]["apikey"]
    assert credentials["replication"]["primary"]["volume_group_id"]
    assert credentials["replication"]["secondary"]["workspace_crn"] == GRS_PARAMS["secondary_workspace_crn"]

    # fetch binding
    r = osb.get(binding_path)
    assert r.status_code == 200, r.text
    assert r.json()["credentials"] == credentials

    # unbind: 200 {}
    r = osb.delete(binding_path, params={"service_id": SERVICE_ID, "plan_id": GRS_PLAN})
    assert r.status_code == 200, r.text
    assert r.json() == {}
    assert osb.get(binding_path).status_code == 404

    # deprovision: 202, then succeeded
    r = osb.deprovision(iid)
    assert r.status_code == 202, r.text
    deprovision_op = r.json()["operation"]
    assert deprovision_op and deprovision_op != operation
    final = osb.wait(iid, timeout=60)
    assert final["state"] == "succeeded", final
    assert final["description"] == "succeeded: deprovisioned"

    # nothing is left: DELETE again -> 410, GET instance -> 404
    r = osb.deprovision(iid)
    assert r.status_code == 410, r.text
    assert set(r.json()) >= {"error", "description"}
    r = osb.get(f"/v2/service_instances/{iid}")
    assert r.status_code == 404, r.text

    ops = query(db_path, "SELECT type, state, lease_owner FROM operations WHERE instance_id = ? "
                         "ORDER BY created_at", (iid,))
    assert [(o["type"], o["state"]) for o in ops] == [
        ("provision", "succeeded"), ("bind", "succeeded"), ("unbind", "succeeded"), ("deprovision", "succeeded")]
    assert all(o["lease_owner"] is None for o in ops)
    assert query(db_path, "SELECT id FROM sim_resources WHERE instance_id = ?", (iid,)) == []
