"""Test-failover (rehearsal) steps: point-in-time clones of the replicas at the secondary, their check, clean-up.

Kept apart from replication because a rehearsal never touches the replication group: it clones the
auxiliary volumes at the secondary while replication carries on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from broker.domain import recovery
from broker.domain.errors import PermanentBackendError
from broker.domain.protocols import StepContext
from broker.orchestrators.ibmcloud.common import Clients, IbmSteps
from broker.orchestrators.ibmcloud.naming import Names
from broker.orchestrators.ibmcloud.vms import VmSteps

READY = ("available", "in-use")


class RehearsalSteps(IbmSteps):
    """Start, verify and clean up a DR rehearsal with PowerVS volume clones.

    The clones are found by name: PowerVS names them ``clone-<base>-<5 random digits>[-<n>]`` and the base
    name (``Names.rehearsal``) fits the 20 characters PowerVS keeps of it, so the prefix identifies them
    whatever the digits. That is also how a retry finds clones an earlier attempt made when the clone
    request's answer was lost (the volumes exist from the start of the clone task).
    """

    def __init__(self, clients: Clients, vms: VmSteps) -> None:
        super().__init__(clients)
        self.vms = vms

    def _rehearsal_vms(self, ctx: StepContext) -> list[dict[str, Any]]:
        _, secondary = self._sites(ctx)
        names = Names(ctx.instance_id)
        return [v for v in self.powervs.list_pvm_instances(secondary) if names.is_rehearsal_vm(v.get("serverName"))]

    def _boot_vms(self, ctx: StepContext, clone_of: Mapping[str, str]) -> list[dict[str, Any]]:
        """A ``<tag>-<VM>_DRTest`` VM per managed VM in the secondary workspace, made with ``POST
        .../pvm-instances`` (``PVMInstanceCreate``) from the clones of that VM's protected disks, one priority
        group after another (High first, each ACTIVE before the next starts). ``clone_of``: auxiliary volume
        id -> its clone. Returns the per-VM record (``vms.VmSteps.in_order``)."""
        managed = self.vms.managed(ctx)
        if not managed:
            return []
        primary, secondary = self._sites(ctx)
        names = Names(ctx.instance_id)
        aux_of = {str(a.get("name"))[len(names.aux_prefix):]: a["volumeID"] for a in self._aux_volumes(ctx)}
        present = {v.get("serverName"): v for v in self._rehearsal_vms(ctx)}
        entries = []
        for vm, priority in managed:
            src = self.powervs.get_pvm_instance(primary, vm)
            if src is None:
                raise PermanentBackendError(f"managed VM {vm} not found in the primary workspace")
            name = names.rehearsal_vm(str(src.get("serverName") or vm))
            have = present.get(name) or {}
            entries.append({"vm": have.get("pvmInstanceID"), "status": have.get("status"), "name": name,
                            "managed_vm": vm, "priority": priority, "source": src})

        def boot(e: dict[str, Any]) -> str:
            if e["vm"]:  # made by an earlier attempt: start it if it is down, else wait for its boot
                if e["status"] == "SHUTOFF":
                    self.powervs.pvm_action(secondary, e["vm"], "start")
                return str(e["vm"])
            src = e["source"]
            disks = [clone_of[aux_of[v]] for v in src.get("volumeIDs") or [] if clone_of.get(aux_of.get(v, ""))]
            # PVMInstanceCreate's required fields, sized like the VM it rehearses; its disks are the clones
            body: dict[str, Any] = {"serverName": e["name"], "imageID": src.get("imageID"),
                                    "processors": src.get("processors"), "memory": src.get("memory"),
                                    "procType": src.get("procType") or "shared", "volumeIDs": disks}
            created = self.powervs.create_pvm_instance(secondary, body)
            if not created or not created[0].get("pvmInstanceID"):
                raise PermanentBackendError(f"PowerVS did not return the rehearsal VM {e['name']}")
            return str(created[0]["pvmInstanceID"])
        return self.vms.in_order(secondary, entries, "start", boot)

    def _rehearsal_volumes(self, ctx: StepContext) -> list[dict[str, Any]]:
        _, secondary = self._sites(ctx)
        prefixes = Names(ctx.instance_id).rehearsal_prefixes
        return [v for v in self.powervs.list_volumes(secondary) if str(v.get("name", "")).startswith(prefixes)]

    def _live_clones(self, ctx: StepContext) -> list[dict[str, Any]]:
        return [v for v in self._rehearsal_volumes(ctx) if v.get("state") != "deleting"]

    def start_rehearsal(self, ctx: StepContext) -> Mapping[str, Any]:
        """Clone the auxiliary volumes at the secondary; outputs the clone task and the cloned volume ids.

        ``clone_task_id`` is null when a retry found the clones of an attempt whose answer was lost (PowerVS
        lists no clone tasks, so the task cannot be found again); the clones are then waited on by their state.
        """
        _, secondary = self._sites(ctx)
        aux = [v["volumeID"] for v in self._aux_volumes(ctx)]
        if self._live_clones(ctx):
            def ready() -> tuple[bool, str]:
                vols = self._live_clones(ctx)
                broken = [v["volumeID"] for v in vols if v.get("state") == "error"]
                if broken:
                    raise PermanentBackendError(f"rehearsal clones in error: {', '.join(broken)}")
                pending = [v["volumeID"] for v in vols if v.get("state") not in READY]
                return (not pending and len(vols) >= len(aux),
                        f"{len(vols) - len(pending)} of {len(aux)} clones available")
            self._wait("PowerVS volume clone", ready)
            # The task, and with it which clone is whose, was known only to the attempt that made it: VMs
            # that attempt did not make yet are made without disks (those it made keep theirs).
            return {"rehearsal_volumes": sorted(v["volumeID"] for v in self._live_clones(ctx)),
                    "clone_task_id": None, "order": self._boot_vms(ctx, {})}
        if not aux:
            raise PermanentBackendError("no auxiliary volumes at the secondary to rehearse with")
        # A point-in-time copy of the replicas at the secondary: rehearsal VMs boot from these while
        # replication carries on (KSYS's DR test does the same with its own clones). The replicas are
        # replication-enabled and a clone inherits that unless told otherwise: a rehearsal copy must not
        # replicate (nor be billed for it).
        task = self.powervs.clone_volumes(secondary, {"name": Names(ctx.instance_id).rehearsal, "volumeIDs": aux,
                                                      "targetReplicationEnabled": False})
        task_id = task["cloneTaskID"]
        clone_of: dict[str, str] = {}

        def probe() -> tuple[bool, str]:
            nonlocal clone_of
            st = self.powervs.get_clone_task(secondary, task_id)
            if st.get("status") == "failed":
                raise PermanentBackendError(f"PowerVS clone task {task_id} failed: "
                                            f"{st.get('failedReason') or 'no reason given'}")
            clone_of = {c.get("sourceVolumeID"): c.get("clonedVolumeID") for c in st.get("clonedVolumes") or []
                        if c.get("clonedVolumeID")}
            return st.get("status") == "completed", f"clone {st.get('status')} ({st.get('percentComplete', 0)}%)"
        self._wait("PowerVS volume clone", probe)
        return {"rehearsal_volumes": sorted(clone_of.values()), "clone_task_id": task_id,
                "order": self._boot_vms(ctx, clone_of)}

    def verify_rehearsal(self, ctx: StepContext) -> Mapping[str, Any]:
        vols = self._live_clones(ctx)
        wanted = len(self._aux_volumes(ctx))
        if not vols or len(vols) < wanted or any(v.get("state") not in READY for v in vols):
            raise PermanentBackendError(f"rehearsal resources are missing ({len(vols)} clones of {wanted} replicas)")
        managed = self.vms.managed(ctx)
        vms = self._rehearsal_vms(ctx)
        down = [str(v.get("serverName")) for v in vms if v.get("status") != "ACTIVE"]
        if len(vms) < len(managed) or down:
            raise PermanentBackendError(f"rehearsal VMs not ACTIVE: {len(vms)} of {len(managed)} made"
                                        + (f", down: {', '.join(down)}" if down else ""))
        # every managed VM's rehearsal twin is ACTIVE: the RTO runs from the operation's start until now
        return recovery.rto_outcome(ctx.operation_started_at, time.time(), ctx.plan.features)

    def cleanup_rehearsal(self, ctx: StepContext) -> Mapping[str, Any]:
        _, secondary = self._sites(ctx)
        # the VMs first: PowerVS refuses to delete a volume attached to a VM
        removed_vms = []
        for vm in self._rehearsal_vms(ctx):
            self.powervs.delete_pvm_instance(secondary, vm["pvmInstanceID"])
            removed_vms.append(vm["pvmInstanceID"])
        self._wait("deleting the rehearsal VMs", lambda: (not self._rehearsal_vms(ctx), "deleting"))
        removed = []
        for vol in self._rehearsal_volumes(ctx):
            # one already being deleted (a retry after a lost answer) answers 410, which delete_volume accepts
            self.powervs.delete_volume(secondary, vol["volumeID"])
            removed.append(vol["volumeID"])
        # Deletion is asynchronous: a rehearsal started right after must not find these half-deleted copies.
        self._wait("deleting the rehearsal volumes", lambda: (not self._rehearsal_volumes(ctx), "deleting"))
        return {"removed_rehearsal_volumes": removed, "removed_rehearsal_vms": removed_vms}
