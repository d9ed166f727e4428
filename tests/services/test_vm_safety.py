"""Every promise kept, on the simulated backend through the service layer: a DR action touches only the VMs
the instance manages, managed VMs move in priority order, and a rehearsal boots its VMs and measures RTO
against the plan's target."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.app import build_runtime, create_app
from broker.orchestrators.simulated.cloud import SEED_OWNER, SimulatedCloud
from tests.conftest import PRIMARY, make_settings
from tests.services.conftest import (
    CUSTOMER_VM,
    DR,
    PLAN_NAMES,
    PRIORITIES,
    STOP_ORDER,
    check_order,
    params_for,
    vm_safety_case,
)

# Every action each plan offers (rehearsal-only refuses real moves).
FULL = [("test_failover", None), ("cleanup_test", None), ("failover", "planned"), ("failback", None),
        ("failover", "unplanned"), ("failback", None)]
ACTIONS = {"rehearsal-only": FULL[:2]}


def add_customer_vm(dr: DR, vm: str = CUSTOMER_VM) -> None:
    SimulatedCloud(dr.runtime.store.engine).ensure(
        "pvm_instance", SEED_OWNER, None, "ACTIVE", {"workspace_crn": PRIMARY, "vm_id": vm}, part=f"{PRIMARY}/{vm}")


def primary_states(dr: DR) -> dict[str, str]:
    cloud = SimulatedCloud(dr.runtime.store.engine)
    return {vm.data["vm_id"]: vm.state for vm in cloud.of_kind("pvm_instance", SEED_OWNER)
            if vm.data["workspace_crn"] == PRIMARY}


def run(dr: DR, iid: str, kind: str, mode: str | None = None) -> str:
    r = dr.action(iid, kind, mode)
    assert r.status_code == 202, r.get_data(as_text=True)
    result = dr.wait(iid)
    assert result["state"] == "succeeded", result
    return r.json["operation"]


def steps(dr: DR, op_id: str) -> dict[str, Any]:
    with dr.runtime.store.read() as tx:
        return {s.name: s for s in tx.steps(op_id)}


@pytest.mark.parametrize("managed", ["listed", "discovered"])
@pytest.mark.parametrize("plan", PLAN_NAMES)
def test_dr_actions_never_touch_a_vm_the_instance_does_not_manage(dr: DR, plan: str, managed: str) -> None:
    iid = f"safe-{plan}-{managed}"
    params, untouched = vm_safety_case(plan, managed)
    dr.ready_plan(iid, plan, params)
    add_customer_vm(dr)  # after provisioning: DR Automation never discovered it
    for kind, mode in ACTIONS.get(plan, FULL):
        run(dr, iid, kind, mode)
        states = primary_states(dr)
        assert {vm: states[vm] for vm in untouched} == dict.fromkeys(untouched, "ACTIVE"), (kind, mode, states)


def test_grs_async_workflows_have_no_vm_steps(dr: DR) -> None:
    dr.ready_plan("safe-grs-steps", "grs-async")
    for kind, mode in FULL:
        names = list(steps(dr, run(dr, "safe-grs-steps", kind, mode)))
        assert not [n for n in names if n.endswith("_vms")], (kind, mode, names)


def test_vms_stop_low_first_and_start_high_first(dr: DR) -> None:
    add_customer_vm(dr, "vm-web-1")
    params = {**params_for("ksys-managed"), "managed_vms": PRIORITIES}
    dr.ready_plan("prio", "ksys-managed", params)
    fo = steps(dr, run(dr, "prio", "failover", "planned"))
    check_order(fo["stop_primary_vms"], "stop", STOP_ORDER)
    check_order(fo["start_secondary_vms"], "start", STOP_ORDER[::-1])
    fb = steps(dr, run(dr, "prio", "failback"))
    check_order(fb["stop_secondary_vms"], "stop", STOP_ORDER)
    check_order(fb["start_primary_vms"], "start", STOP_ORDER[::-1])
    assert primary_states(dr) == {"vm-app-1": "ACTIVE", "vm-web-1": "ACTIVE", "vm-db-1": "ACTIVE"}


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[DR]:
    # 0.05 s per step weight: boots take time, so the RTO has bounds worth checking
    rt = build_runtime(make_settings(tmp_path, sim_step_seconds=0.05))
    rt.worker.start()
    yield DR(create_app(runtime=rt).test_client(), rt)
    rt.worker.stop(10)


def _rehearse(dr: DR, iid: str) -> tuple[dict[str, Any], float, float]:
    op_id = run(dr, iid, "test_failover")
    with dr.runtime.store.read() as tx:
        op = tx.get_operation(op_id)
        records = tx.steps(op_id)
    by_name = {s.name: s for s in records}
    order = by_name["start_rehearsal"].outputs["order"]
    assert [r["managed_vm"] for r in order] == ["vm-db-1", "vm-app-1"]  # High first
    assert all(r["action"] == "start" and r["state"] == "ACTIVE" for r in order), order
    boot = max(r["ready_at"] for r in order) - min(r["at"] for r in order)
    duration = records[-1].finished_at - op.started_at
    return by_name["verify_rehearsal"].outputs, boot, duration


def test_a_rehearsal_boots_the_vms_and_measures_rto_against_the_plan_target(slow: DR, monkeypatch) -> None:
    dr = slow
    params = {**params_for("ksys-managed"), "managed_vms": [PRIORITIES[0], PRIORITIES[2]]}
    dr.ready_plan("rto", "ksys-managed", params)
    out, boot, duration = _rehearse(dr, "rto")
    assert boot >= 0.1  # two priority groups, each booting for a simulated while
    assert boot <= out["rto_seconds"] <= duration + 0.001, (boot, out, duration)
    assert out["rto_target_seconds"] == 3600 and out["rto_met"] is True
    vms = {r.data["name"]: r.state for r in dr.inventory("rto") if r.kind == "rehearsal_vm"}
    assert vms == {"vm-app-1_DRTest": "ACTIVE", "vm-db-1_DRTest": "ACTIVE"}
    attrs = dr.attributes("rto")
    assert attrs["last_rehearsal_rto_seconds"] == out["rto_seconds"] and attrs["last_rehearsal_rto_met"] is True
    assert attrs["rto_target_seconds"] == 3600
    assert primary_states(dr) == {"vm-app-1": "ACTIVE", "vm-db-1": "ACTIVE"}  # production is not touched
    run(dr, "rto", "cleanup_test")
    assert not [r for r in dr.inventory("rto") if r.kind in ("rehearsal_vm", "rehearsal")]
    # a target below the boot time is missed
    plan = dr.runtime.catalog.find_plan("ksys-managed")
    target = boot / 2
    monkeypatch.setitem(plan.features, "rto_target_minutes", target / 60)
    out, boot, duration = _rehearse(dr, "rto")
    assert boot <= out["rto_seconds"] <= duration + 0.001 and out["rto_met"] is False
    assert out["rto_target_seconds"] == pytest.approx(target, abs=0.001)
    assert dr.attributes("rto")["last_rehearsal_rto_met"] is False


def test_every_plan_has_an_rto_target_and_its_bullet_says_it(runtime) -> None:
    for name in PLAN_NAMES:
        plan = runtime.catalog.find_plan(name)
        minutes = plan.features.get("rto_target_minutes")
        assert isinstance(minutes, int) and minutes > 0, name
        bullets = " ".join((plan.raw.get("metadata") or {}).get("bullets") or [])
        found = re.search(r"RTO target (\d+) h", bullets)
        assert found and int(found.group(1)) * 60 == minutes, (name, bullets)
