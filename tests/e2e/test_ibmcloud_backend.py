"""The ibmcloud backend end to end: a real ``drbroker serve`` (DRBROKER_ORCHESTRATOR=ibmcloud) talking over
HTTP to a real ``drbroker fake-ibmcloud`` process, pointed at it only by DRBROKER_IBMCLOUD_BASE_URL. The full
OSB lifecycle with a bind, every day-2 action, hourly usage records, and nothing left behind."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from broker.fakecloud.state import DEMO_KMS_INSTANCE_ID
from tests.conftest import SERVICE_ID
from tests.e2e.conftest import BrokerProcess, Client, query
from tests.services.conftest import params_for

BYOK_PLAN = "3d4e5f6a-7b8c-4d9e-9f0a-2b3c4d5e6f7a"


def _patch(osb: Client, iid: str, body: dict[str, Any]) -> requests.Response:
    return osb.request("PATCH", f"/v2/service_instances/{iid}?accepts_incomplete=true", json=body)


def _action(osb: Client, iid: str, kind: str, mode: str | None = None) -> dict[str, Any]:
    action: dict[str, Any] = {"type": kind, **({"mode": mode} if mode else {})}
    r = _patch(osb, iid, {"service_id": SERVICE_ID, "parameters": {"dr_action": action}})
    assert r.status_code == 202, r.text
    final = osb.wait(iid, timeout=60)
    assert final["state"] == "succeeded", (kind, mode, final)
    return final


def _attributes(osb: Client, iid: str) -> dict[str, Any]:
    r = osb.get(f"/v2/service_instances/{iid}")
    assert r.status_code == 200, r.text
    return r.json()["metadata"]["attributes"]


def test_full_lifecycle_and_every_day2_action_against_the_fake_ibm_cloud(
        broker_factory: Callable[..., BrokerProcess], client_for: Callable[..., Client], db_path: Path,
        fake_ibmcloud: str) -> None:
    broker = broker_factory(db_path, DRBROKER_ORCHESTRATOR="ibmcloud", DRBROKER_IBMCLOUD_BASE_URL=fake_ibmcloud,
                            DRBROKER_IBMCLOUD_APIKEY="e2e-broker-apikey",
                            DRBROKER_IBMCLOUD_KMS_INSTANCE_ID=DEMO_KMS_INSTANCE_ID,
                            DRBROKER_IBMCLOUD_POLL_SECONDS="0.05", DRBROKER_IBMCLOUD_WAIT_SECONDS="30",
                            DRBROKER_METERING_RESOURCE_ID="powervs-dr-e2e", DRBROKER_METERING_HOUR_SECONDS="2",
                            DRBROKER_METERING_INTERVAL_SECONDS="0.5")
    osb = client_for(broker)
    iid, bid = "e2e-ibm-1", "e2e-ibm-bind-1"
    assert "IBM Cloud: all APIs at " + fake_ibmcloud in broker.log_tail(20000)

    # provision (ksys-managed-byok: replication, DR Automation orchestrator with a standby, Key Protect)
    params = params_for("ksys-managed-byok")
    r = osb.provision(iid, params, plan_id=BYOK_PLAN)
    assert r.status_code == 202, r.text
    final = osb.wait(iid, timeout=90)
    assert final["state"] == "succeeded", final
    assert "replication consistent_copying" in final["description"]
    attrs = _attributes(osb, iid)
    assert attrs["replication_state"] == "consistent_copying" and attrs["rpo_met"] is True
    assert attrs["consistency_group"].startswith("rccg-")

    # bind: credentials from IAM, Key Protect and DR Automation; no plaintext key
    binding_path = f"/v2/service_instances/{iid}/service_bindings/{bid}"
    r = osb.put(binding_path, {"service_id": SERVICE_ID, "plan_id": BYOK_PLAN})
    assert r.status_code == 201, r.text
    creds = r.json()["credentials"]
    assert creds["backend"] == "ibmcloud" and creds["iam"]["apikey"]
    assert creds["kms"]["wrapped_dek"] and creds["kms"]["aad"] == [iid, bid]
    assert creds["replication"]["primary"]["volume_group_id"] and creds["replication"]["secondary"]["volume_group_id"]
    assert creds["orchestrator"]["primary_ip"] and creds["orchestrator"]["standby_ip"]

    # every day-2 action
    _action(osb, iid, "test_failover")
    assert _attributes(osb, iid)["test_failover_active"] is True
    _action(osb, iid, "cleanup_test")
    _action(osb, iid, "failover", "planned")
    attrs = _attributes(osb, iid)
    assert attrs["active_site"] == "secondary" and attrs["replication_state"] == "idling"
    _action(osb, iid, "failback")
    attrs = _attributes(osb, iid)
    assert attrs["active_site"] == "primary" and attrs["replication_primary_role"] == "master"
    _action(osb, iid, "resync")
    _action(osb, iid, "failover", "unplanned")
    assert _attributes(osb, iid)["active_site"] == "secondary"
    _action(osb, iid, "failback")
    assert _attributes(osb, iid)["replication_state"] == "consistent_copying"

    # the IBM transaction ids of each step are in the audit trail (and, sealed, in the step's record)
    log = requests.get(f"{fake_ibmcloud}/_fake/requests", timeout=5).json()["requests"]
    served = {r["transaction_id"] for r in log}
    audited = query(db_path, "SELECT detail FROM audit_events WHERE action = 'ibmcloud:failover_replication'")
    assert len(audited) == 2
    for row in audited:
        ids = [c["transaction_id"] for c in json.loads(row["detail"])["ibm_calls"]]
        assert ids and set(ids) <= served

    # usage records: the meter thread of the serving process reports finished (2 s) periods once each
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not requests.get(f"{fake_ibmcloud}/_fake/usage", timeout=5).json()["usage"]:
        time.sleep(0.2)
    usage = requests.get(f"{fake_ibmcloud}/_fake/usage", timeout=5).json()["usage"]
    assert usage and {u["resource_instance_id"] for u in usage} == {iid}
    periods = [(u["start"], u["end"]) for u in usage]
    assert len(periods) == len(set(periods))

    # unbind, deprovision: nothing is left in the fake IBM Cloud
    r = osb.delete(binding_path, params={"service_id": SERVICE_ID, "plan_id": BYOK_PLAN})
    assert r.status_code == 200, r.text
    r = osb.delete(f"/v2/service_instances/{iid}",
                   params={"service_id": SERVICE_ID, "plan_id": BYOK_PLAN, "accepts_incomplete": "true"})
    assert r.status_code == 202, r.text
    final = osb.wait(iid, timeout=90)
    assert final["state"] == "succeeded", final
    state = requests.get(f"{fake_ibmcloud}/_fake/state", timeout=5).json()
    assert state["volume_groups"] == [] and state["service_ids"] == [] and state["policies"] == []
    assert [k["state"] for k in state["keys"]] == [5] and state["key_rings"] == []
    # deleted: the DR Automation instance waits in reclamation until IBM reclaims it
    assert [r["state"] for r in state["resource_instances"]] == ["pending_reclamation"] and state["deployments"] == []
    assert not [v for v in state["volumes"] if v["replicationEnabled"] or v["groupID"]]
    assert not [v for v in state["vms"] if v["status"] != "ACTIVE"]
