"""DR Automation steps: the KSYS orchestrator's resource instance, its sites, managed VMs, discovery, standby.

The orchestrator is a resource-controller instance of the DR Automation service; it is deployed and
re-deployed (with or without a standby) through DR Automation's ``manage_dr`` and removed through the
resource controller. Which VMs it manages comes from ``vms.VmSteps``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.domain.errors import PermanentBackendError
from broker.domain.protocols import StepContext
from broker.orchestrators.ibmcloud.common import Clients, IbmSteps
from broker.orchestrators.ibmcloud.naming import Names
from broker.orchestrators.ibmcloud.resources import is_gone
from broker.orchestrators.ibmcloud.vms import VmSteps


class DrAutomationSteps(IbmSteps):
    """The DR Automation and resource-controller actions."""

    def __init__(self, clients: Clients, vms: VmSteps) -> None:
        super().__init__(clients)
        self.vms = vms

    def _require_dra(self, ctx: StepContext) -> str:
        guid = self._dra_guid(ctx)
        if guid is None:
            raise PermanentBackendError("the orchestrator is not deployed")
        return guid

    def _manage_dr_body(self, ctx: StepContext, standby: bool) -> dict[str, Any]:
        """The ``create_manage_dr`` body, in the SDK's field names: the orchestrator VM in the secondary
        workspace on ``orchestrator.network_ids``, reached with ``ssh_key_name`` or a Secrets Manager
        ``secret`` in ``secret_group``; with a standby, its twin in the primary on ``standby_network_ids``."""
        primary, secondary = (self._ws(c) for c in self._sites(ctx))
        orch = ctx.parameters.get("orchestrator") or {}
        body: dict[str, Any] = {
            "location_id": secondary.zone, "machine_type": orch.get("machine_type") or "s922",
            "orchestrator_location_type": "off-premises", "orchestrator_name": orch.get("name"),
            "orchestrator_password": orch.get("password"), "orchestrator_workspace_id": secondary.guid,
            "orchestrator_network_ids": list(orch.get("network_ids") or []) or None,
            "ssh_key_name": orch.get("ssh_key_name"), "secret": orch.get("secret"),
            "secret_group": orch.get("secret_group"), "region_id": secondary.region,
            "tier": orch.get("tier"), "proxy_ip": orch.get("proxy"),
            "api_key": ctx.parameters.get("ibmcloud_api_key"), "orchestrator_ha": standby,
        }
        if standby:
            body.update(standby_orchestrator_name=f"{orch.get('name')}-standby",
                        standby_orchestrator_workspace_id=primary.guid,
                        standby_orchestrator_network_ids=list(orch.get("standby_network_ids") or []) or None,
                        standby_ssh_key_name=orch.get("ssh_key_name"),
                        standby_machine_type=orch.get("machine_type") or "s922", standby_tier=orch.get("tier"))
        return body

    def _wait_deployed(self, guid: str, standby: bool | None) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def probe() -> tuple[bool, str]:
            nonlocal last
            last = self.dra.last_operation(guid) or {}
            if last.get("primary_error_description") or str(last.get("status", "")).lower() == "failed":
                raise PermanentBackendError("DR Automation: orchestrator deployment failed: "
                                            f"{last.get('primary_error_description') or last.get('status')}")
            ready = (last.get("status") == "Active"
                     and last.get("orchestrator_config_status") == "KSYS-DISCOVERY-SUCCESS"
                     and (standby is None or bool(last.get("orchestrator_ha")) == standby))
            return ready, f"{last.get('status')}: {last.get('primary_description') or ''}".strip()
        self._wait("DR Automation orchestrator", probe)
        return last

    def deploy_orchestrator(self, ctx: StepContext) -> Mapping[str, Any]:
        names = Names(ctx.instance_id)
        standby = bool(ctx.plan.features.get("standby"))
        found = self.resources.find_instance(names.dra_instance)
        if found is None:
            group = self.config.resource_group_id or str(ctx.context.get("resource_group_crn") or "").rsplit(
                ":", 1)[-1] or "default"
            found = self.resources.create_instance(names.dra_instance, group, self.resources.dra_plan_id(),
                                                   tags=[f"drbroker:{names.tag}"])
        guid = found["guid"]
        last = self.dra.last_operation(guid) or {}
        if not last.get("deployment_name"):
            self.dra.manage_dr(guid, self._manage_dr_body(ctx, standby))
        last = self._wait_deployed(guid, standby)
        out: dict[str, Any] = {"orchestrator_id": guid, "orchestrator_crn": found.get("crn")}
        if standby:
            out["standby_orchestrator_ip"] = last.get("standby_ip_address") or None
        return out

    def add_sites(self, ctx: StepContext) -> Mapping[str, Any]:
        guid = self._require_dra(ctx)
        primary, secondary = (self._ws(c) for c in self._sites(ctx))
        pairs = self.dra.grs_location_pairs(guid)
        if pairs.get(primary.zone) != secondary.zone and pairs.get(secondary.zone) != primary.zone:
            raise PermanentBackendError(f"DR Automation does not pair {primary.zone} with {secondary.zone}")
        return {"sites": [primary.zone, secondary.zone]}

    def manage_vms(self, ctx: StepContext) -> Mapping[str, Any]:
        guid = self._require_dra(ctx)
        wanted = {v["pvmInstanceID"] for v in self.vms.wanted_vms(ctx)}

        def probe() -> tuple[bool, str]:
            managed = set(self.dra.managed_vms(guid))
            missing = sorted(wanted - managed)
            return not missing, f"not yet managed: {', '.join(missing)}"
        self._wait("DR Automation managed VMs", probe)
        return {"managed_vms": sorted(wanted)}

    def discover(self, ctx: StepContext) -> Mapping[str, Any]:
        guid = self._require_dra(ctx)
        _, secondary = self._sites(ctx)
        backup_of = {v["pvmInstanceID"]: f"{v.get('serverName')}_BackUp" for v in self.vms.wanted_vms(ctx)}
        backups = set(backup_of.values())

        def probe() -> tuple[bool, str]:
            last = self.dra.last_operation(guid) or {}
            present = {v.get("serverName") for v in self.powervs.list_pvm_instances(secondary)}
            missing = sorted(backups - present)
            ok = last.get("orchestrator_config_status") == "KSYS-DISCOVERY-SUCCESS" and not missing
            return ok, f"{last.get('orchestrator_config_status')}, backup VMs missing: {', '.join(missing)}"
        self._wait("KSYS discovery", probe)
        # which backup is whose: failover and failback move exactly these (vms.VmSteps.backup_names)
        return {"backup_vms": sorted(backups), "backup_of": backup_of}

    def remove_orchestrator(self, ctx: StepContext) -> Mapping[str, Any]:
        guid = self._dra_guid(ctx)
        if guid is None:
            return {}
        self.resources.delete_instance(guid)

        def probe() -> tuple[bool, str]:
            # deleted: pending_reclamation until reclaimed (or removed); see resources.GONE_STATES
            inst = self.resources.get_instance(guid)
            return is_gone(inst), f"resource instance {(inst or {}).get('state')}"
        self._wait("DR Automation instance removal", probe)
        return {"removed_orchestrator": guid}

    def update_api_key(self, ctx: StepContext) -> Mapping[str, Any]:
        """An update's new ``ibmcloud_api_key``, handed to DR Automation (``update_apikey``); the key itself is
        neither returned nor recorded, only that it was applied (DR Automation's answer: its status)."""
        key = ctx.parameters.get("ibmcloud_api_key")
        if not key:
            return {}
        guid = self._require_dra(ctx)
        answer = self.dra.update_apikey(guid, str(key))
        return {"api_key_updated": True, "api_key_status": answer.get("status")}

    def sync_standby(self, ctx: StepContext) -> Mapping[str, Any]:
        guid = self._require_dra(ctx)
        want = bool(ctx.plan.features.get("standby"))
        last = self.dra.last_operation(guid) or {}
        if bool(last.get("orchestrator_ha")) != want:
            self.dra.manage_dr(guid, self._manage_dr_body(ctx, want), standby_redeploy=True)
        self._wait_deployed(guid, want)
        return {"orchestrator_ha": want}
