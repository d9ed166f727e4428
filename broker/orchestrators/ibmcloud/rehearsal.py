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


class RehearsalSteps(IbmSteps):
    """Start, verify and clean up a DR rehearsal with PowerVS volume clones."""

    def _rehearsal_volumes(self, ctx: StepContext) -> list[dict[str, Any]]:
        _, secondary = self._sites(ctx)
        prefix = Names(ctx.instance_id).rehearsal_prefix
        return [v for v in self.powervs.list_volumes(secondary) if str(v.get("name", "")).startswith(prefix)]

    def start_rehearsal(self, ctx: StepContext) -> Mapping[str, Any]:
        _, secondary = self._sites(ctx)
        existing = self._rehearsal_volumes(ctx)
        if existing:
            return {"rehearsal_volumes": sorted(v["volumeID"] for v in existing)}
        aux = [v["volumeID"] for v in self._aux_volumes(ctx)]
        if not aux:
            raise PermanentBackendError("no auxiliary volumes at the secondary to rehearse with")
        # A point-in-time copy of the replicas at the secondary: rehearsal VMs boot from these while
        # replication carries on (KSYS's DR test does the same with its own clones).
        task = self.powervs.clone_volumes(secondary, {"name": Names(ctx.instance_id).rehearsal, "volumeIDs": aux})
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
        vols = self._rehearsal_volumes(ctx)
        if not vols or any(v.get("state") not in ("available", "in-use") for v in vols):
            raise PermanentBackendError("rehearsal resources are missing")
        return {}

    def cleanup_rehearsal(self, ctx: StepContext) -> Mapping[str, Any]:
        _, secondary = self._sites(ctx)
        removed = []
        for vol in self._rehearsal_volumes(ctx):
            self.powervs.delete_volume(secondary, vol["volumeID"])
            removed.append(vol["volumeID"])
        # Deletion is asynchronous: a rehearsal started right after must not find these half-deleted copies.
        self._wait("deleting the rehearsal volumes", lambda: (not self._rehearsal_volumes(ctx), "deleting"))
        return {"removed_rehearsal_volumes": removed}
