from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from broker.domain.catalog import Plan
from broker.workflows.retry import RetryPolicy
from tests.conftest import GRS_PARAMS, ORCH_DEPLOY, OSB, SERVICE_ID

PLAN_NAMES = ("grs-async", "ksys-managed", "ksys-managed-ha", "ksys-managed-byok", "rehearsal-only")
ORCH = {"name": "ksys-prod", "password": "Orchestrator-Pass-42", **ORCH_DEPLOY}
ENCRYPTION = {"key_ring_id": "dr-test", "rotation_interval_months": 3}
# The engine's retry policy (same attempts, same cap on a Retry-After) with a 10 ms first wait instead of
# 200 ms, for tests that count retries of injected faults rather than time them.
QUICK_RETRY = replace(RetryPolicy(), initial=0.01)


@pytest.fixture(autouse=True)
def _current_schema(migrated_state_db: Path) -> None:
    """Every runtime built here on ``tmp_path`` starts on a database already at head (tests/conftest.py)."""


def plan_id(runtime, name: str) -> str:
    plan: Plan | None = runtime.catalog.find_plan(name)
    assert plan is not None, name
    return plan.id


def params_for(name: str, base: dict[str, Any] | None = None) -> dict[str, Any]:
    params = dict(base or GRS_PARAMS)
    if name != "grs-async":
        params["orchestrator"] = dict(ORCH)
    if name.endswith("byok"):
        params["encryption"] = dict(ENCRYPTION)
    return params


class DR(OSB):
    """OSB helper with the DR plans by name."""

    def __init__(self, client, runtime) -> None:
        super().__init__(client)
        self.runtime = runtime

    def pid(self, name: str) -> str:
        return plan_id(self.runtime, name)

    def provision_plan(self, iid: str, name: str, params: dict[str, Any] | None = None, **extra: Any):
        return self.provision(iid, self.pid(name), params_for(name) if params is None else params, **extra)

    def ready_plan(self, iid: str, name: str, params: dict[str, Any] | None = None) -> None:
        r = self.provision_plan(iid, name, params)
        assert r.status_code == 202, r.get_data(as_text=True)
        result = self.wait(iid)
        assert result["state"] == "succeeded", result

    def action(self, iid: str, kind: str, mode: str | None = None, plan: str = "ksys-managed"):
        action: dict[str, Any] = {"type": kind}
        if mode:
            action["mode"] = mode
        return self.patch(f"/v2/service_instances/{iid}?accepts_incomplete=true",
                          {"service_id": SERVICE_ID, "parameters": {"dr_action": action}})

    def attributes(self, iid: str) -> dict[str, Any]:
        r = self.get(f"/v2/service_instances/{iid}")
        assert r.status_code == 200, r.get_data(as_text=True)
        return r.json["metadata"]["attributes"]

    def inventory(self, iid: str) -> list:
        from broker.orchestrators.simulated.cloud import SimulatedCloud

        return SimulatedCloud(self.runtime.store.engine).inventory(iid)


@pytest.fixture
def dr(client, worker) -> DR:
    return DR(client, worker)


CUSTOMER_VM = "vm-customer-1"  # the customer's own VM in the primary workspace, managed by no instance


def vm_safety_case(plan: str, managed: str) -> tuple[dict[str, Any], list[str]]:
    """Parameters for a VM-safety run (``managed``: the VMs are ``listed`` in ``managed_vms`` or ``discovered``)
    and the primary VMs no DR action of that instance may touch."""
    params = params_for(plan)
    if managed == "listed":
        params["managed_vms"] = [{"pvm_instance_id": "vm-app-1", "priority": "High"}]
    # grs-async: "you own the standby VMs": no VM of the workspace is the broker's to touch
    untouched = ([CUSTOMER_VM] + (["vm-db-1"] if managed == "listed" else [])
                 if plan != "grs-async" else [CUSTOMER_VM, "vm-app-1", "vm-db-1"])
    return params, untouched

PRIORITIES = [{"pvm_instance_id": "vm-app-1", "priority": "Low"}, {"pvm_instance_id": "vm-web-1", "priority": "Medium"},
              {"pvm_instance_id": "vm-db-1", "priority": "High"}]
STOP_ORDER = ["vm-app-1", "vm-web-1", "vm-db-1"]  # Low, Medium, High


def check_order(step: Any, action: str, expected: list[str]) -> None:
    """A recovery-order step record: the VMs in ``expected`` order, each acted on and in its target state, and
    each priority group acted on only once the previous one reached its state."""
    order = step.outputs["order"]
    assert [r["managed_vm"] for r in order] == expected, order
    assert {r["action"] for r in order} == {action}, order
    assert all(r["state"] == ("ACTIVE" if action == "start" else "SHUTOFF") for r in order), order
    for before, after in itertools.pairwise(order):
        assert before["ready_at"] <= after["at"], (before, after)
