"""The contract test: every plan's whole life and every day-2 action, through a real ``drbroker serve``
(ibmcloud backend) and a real ``drbroker fake-ibmcloud``, with every HTTP exchange between them held to
IBM's published API definitions (``broker.fakecloud.contracts``).

Two checks, so neither side can agree with the other's misreading: the fake checks each exchange as it
serves it (and refuses a request that breaks a required field, as IBM does), and this test checks every
recorded exchange again from scratch. Any violation fails the test. The counts (operations exercised,
exchanges checked, models checked, sources) are printed and written to ``contract-report.json`` in the
test's directory (``-s`` shows them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from broker.fakecloud.contracts import load, sources
from broker.fakecloud.state import DEMO_KMS_INSTANCE_ID
from tests.conftest import SERVICE_ID
from tests.e2e.conftest import BrokerProcess, Client
from tests.services.conftest import PLAN_NAMES, params_for

# The day-2 actions each plan offers (rehearsal-only refuses real moves); `rehearsal` is what the scheduler runs.
ACTIONS: dict[str, list[tuple[str, str | None]]] = {
    "grs-async": [("test_failover", None), ("cleanup_test", None), ("rehearsal", None), ("failover", "planned"),
                  ("failback", None), ("resync", None), ("failover", "unplanned"), ("failback", None)],
    "rehearsal-only": [("test_failover", None), ("cleanup_test", None), ("rehearsal", None)],
}
FULL = ACTIONS["grs-async"]


def _plan_ids(osb: Client) -> dict[str, str]:
    catalog = osb.get("/v2/catalog").json()
    return {p["name"]: p["id"] for s in catalog["services"] for p in s["plans"]}


def _run(osb: Client, iid: str, method: str, path: str, body: dict[str, Any] | None, **params: str) -> None:
    r = osb.request(method, path, json=body, params=params or None)
    assert r.status_code in (200, 201, 202), (method, path, r.status_code, r.text)
    if r.status_code == 202:
        final = osb.wait(iid, timeout=120)
        assert final["state"] == "succeeded", (method, path, final)


def _lifecycle(osb: Client, plan: str, plan_id: str, n: int) -> None:
    iid, bid = f"contract-{plan}", f"contract-{plan}-b1"
    params = params_for(plan)
    # each plan protects its own volumes, so the five instances can live side by side
    params["protected_volumes"] = [f"vol-bulk-{n * 3 + 1:03d}", f"vol-bulk-{n * 3 + 2:03d}"]
    _run(osb, iid, "PUT", f"/v2/service_instances/{iid}",
         {"service_id": SERVICE_ID, "plan_id": plan_id, "organization_guid": "org", "space_guid": "space",
          "parameters": params}, accepts_incomplete="true")
    binding = f"/v2/service_instances/{iid}/service_bindings/{bid}"
    _run(osb, iid, "PUT", binding, {"service_id": SERVICE_ID, "plan_id": plan_id})
    assert osb.get(binding).status_code == 200
    # a parameter change that adds and then removes a volume
    more = [*params["protected_volumes"], f"vol-bulk-{n * 3 + 3:03d}"]
    for volumes in (more, params["protected_volumes"]):
        _run(osb, iid, "PATCH", f"/v2/service_instances/{iid}",
             {"service_id": SERVICE_ID, "parameters": {"protected_volumes": volumes}}, accepts_incomplete="true")
    for kind, mode in ACTIONS.get(plan, FULL):
        action: dict[str, Any] = {"type": kind, **({"mode": mode} if mode else {})}
        _run(osb, iid, "PATCH", f"/v2/service_instances/{iid}",
             {"service_id": SERVICE_ID, "parameters": {"dr_action": action}}, accepts_incomplete="true")
    assert osb.get(f"/v2/service_instances/{iid}").status_code == 200
    _run(osb, iid, "DELETE", binding, None, service_id=SERVICE_ID, plan_id=plan_id)
    _run(osb, iid, "DELETE", f"/v2/service_instances/{iid}", None, service_id=SERVICE_ID, plan_id=plan_id,
         accepts_incomplete="true")


def test_every_exchange_of_every_plan_keeps_ibms_published_definitions(
        broker_factory: Callable[..., BrokerProcess], client_for: Callable[..., Client], db_path: Path,
        fake_ibmcloud: str, tmp_path: Path) -> None:
    broker = broker_factory(db_path, DRBROKER_ORCHESTRATOR="ibmcloud", DRBROKER_IBMCLOUD_BASE_URL=fake_ibmcloud,
                            DRBROKER_IBMCLOUD_APIKEY="contract-broker-apikey",
                            DRBROKER_IBMCLOUD_KMS_INSTANCE_ID=DEMO_KMS_INSTANCE_ID,
                            DRBROKER_IBMCLOUD_POLL_SECONDS="0.05", DRBROKER_IBMCLOUD_WAIT_SECONDS="60",
                            DRBROKER_METERING_RESOURCE_ID="powervs-dr-contract",
                            DRBROKER_METERING_HOUR_SECONDS="2", DRBROKER_METERING_INTERVAL_SECONDS="0.5")
    osb = client_for(broker)
    plans = _plan_ids(osb)
    for n, plan in enumerate(PLAN_NAMES):
        _lifecycle(osb, plan, plans[plan], n)

    broker.stop()  # its background jobs (metering, RPO sampling) would add exchanges between the two reads
    summary = requests.get(f"{fake_ibmcloud}/_fake/contract", timeout=10).json()
    exchanges = requests.get(f"{fake_ibmcloud}/_fake/exchanges", timeout=30).json()["exchanges"]
    contract = load()
    ours: list[str] = []
    operations: set[str] = set()
    unmodelled: set[str] = set()
    checked = 0
    for e in exchanges:
        op, found = contract.check(e["method"], e["path"], e["request"], e["status"], e["response"])
        if op is not None:
            operations.add(f"{op.service} {op.id}")
            checked += 1
        else:
            unmodelled.add(e["service"])
        ours += [f"{v} ({e['method']} {e['path']} -> {e['status']})" for v in found]
    report = {"operations_exercised": len(operations), "exchanges": len(exchanges), "exchanges_checked": checked,
              "fake_exchanges_checked": summary["exchanges_checked"], "models_checked": len(summary["models_checked"]),
              "models_defined": contract.models(), "sources": sources(), "operations": sorted(operations)}
    (tmp_path / "contract-report.json").write_text(json.dumps(report, indent=1))
    print("\nIBM contract:", json.dumps({k: v for k, v in report.items() if k != "operations"}, indent=1))

    assert not summary["violations"], "\n".join(v["text"] for v in summary["violations"][:40])
    assert not ours, "\n".join(ours[:40])
    # The run covered what it claims: all five services' creating calls and IBM's asynchronous reads.
    services = {o.split(" ", 1)[0] for o in operations}
    assert {"powervs", "kms", "iam_identity", "iam_policy", "resource_controller", "global_catalog", "dra",
            "metering"} <= services, services
    # Only the IAM token exchange has no model (ibm-cloud-sdk-core's token manager reads it); every other
    # exchange was checked, here and by the fake.
    assert unmodelled <= {"iam_token"}, unmodelled
    assert checked == summary["exchanges_checked"] > 500
