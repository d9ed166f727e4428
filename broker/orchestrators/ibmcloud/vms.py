"""PowerVS VM steps: which VMs the instance manages, and powering them (or their backups) off and on.

Failover and failback stop and start the managed primary VMs and the ``<name>_BackUp`` VMs KSYS made for them
at the secondary, in priority order (``broker.domain.recovery``), and no other VM. DR Automation's API
(ibm_dra_python_sdk 0.1.0 ``create_manage_dr``) takes no VM priority, so the broker orders the moves itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from broker.domain import recovery
from broker.domain.errors import PermanentBackendError
from broker.domain.protocols import StepContext
from broker.orchestrators.ibmcloud.common import Action, IbmSteps


class VmSteps(IbmSteps):
    """The managed VMs of an instance and the PowerVS VM power actions."""

    def wanted_vms(self, ctx: StepContext) -> list[dict[str, Any]]:
        primary, _ = self._sites(ctx)
        vms = self.powervs.list_pvm_instances(primary)
        wanted = [vm["pvm_instance_id"] for vm in ctx.parameters.get("managed_vms") or []]
        if wanted:
            missing = sorted(set(wanted) - {v.get("pvmInstanceID") for v in vms})
            if missing:
                raise PermanentBackendError(f"VMs not found in the primary workspace: {', '.join(missing)}")
            return [v for v in vms if v.get("pvmInstanceID") in wanted]
        return vms

    def managed(self, ctx: StepContext) -> list[tuple[str, str]]:
        """(pvmInstanceID, priority) of the VMs the instance manages: ``managed_vms``, else the VMs DR
        Automation was given to manage at provisioning (the ``manage_vms`` step's record); none on plans
        without an orchestrator. Never "every VM of the workspace" (``broker.domain.recovery``)."""
        if not recovery.moves_vms(ctx.plan.features):
            return []
        listed = recovery.listed_vms(ctx.parameters)
        if listed:
            return listed
        return [(vm, recovery.DEFAULT_PRIORITY) for vm in self._recorded(ctx.instance_id, "managed_vms") or []]

    def backup_names(self, ctx: StepContext, managed: list[tuple[str, str]]) -> dict[str, str]:
        """managed VM id -> the name of its ``<name>_BackUp`` VM at the secondary (as discovery recorded it,
        so an unplanned failover need not read the lost primary)."""
        recorded = self._recorded(ctx.instance_id, "backup_of") or {}
        if all(vm in recorded for vm, _ in managed):
            return {vm: recorded[vm] for vm, _ in managed}
        primary, _ = self._sites(ctx)
        names = {v.get("pvmInstanceID"): v.get("serverName") for v in self.powervs.list_pvm_instances(primary)}
        return {vm: f"{names.get(vm) or vm}_BackUp" for vm, _ in managed}

    def in_order(self, crn: str, entries: list[dict[str, Any]], verb: str,
                 act: Callable[[dict[str, Any]], str]) -> list[dict[str, Any]]:
        """Act on ``entries`` (``vm`` id or None, ``status``, ``managed_vm``, ``priority``, ``name``) one
        priority group after another (stop Low first, start High first), polling PowerVS until the whole group
        is in its state before the next one is acted on. ``act`` performs the call and returns the VM's id.
        Returns the per-VM record: what was done, when, the state reached and when."""
        target = "ACTIVE" if verb == "start" else "SHUTOFF"
        order: list[dict[str, Any]] = []
        for priority, group in recovery.priority_groups(entries, lambda e: e["priority"], verb):
            acted: list[dict[str, Any]] = []
            for e in group:
                at = time.time()
                done = bool(e.get("vm")) and e.get("status") == target
                vm_id = e["vm"] if done else act(e)
                acted.append({"vm": vm_id, "name": e.get("name"), "managed_vm": e["managed_vm"],
                              "priority": priority, "action": "none" if done else verb, "at": at})

            def probe(acted: list[dict[str, Any]] = acted, priority: str = priority) -> tuple[bool, str]:
                states = {r["vm"]: (self.powervs.get_pvm_instance(crn, r["vm"]) or {}).get("status") for r in acted}
                broken = [vm for vm, st in states.items() if str(st).upper() == "ERROR"]
                if broken:
                    raise PermanentBackendError(f"PowerVS VMs in ERROR: {', '.join(broken)}")
                pending = [vm for vm, st in states.items() if st != target]
                return not pending, f"waiting for {', '.join(pending)} to be {target} ({priority} priority)"
            self._wait(f"PowerVS VM {verb}", probe)
            ready = time.time()
            order += [{**r, "state": target, "ready_at": ready} for r in acted]
        return order

    def power(self, site: str, action: str, target: str) -> Action:
        """Stop or start the managed VMs at ``site`` (the primary's own, or their ``_BackUp`` VMs at the
        secondary) in priority order; no other VM of the workspace is touched."""
        verb = "start" if target == "ACTIVE" else "stop"

        def act(ctx: StepContext) -> Mapping[str, Any]:
            primary, secondary = self._sites(ctx)
            managed = self.managed(ctx)
            crn = primary if site == "primary" else secondary
            present = self.powervs.list_pvm_instances(crn) if managed else []
            if site == "primary":
                found = {v.get("pvmInstanceID"): v for v in present}
                wanted = {vm: vm for vm, _ in managed}
            else:
                found = {v.get("serverName"): v for v in present}
                wanted = self.backup_names(ctx, managed)
            missing = sorted(key for key in wanted.values() if key not in found)
            if missing:
                raise PermanentBackendError(f"managed VMs not found in the {site} workspace: {', '.join(missing)}")
            entries = [{"vm": found[wanted[vm]]["pvmInstanceID"], "name": found[wanted[vm]].get("serverName"),
                        "status": found[wanted[vm]].get("status"), "managed_vm": vm, "priority": priority}
                       for vm, priority in managed]

            def call(e: dict[str, Any]) -> str:
                self.powervs.pvm_action(crn, e["vm"], action)
                return str(e["vm"])
            order = self.in_order(crn, entries, verb, call)
            return {f"{site}_vms_{target.lower()}": sorted(r["vm"] for r in order), "order": order}
        return act
