"""PowerVS VM steps: which VMs the instance manages, and powering them (or their backups) off and on.

Failover and failback stop and start the primary VMs and the ``<name>_BackUp`` VMs KSYS made at the secondary;
the DR Automation steps use the same selection of managed VMs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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

    def power(self, site: str, action: str, target: str) -> Action:
        def act(ctx: StepContext) -> Mapping[str, Any]:
            primary, secondary = self._sites(ctx)
            vms = self.wanted_vms(ctx)
            if site == "primary":
                crn, ids = primary, [v["pvmInstanceID"] for v in vms]
            else:
                backups = {f"{v.get('serverName')}_BackUp" for v in vms}
                crn = secondary
                ids = [v["pvmInstanceID"] for v in self.powervs.list_pvm_instances(secondary)
                       if v.get("serverName") in backups]
            todo = [i for i in ids if (self.powervs.get_pvm_instance(crn, i) or {}).get("status") != target]
            for vm_id in todo:
                self.powervs.pvm_action(crn, vm_id, action)

            def probe() -> tuple[bool, str]:
                pending = [i for i in todo if (self.powervs.get_pvm_instance(crn, i) or {}).get("status") != target]
                return not pending, f"waiting for {', '.join(pending)} to be {target}"
            if todo:
                self._wait(f"PowerVS VM {action}", probe)
            return {f"{site}_vms_{target.lower()}": sorted(ids)}
        return act
