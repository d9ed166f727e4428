"""What every group of ibmcloud steps shares: the IBM clients, the waiting loop and the deterministic look-ups.

The orchestrator's actions are split by the IBM service they drive (``replication``, ``rehearsal``, ``vms``,
``keys``, ``access``, ``orchestration``); each of those classes derives from ``IbmSteps`` so they find an
instance's sites, its volume groups, its DR Automation instance and its key ring the same way, wait on IBM's
state with the same deadline rules, and read what earlier steps recorded from the one store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_delay, wait_fixed

from broker.domain.errors import PermanentBackendError, TransientBackendError
from broker.domain.protocols import StepContext
from broker.domain.sites import WorkspaceRef
from broker.orchestrators.ibmcloud.config import IbmCloudConfig
from broker.orchestrators.ibmcloud.dra import DrAutomation
from broker.orchestrators.ibmcloud.iam import Iam
from broker.orchestrators.ibmcloud.keyprotect import KeyProtect
from broker.orchestrators.ibmcloud.naming import Names
from broker.orchestrators.ibmcloud.powervs import PowerVS
from broker.orchestrators.ibmcloud.resources import Resources

Action = Callable[[StepContext], Mapping[str, Any]]


@dataclass(frozen=True)
class Clients:
    """The configuration, the broker's store and one client per IBM service, shared by all step groups."""

    config: IbmCloudConfig
    store: Any
    powervs: PowerVS
    kp: KeyProtect
    iam: Iam
    resources: Resources
    dra: DrAutomation


class IbmSteps:
    """The base of every step group: the clients as attributes and the helpers the groups share."""

    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self.config = clients.config
        self.store = clients.store
        self.powervs = clients.powervs
        self.kp = clients.kp
        self.iam = clients.iam
        self.resources = clients.resources
        self.dra = clients.dra

    def _instance_parameters(self, instance_id: str) -> Mapping[str, Any] | None:
        if self.store is None:
            return None
        with self.store.read() as tx:
            inst = tx.get_instance(instance_id)
        return inst.parameters if inst else None

    def _recorded(self, instance_id: str, key: str) -> Any:
        """The latest value an action of this instance recorded under ``key`` in its step outputs."""
        if self.store is None:
            return None
        latest: tuple[float, Any] | None = None
        with self.store.read() as tx:
            for op in tx.list_operations(instance_id=instance_id, limit=1000):
                for rec in tx.steps(op.id):
                    if key in rec.outputs and (latest is None or (rec.finished_at or 0) >= latest[0]):
                        latest = (rec.finished_at or 0, rec.outputs[key])
        return latest[1] if latest else None

    @staticmethod
    def _ws(crn: str) -> WorkspaceRef:
        return PowerVS.workspace(crn)

    @staticmethod
    def _sites(ctx: StepContext) -> tuple[str, str]:
        return ctx.parameters["primary_workspace_crn"], ctx.parameters["secondary_workspace_crn"]

    def _account(self, ctx: StepContext) -> str:
        return self._ws(ctx.parameters["primary_workspace_crn"]).account

    def _wait(self, what: str, probe: Callable[[], tuple[bool, str]]) -> None:
        """Probe every ``poll_seconds`` until it answers done; still not done after ``wait_seconds``: a
        ``TransientBackendError`` (the engine retries the step later). An error the probe raises propagates."""

        def timed_out(retry_state: RetryCallState) -> None:
            _, state = retry_state.outcome.result() if retry_state.outcome else (False, "unknown")
            raise TransientBackendError(f"{what}: still {state} after {self.config.wait_seconds:g}s",
                                        retry_after=self.config.poll_seconds)

        Retrying(stop=stop_after_delay(self.config.wait_seconds), wait=wait_fixed(self.config.poll_seconds),
                 retry=retry_if_result(lambda answer: not answer[0]), retry_error_callback=timed_out)(probe)

    def _group(self, ctx: StepContext) -> dict[str, Any] | None:
        primary, _ = self._sites(ctx)
        return self.powervs.find_volume_group(primary, Names(ctx.instance_id).group)

    def _require_group(self, ctx: StepContext) -> dict[str, Any]:
        group = self._group(ctx)
        if group is None:
            raise PermanentBackendError("the replication group does not exist")
        return group

    def _aux_volumes(self, ctx: StepContext) -> list[dict[str, Any]]:
        _, secondary = self._sites(ctx)
        prefix = Names(ctx.instance_id).aux_prefix
        return [v for v in self.powervs.list_volumes(secondary) if str(v.get("name", "")).startswith(prefix)]

    def _aux_group_id(self, ctx: StepContext) -> str | None:
        """The auxiliary volume group at the secondary. PowerVS names it like the consistency group (IBM: "in
        the secondary location, the name property is same as the consistencyGroupName property"), so it is
        found by the primary group's consistencyGroupName (or the one recorded when the group was made, once
        the primary group is gone), else through the groupID of an auxiliary volume."""
        primary, secondary = self._sites(ctx)
        group = self.powervs.find_volume_group(primary, Names(ctx.instance_id).group)
        cg = (group or {}).get("consistencyGroupName") or self._recorded(ctx.instance_id, "consistency_group_name")
        if cg:
            for g in self.powervs.list_volume_groups(secondary):
                if g.get("name") == cg or g.get("consistencyGroupName") == cg:
                    return g.get("id")
        for vol in self._aux_volumes(ctx):
            detail = self.powervs.get_volume(secondary, vol["volumeID"]) or {}
            if detail.get("groupID"):
                return detail["groupID"]
        return None

    def _details(self, ctx: StepContext) -> dict[str, Any]:
        primary, _ = self._sites(ctx)
        return self.powervs.storage_details(primary, self._require_group(ctx)["id"])

    def _dra_guid(self, ctx: StepContext | str) -> str | None:
        iid = ctx if isinstance(ctx, str) else ctx.instance_id
        found = self.resources.find_instance(Names(iid).dra_instance)
        return found.get("guid") if found else None

    def _key_ring(self, ctx: StepContext) -> str:
        return (ctx.parameters.get("encryption") or {}).get("key_ring_id") or Names(ctx.instance_id).tag
