"""The ibmcloud backend's VM promises against the fake IBM Cloud, through the real service layer and worker:
a DR action touches only the VMs the instance manages (the customer's other VMs stay as they were, read
back through the PowerVS API), managed VMs move in priority order (a group starts once the previous one is
ACTIVE), and a rehearsal creates its VMs from the clones (``POST .../pvm-instances``, ``PVMInstanceCreate``),
measures RTO against the plan's target, and its clean-up deletes them before the clones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PRIMARY, SECONDARY
from tests.contracts.test_powervs_groups import IbmDR, _broker
from tests.ibmfake import fake_cloud
from tests.services.conftest import CUSTOMER_VM, PRIORITIES, STOP_ORDER, check_order, params_for, vm_safety_case

P_GUID = PRIMARY.rstrip(":").rsplit(":", 1)[-1]
S_GUID = SECONDARY.rstrip(":").rsplit(":", 1)[-1]
FULL = [("test_failover", None), ("cleanup_test", None), ("failover", "planned"), ("failback", None),
        ("failover", "unplanned"), ("failback", None)]
ACTIONS = {"rehearsal-only": FULL[:2]}


@pytest.fixture
def ibm(tmp_path: Path) -> Iterator[IbmDR]:
    with fake_cloud() as fake, _broker(tmp_path, fake) as broker:
        yield broker


def add_vm(ibm: IbmDR, name: str, volumes: list[str] | None = None) -> None:
    """A VM of the customer's in the primary workspace, made behind the broker's back."""
    S = ibm.fake.state
    with S.lock:
        S.vms[P_GUID][name] = {"pvmInstanceID": name, "serverName": name, "status": "ACTIVE", "processors": 1,
                               "memory": 8, "osType": "aix", "owner": None, "volumeIDs": list(volumes or [])}


def status(ibm: IbmDR, crn: str, vm: str) -> str | None:
    return (ibm.runtime.orchestrator.powervs.get_pvm_instance(crn, vm) or {}).get("status")


def run(ibm: IbmDR, iid: str, kind: str, mode: str | None = None) -> dict[str, Any]:
    result = ibm.run(iid, kind, mode)
    assert result["state"] == "succeeded", (kind, mode, result)
    return ibm.steps(iid)


@pytest.mark.parametrize("plan,managed", [("grs-async", "discovered"), ("ksys-managed", "listed"),
                                          ("ksys-managed-ha", "discovered"), ("rehearsal-only", "discovered")])
def test_dr_actions_never_touch_a_vm_the_instance_does_not_manage(ibm: IbmDR, plan: str, managed: str) -> None:
    iid = f"ivm-{plan}"
    params, untouched = vm_safety_case(plan, managed)
    ibm.ready_plan(iid, plan, params)
    add_vm(ibm, CUSTOMER_VM)  # after provisioning: DR Automation never managed it
    for kind, mode in ACTIONS.get(plan, FULL):
        run(ibm, iid, kind, mode)
        states = {vm: status(ibm, PRIMARY, vm) for vm in untouched}
        assert states == dict.fromkeys(untouched, "ACTIVE"), (kind, mode, states)
    assert not ibm.my_violations()


def test_vms_stop_low_first_and_start_high_first(ibm: IbmDR) -> None:
    add_vm(ibm, "vm-web-1")
    ibm.ready_plan("ivm-prio", "ksys-managed", {**params_for("ksys-managed"), "managed_vms": PRIORITIES})
    fo = run(ibm, "ivm-prio", "failover", "planned")
    check_order(fo["stop_primary_vms"], "stop", STOP_ORDER)
    check_order(fo["start_secondary_vms"], "start", STOP_ORDER[::-1])
    fb = run(ibm, "ivm-prio", "failback")
    check_order(fb["stop_secondary_vms"], "stop", STOP_ORDER)
    check_order(fb["start_primary_vms"], "start", STOP_ORDER[::-1])
    assert all(status(ibm, PRIMARY, vm) == "ACTIVE" for vm in STOP_ORDER)
    assert not ibm.my_violations()


def test_a_rehearsal_creates_vms_from_the_clones_and_measures_rto(ibm: IbmDR) -> None:
    S = ibm.fake.state
    with S.lock:  # the VMs' disks are the protected volumes
        S.vms[P_GUID]["vm-app-1"]["volumeIDs"] = ["vol-app-data-1"]
        S.vms[P_GUID]["vm-db-1"]["volumeIDs"] = ["vol-app-log-1"]
    params = {**params_for("ksys-managed"), "managed_vms": [PRIORITIES[0], PRIORITIES[2]]}
    ibm.ready_plan("ivm-rto", "ksys-managed", params)
    steps = run(ibm, "ivm-rto", "test_failover")
    start, verify = steps["start_rehearsal"].outputs, steps["verify_rehearsal"].outputs
    order = start["order"]
    assert [r["managed_vm"] for r in order] == ["vm-db-1", "vm-app-1"]  # High first
    assert all(r["action"] == "start" and r["state"] == "ACTIVE" for r in order)
    assert order[0]["ready_at"] <= order[1]["at"]
    clones = set(start["rehearsal_volumes"])
    for r in order:
        vm = ibm.runtime.orchestrator.powervs.get_pvm_instance(SECONDARY, r["vm"])
        assert vm["status"] == "ACTIVE" and vm["serverName"].endswith("_DRTest")
        assert len(vm["volumeIDs"]) == 1 and set(vm["volumeIDs"]) <= clones, vm
    with ibm.runtime.store.read() as tx:
        op = tx.latest_instance_operation("ivm-rto")
    boot = max(r["ready_at"] for r in order) - min(r["at"] for r in order)
    assert boot > 0 and boot <= verify["rto_seconds"] <= op.finished_at - op.started_at + 0.001, (boot, verify)
    assert verify["rto_target_seconds"] == 3600 and verify["rto_met"] is True
    attrs = ibm.attributes("ivm-rto")
    assert attrs["last_rehearsal_rto_seconds"] == verify["rto_seconds"] and attrs["last_rehearsal_rto_met"] is True
    posts = [e for e in ibm.exchanges() if e["method"] == "POST" and e["path"].endswith("/pvm-instances")]
    assert len(posts) == 2 and all(e["status"] == 201 for e in posts), posts
    steps = run(ibm, "ivm-rto", "cleanup_test")
    assert all(status(ibm, SECONDARY, r["vm"]) is None for r in order)
    deletes = [e["path"] for e in ibm.exchanges() if e["method"] == "DELETE" and "/cloud-instances/" in e["path"]]
    vm_deletes = [i for i, p in enumerate(deletes) if "/pvm-instances/" in p]
    vol_deletes = [i for i, p in enumerate(deletes) if "/volumes/" in p]
    assert vm_deletes and vol_deletes and max(vm_deletes) < min(vol_deletes), deletes  # VMs before their disks
    assert not [v for v in ibm.my_violations()] and not _pvm_violations(ibm)


def _pvm_violations(ibm: IbmDR) -> list[Any]:
    import requests

    found = requests.get(f"{ibm.fake.url}/_fake/contract", timeout=10).json()["violations"]
    return [v for v in found if str(v.get("operation")).startswith("pcloud.pvminstances.")]
