"""Test-failover (rehearsal) steps: point-in-time clones of the replicas at the secondary, their check, clean-up.

Kept apart from replication because a rehearsal never touches the replication group: it clones the
auxiliary volumes at the secondary while replication carries on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.domain.errors import PermanentBackendError
from broker.domain.protocols import StepContext
from broker.orchestrators.ibmcloud.common import IbmSteps
from broker.orchestrators.ibmcloud.naming import Names

READY = ("available", "in-use")


class RehearsalSteps(IbmSteps):
    """Start, verify and clean up a DR rehearsal with PowerVS volume clones.

    The clones are found by name: PowerVS names them ``clone-<base>-<5 random digits>[-<n>]`` and the base
    name (``Names.rehearsal``) fits the 20 characters PowerVS keeps of it, so the prefix identifies them
    whatever the digits. That is also how a retry finds clones an earlier attempt made when the clone
    request's answer was lost (the volumes exist from the start of the clone task).
    """

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
            return {"rehearsal_volumes": sorted(v["volumeID"] for v in self._live_clones(ctx)),
                    "clone_task_id": None}
        if not aux:
            raise PermanentBackendError("no auxiliary volumes at the secondary to rehearse with")
        # A point-in-time copy of the replicas at the secondary: rehearsal VMs boot from these while
        # replication carries on (KSYS's DR test does the same with its own clones). The replicas are
        # replication-enabled and a clone inherits that unless told otherwise: a rehearsal copy must not
        # replicate (nor be billed for it).
        task = self.powervs.clone_volumes(secondary, {"name": Names(ctx.instance_id).rehearsal, "volumeIDs": aux,
                                                      "targetReplicationEnabled": False})
        task_id = task["cloneTaskID"]
        cloned: list[str] = []

        def probe() -> tuple[bool, str]:
            nonlocal cloned
            st = self.powervs.get_clone_task(secondary, task_id)
            if st.get("status") == "failed":
                raise PermanentBackendError(f"PowerVS clone task {task_id} failed: "
                                            f"{st.get('failedReason') or 'no reason given'}")
            cloned = [c.get("clonedVolumeID") for c in st.get("clonedVolumes") or []]
            return st.get("status") == "completed", f"clone {st.get('status')} ({st.get('percentComplete', 0)}%)"
        self._wait("PowerVS volume clone", probe)
        return {"rehearsal_volumes": sorted(c for c in cloned if c), "clone_task_id": task_id}

    def verify_rehearsal(self, ctx: StepContext) -> Mapping[str, Any]:
        vols = self._live_clones(ctx)
        wanted = len(self._aux_volumes(ctx))
        if not vols or len(vols) < wanted or any(v.get("state") not in READY for v in vols):
            raise PermanentBackendError(f"rehearsal resources are missing ({len(vols)} clones of {wanted} replicas)")
        return {}

    def cleanup_rehearsal(self, ctx: StepContext) -> Mapping[str, Any]:
        _, secondary = self._sites(ctx)
        removed = []
        for vol in self._rehearsal_volumes(ctx):
            # one already being deleted (a retry after a lost answer) answers 410, which delete_volume accepts
            self.powervs.delete_volume(secondary, vol["volumeID"])
            removed.append(vol["volumeID"])
        # Deletion is asynchronous: a rehearsal started right after must not find these half-deleted copies.
        self._wait("deleting the rehearsal volumes", lambda: (not self._rehearsal_volumes(ctx), "deleting"))
        return {"removed_rehearsal_volumes": removed}
