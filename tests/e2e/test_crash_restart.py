"""Durability against real processes: ``kill -9`` in the middle of a provision, then a restart."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import GRS_PLAN
from tests.e2e.conftest import BrokerProcess, Client, dr_params, query, sim_inventory

STEP = re.compile(r"^step (\d+)/(\d+): ")
CRASHED_VOLUMES = ("vol-bulk-001", "vol-bulk-002")
CONTROL_VOLUMES = ("vol-bulk-003", "vol-bulk-004")


def wait_for_step(osb: Client, iid: str, at_least: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = osb.last_operation(iid)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["state"] == "in progress", f"finished before step {at_least}: {body}"
        match = STEP.match(body.get("description", ""))
        if match and int(match.group(1)) >= at_least:
            return int(match.group(1))
        time.sleep(0.05)
    raise AssertionError(f"{iid} did not reach step {at_least} within {timeout}s")


def provision_steps(db: Path, iid: str) -> tuple[str, list[dict[str, Any]]]:
    """The provision operation of ``iid`` and its recorded steps."""
    (op,) = query(db, "SELECT id FROM operations WHERE instance_id = ? AND type = 'provision'", (iid,))
    return op["id"], query(db, "SELECT idx, name, state, attempts FROM operation_steps WHERE operation_id = ? "
                               "ORDER BY idx", (op["id"],))


def test_kill_9_during_provision_then_restart_finishes(
        broker_factory: Callable[..., BrokerProcess], client_for: Callable[..., Client], db_path: Path,
        tmp_path: Path) -> None:
    iid, control = "e2e-kill9-1", "e2e-kill9-control"
    first = broker_factory(db_path, DRBROKER_SIM_STEP_SECONDS="0.5")
    osb = client_for(first)
    r = osb.provision(iid, dr_params(*CRASHED_VOLUMES))
    assert r.status_code == 202, r.text
    operation = r.json()["operation"]

    step = wait_for_step(osb, iid, at_least=2)
    first.kill9()
    assert not first.alive()

    # What the crash left: the operation is still in progress, held by a process that no longer exists.
    (op,) = query(db_path, "SELECT id, state, step_index, lease_owner FROM operations WHERE instance_id = ?", (iid,))
    assert op["id"] == operation and op["state"] == "in_progress" and op["lease_owner"], op
    assert op["step_index"] >= step - 1

    second = broker_factory(db_path, DRBROKER_SIM_STEP_SECONDS="0.05")
    osb2 = client_for(second)
    # An identical repeat is still the same operation (202 while it runs, 200 once it is done).
    r = osb2.provision(iid, dr_params(*CRASHED_VOLUMES))
    assert r.status_code in (200, 202), r.text
    if r.status_code == 202:
        assert r.json()["operation"] == operation
    final = osb2.wait(iid, timeout=60)
    assert final["state"] == "succeeded", final
    assert osb2.last_operation(iid, operation).json()["state"] == "succeeded"
    assert osb2.get(f"/v2/service_instances/{iid}").status_code == 200

    # The same provision, never interrupted, is what the crashed one must look like.
    assert osb2.provision(control, dr_params(*CONTROL_VOLUMES)).status_code == 202
    assert osb2.wait(control, timeout=60)["state"] == "succeeded"

    # One operation, the same one, claimed again after the crash.
    ops = query(db_path, "SELECT id, type, state, attempts, step_index, step_total, lease_owner FROM operations "
                         "WHERE instance_id = ?", (iid,))
    assert len(ops) == 1, ops
    (op,) = ops
    assert op["id"] == operation and op["type"] == "provision" and op["state"] == "succeeded"
    assert op["attempts"] >= 2, op
    assert op["step_index"] == op["step_total"] > step, op
    assert op["lease_owner"] is None

    # Each step recorded once, in order, as done; the same steps as the uninterrupted provision.
    _, steps = provision_steps(db_path, iid)
    _, control_steps = provision_steps(db_path, control)
    assert [s["idx"] for s in steps] == list(range(op["step_total"])), steps
    assert [s["name"] for s in steps] == [s["name"] for s in control_steps]
    assert len({s["name"] for s in steps}) == len(steps), steps
    assert all(s["state"] == "done" for s in steps), steps
    assert all(s["attempts"] == 1 for s in control_steps), control_steps

    # The simulated cloud (read by a separate `drbroker sim inventory --json`) holds what an uninterrupted
    # provision makes, no more: one resource of each kind, one per volume for per-volume kinds.
    inventory = sim_inventory(db_path, tmp_path)
    crashed = Counter(r["kind"] for r in inventory if r["instance_id"] == iid)
    expected = Counter(r["kind"] for r in inventory if r["instance_id"] == control)
    assert crashed == expected, (crashed, expected)
    assert crashed["dr_policy"] == crashed["volume_group"] == crashed["auxiliary_volume_group"] == 1, crashed
    assert all(n in (1, len(CRASHED_VOLUMES)) for n in crashed.values()), crashed
    names = [(r["kind"], r["name"]) for r in inventory if r["instance_id"] == iid]
    assert len(names) == len(set(names)), names
    assert all(r["binding_id"] is None for r in inventory if r["instance_id"] == iid)
    (volume_group,) = [r for r in inventory if r["instance_id"] == iid and r["kind"] == "volume_group"]
    assert volume_group["state"] == "consistent_copying"
    instance = query(db_path, "SELECT state, plan_id FROM instances WHERE id = ?", (iid,))
    assert instance == [{"state": "ready", "plan_id": GRS_PLAN}]
