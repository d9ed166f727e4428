"""The simulated orchestrator: the ``Orchestrator`` protocol over a simulated PowerVS account.

Each action takes ``step_seconds * weight`` of wall time (``DRBROKER_SIM_STEP_SECONDS``; 0 = instant), then
works on the simulated cloud the way the real sequence would: replication is enabled on the customer's
volumes, a volume group (consistency group) moves through the GRS states, auxiliary volumes are onboarded
at the secondary site, a KSYS orchestrator is deployed and discovers VMs, Key Protect wraps data keys, IAM
issues service IDs, keys and policies. Every action is idempotent: repeated after a crash, it finds what it
made before.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine

from broker.domain import recovery
from broker.domain.access import key_grant, purpose, workspace_grants
from broker.domain.errors import AwaitingApproval, PermanentBackendError
from broker.domain.protocols import ReplicationStatus, StepContext
from broker.domain.sites import parse_workspace_crn
from broker.orchestrators.simulated.cloud import SEED_OWNER, Resource, SimulatedCloud
from broker.orchestrators.simulated.faults import FaultInjector
from broker.orchestrators.simulated.keyprotect import MONTH_SECONDS, SimKeyProtect
from broker.orchestrators.simulated.seed import seed_demo_account

log = logging.getLogger(__name__)

Action = Callable[[StepContext], Mapping[str, Any]]

BOOT_WEIGHT = 2.0  # a VM boots for step_seconds * BOOT_WEIGHT (BUILD, then ACTIVE)
CYCLE_PERIOD_SECONDS = 300  # GMCV cycle period the simulated storage reports (read-only on PowerVS)
# The identity the broker's steps act as on the simulated Key Protect: the first approver of a dual-authorisation
# delete, so never the second (``drbroker keys approve-deletion --approver`` must name someone else).
WORKER_IDENTITY = "drbroker-worker"

# Relative duration of each action; a step takes step_seconds * weight.
_WEIGHTS = {
    "deploy_orchestrator": 3.0,
    "wait_consistent_copying": 2.0,
    "wait_reverse_consistent": 2.0,
    "create_service_id": 0.1,
    "reuse_service_id": 0.1,
    "grant_key_access": 0.1,
    "grant_workspace_access": 0.1,
    "revoke_access": 0.1,
    "wrap_key": 0.1,
    "issue_credentials": 0.1,
    "revoke_credentials": 0.1,
    "revoke_key_access": 0.1,
    "delete_service_id": 0.1,
}


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _group_status(state: str, data: Mapping[str, Any], now: float) -> ReplicationStatus:
    """What the storage reports for a volume group: one computation for the single and the bulk read."""
    cycle = data.get("cycle_period_seconds", CYCLE_PERIOD_SECONDS)
    freeze: float | None = data.get("freeze_time")
    if state == "consistent_copying" and data.get("consistent_since"):
        since = data["consistent_since"]
        freeze = since + ((now - since) // cycle) * cycle
    return ReplicationStatus(state=state, primary_role=data.get("primary_role", "master"), freeze_time=freeze,
                             cycle_period_seconds=cycle, consistency_group=data.get("consistency_group"))


class SimulatedOrchestrator:
    name = "simulated"

    def __init__(self, engine: Engine, *, step_seconds: float = 1.0, faults: str = "",
                 clock: Callable[[], float] = time.time, month_seconds: float = MONTH_SECONDS,
                 approval_poll_seconds: float = 60.0) -> None:
        self.cloud = SimulatedCloud(engine)
        self.kp = SimKeyProtect(self.cloud, month_seconds=month_seconds)
        self.approval_poll_seconds = approval_poll_seconds
        self.step_seconds = step_seconds
        self.faults = FaultInjector(faults)
        self.clock = clock
        seed_demo_account(self.cloud)
        self._actions: dict[str, Action] = {
            # provision
            "validate_sites": self._validate_sites,
            "create_dr_policy": self._create_dr_policy,
            "create_key_ring": self._create_key_ring,
            "create_root_key": self._create_root_key,
            "enable_replication": self._enable_replication,
            "create_replication_group": self._create_replication_group,
            "wait_consistent_copying": self._wait_consistent_copying,
            "onboard_auxiliary_volumes": self._onboard_auxiliary_volumes,
            "deploy_orchestrator": self._deploy_orchestrator,
            "add_sites": self._orchestrator_fact(sites_added=True),
            "manage_vms": self._manage_vms,
            "discover": self._discover,
            "verify": self._verify,
            # deprovision and compensations
            "revoke_all_bindings": self._revoke_all_bindings,
            "remove_orchestrator": self._remove_orchestrator,
            "delete_replication_group": self._delete_replication_group,
            "disable_replication": self._disable_replication,
            "remove_auxiliary_volumes": self._remove_auxiliary_volumes,
            "delete_root_key": self._delete_root_key,
            "delete_key_ring": self._delete_key_ring,
            "delete_dr_policy": self._remover("dr_policy"),
            "verify_removed": self._verify_removed,
            # update
            "apply_parameters": self._apply_parameters,
            "sync_standby_orchestrator": self._sync_standby,
            "update_orchestrator_api_key": self._update_orchestrator_api_key,
            # bind / unbind
            "create_service_id": self._create_service_id,
            "reuse_service_id": self._reuse_service_id,
            "delete_service_id": self._delete_service_id,
            "grant_workspace_access": self._grant_workspace_access,
            "revoke_access": self._revoke_access,
            "grant_key_access": self._grant_key_access,
            "revoke_key_access": self._remover("key_policy", binding=True),
            "wrap_key": self._wrap_key,
            "issue_credentials": self._issue_credentials,
            "revoke_credentials": self._remover("api_key", binding=True),
            # day-2
            "check_replication": self._check_replication,
            "start_rehearsal": self._start_rehearsal,
            "verify_rehearsal": self._verify_rehearsal,
            "cleanup_rehearsal": self._cleanup_rehearsal,
            "stop_primary_vms": self._power("primary", "SHUTOFF"),
            "start_primary_vms": self._power("primary", "ACTIVE"),
            "stop_secondary_vms": self._power("secondary", "SHUTOFF"),
            "start_secondary_vms": self._power("secondary", "ACTIVE"),
            "failover_replication": self._group_action("idling", stop=True),
            "reverse_replication": self._group_action("inconsistent_copying", role="aux"),
            "wait_reverse_consistent": self._group_action("consistent_copying", role="aux", consistent=True),
            "stop_reverse_with_access": self._group_action("idling", role="aux", stop=True),
            "restart_replication": self._group_action("inconsistent_copying", role="master"),
        }

    # protocol -------------------------------------------------------------------------------------
    def actions(self) -> frozenset[str]:
        return frozenset(self._actions)

    def expected_seconds(self, action: str) -> float:
        return self.step_seconds * _WEIGHTS.get(action, 1.0)

    def describe(self) -> str:
        return (f"SIMULATED PowerVS cloud: nothing real is created (step time {self.step_seconds:g}s"
                f"{', faults: on' if self.faults else ''})")

    def perform(self, action: str, ctx: StepContext) -> Mapping[str, Any]:
        try:
            fn = self._actions[action]
        except KeyError:
            raise PermanentBackendError(f"the simulated backend has no action {action!r}") from None
        self.faults.before(action, ctx.operation_id)
        if self.step_seconds > 0:
            time.sleep(self.expected_seconds(action))
        return fn(ctx)

    def check_protection(self, primary_crn: str, secondary_crn: str, volume_ids: Sequence[str],
                         instance_id: str | None = None) -> list[str]:
        problems: list[str] = []
        for field, crn in (("primary_workspace_crn", primary_crn), ("secondary_workspace_crn", secondary_crn)):
            if self.cloud.get("workspace", SEED_OWNER, None, part=crn) is None:
                problems.append(f"parameters.{field}: workspace {crn} does not exist or is not visible to "
                                "the broker")
        if problems:
            return problems
        pools: dict[str, list[str]] = {}
        for vol_id in volume_ids:
            vol = self._volume(primary_crn, vol_id)
            if vol is None:
                problems.append(f"parameters.protected_volumes: volume {vol_id} does not exist in the primary "
                                "workspace")
                continue
            pools.setdefault(vol.data["pool"], []).append(vol_id)
            group = vol.data.get("group")
            if group and group != self._group_id(instance_id):
                problems.append(f"parameters.protected_volumes: volume {vol_id} already belongs to replication "
                                f"group {group}")
        if len(pools) > 1:
            listed = "; ".join(f"{pool}: {', '.join(v)}" for pool, v in sorted(pools.items()))
            problems.append(f"parameters.protected_volumes: volumes must be in one storage pool ({listed})")
        for pool in pools:
            rec = self.cloud.get("storage_pool", SEED_OWNER, None, part=f"{primary_crn}/{pool}")
            if rec is not None and not rec.data.get("replication_enabled"):
                problems.append(f"parameters.protected_volumes: storage pool {pool} is not replication-capable")
        return problems

    def replication_status(self, instance_id: str) -> ReplicationStatus | None:
        group = self.cloud.get("volume_group", instance_id)
        if group is None:
            return None
        return _group_status(group.state, group.data, self.clock())

    def replication_statuses(self, instance_ids: Sequence[str]) -> dict[str, ReplicationStatus]:
        now = self.clock()
        return {iid: _group_status(group.state, group.data, now)
                for iid, group in self.cloud.get_many("volume_group", instance_ids).items()}

    # helpers --------------------------------------------------------------------------------------
    def _volume(self, workspace_crn: str, vol_id: str) -> Resource | None:
        return self.cloud.get("volume", SEED_OWNER, None, part=f"{workspace_crn}/{vol_id}")

    def _group_id(self, instance_id: str | None) -> str | None:
        if instance_id is None:
            return None
        group = self.cloud.get("volume_group", instance_id)
        return group.id if group else None

    @staticmethod
    def _sites(ctx: StepContext) -> tuple[str, str]:
        return ctx.parameters["primary_workspace_crn"], ctx.parameters["secondary_workspace_crn"]

    def _remover(self, kind: str, *, binding: bool = False) -> Action:
        def act(ctx: StepContext) -> Mapping[str, Any]:
            self.cloud.remove_all(kind, ctx.instance_id, ctx.binding_id if binding else None)
            return {}
        return act

    def _orchestrator_fact(self, **facts: Any) -> Action:
        def act(ctx: StepContext) -> Mapping[str, Any]:
            if not self.cloud.set_state("orchestrator", ctx.instance_id, None, data=facts):
                raise PermanentBackendError(f"the orchestrator of {ctx.instance_id} is not deployed")
            return {}
        return act

    # provision ------------------------------------------------------------------------------------
    def _validate_sites(self, ctx: StepContext) -> Mapping[str, Any]:
        primary, secondary = self._sites(ctx)
        problems = self.check_protection(primary, secondary, ctx.parameters.get("protected_volumes") or [],
                                         ctx.instance_id)
        if problems:
            raise PermanentBackendError("; ".join(problems))
        return {}

    def _create_dr_policy(self, ctx: StepContext) -> Mapping[str, Any]:
        policy = self.cloud.ensure("dr_policy", ctx.instance_id, None, "active", self._policy_data(ctx))
        return {"dr_policy_id": policy.id}

    @staticmethod
    def _policy_data(ctx: StepContext) -> dict[str, Any]:
        return {"rpo_target_minutes": ctx.parameters.get("rpo_target_minutes"),
                "vm_priorities": {vm.get("pvm_instance_id"): vm.get("priority", "Medium")
                                  for vm in ctx.parameters.get("managed_vms") or []},
                "dr_test_schedule": ctx.parameters.get("dr_test_schedule"),
                "notify": list(ctx.parameters.get("notification_emails") or [])}

    def _create_key_ring(self, ctx: StepContext) -> Mapping[str, Any]:
        wanted = (ctx.parameters.get("encryption") or {}).get("key_ring_id") or f"dr-{ctx.instance_id[-12:]}"
        ring = self.cloud.ensure("key_ring", ctx.instance_id, None, "active", {"key_ring_id": wanted})
        return {"key_ring_id": ring.data["key_ring_id"]}

    def _create_root_key(self, ctx: StepContext) -> Mapping[str, Any]:
        enc = ctx.parameters.get("encryption") or {}
        ring = self.cloud.get("key_ring", ctx.instance_id)
        if ring is None:
            raise PermanentBackendError("Key Protect: key ring not found (404)")
        key = self.kp.create_root_key(ctx.instance_id, key_ring=ring.data["key_ring_id"],
                                      rotation_months=enc.get("rotation_interval_months"),
                                      dual_auth_delete=bool(enc.get("dual_auth_delete")))
        return {"root_key_id": key.id}

    def _enable_replication(self, ctx: StepContext) -> Mapping[str, Any]:
        primary, _ = self._sites(ctx)
        marker = self.cloud.ensure("replication_enablement", ctx.instance_id, None, "active", {"volumes": []})
        enabled = list(marker.data["volumes"])
        for vol_id in ctx.parameters.get("protected_volumes") or []:
            vol = self._volume(primary, vol_id)
            if vol is None:
                raise PermanentBackendError(f"volume {vol_id} not found (404)")
            if not vol.data.get("replication_enabled"):
                self.cloud.update(vol, data={"replication_enabled": True})
                enabled.append(vol_id)
        # Only the volumes this instance enabled are disabled again at tear-down.
        self.cloud.update(marker, data={"volumes": sorted(set(enabled))})
        return {}

    def _create_replication_group(self, ctx: StepContext) -> Mapping[str, Any]:
        primary, _ = self._sites(ctx)
        volumes = list(ctx.parameters.get("protected_volumes") or [])
        group = self.cloud.ensure("volume_group", ctx.instance_id, None, "inconsistent_copying", {
            "workspace_crn": primary, "volumes": volumes, "primary_role": "master", "status": "available",
            "cycle_period_seconds": CYCLE_PERIOD_SECONDS, "consistent_since": None, "freeze_time": None})
        self.cloud.update(group, data={"consistency_group": f"rccg-{group.id[-12:]}"})
        for vol_id in volumes:
            vol = self._volume(primary, vol_id)
            if vol is not None:
                self.cloud.update(vol, data={"group": group.id})
        return {"volume_group_id": group.id}

    def _wait_consistent_copying(self, ctx: StepContext) -> Mapping[str, Any]:
        group = self.cloud.get("volume_group", ctx.instance_id)
        if group is None:
            raise PermanentBackendError("the replication group does not exist")
        if group.state != "consistent_copying" or group.data.get("primary_role") != "master":
            now = self.clock()
            self.cloud.update(group, state="consistent_copying",
                              data={"consistent_since": now, "primary_role": "master", "freeze_time": now})
            aux = self.cloud.get("auxiliary_volume_group", ctx.instance_id)
            if aux is not None:
                self.cloud.update(aux, state="consistent_copying")
        return {"dr_state": {"replication": "consistent_copying"}}

    def _onboard_auxiliary_volumes(self, ctx: StepContext) -> Mapping[str, Any]:
        primary, secondary = self._sites(ctx)
        group = self.cloud.get("volume_group", ctx.instance_id)
        for vol_id in ctx.parameters.get("protected_volumes") or []:
            self.cloud.ensure("auxiliary_volume", ctx.instance_id, None, "available",
                              {"workspace_crn": secondary, "source_crn": primary, "master_volume": vol_id,
                               "name": f"aux_{vol_id}"}, part=vol_id)
        aux = self.cloud.ensure("auxiliary_volume_group", ctx.instance_id, None,
                                group.state if group else "consistent_copying",
                                {"workspace_crn": secondary, "primary_role": "master"})
        return {"auxiliary_volume_group_id": aux.id}

    def _deploy_orchestrator(self, ctx: StepContext) -> Mapping[str, Any]:
        """Deploy the orchestrator as DR Automation does: it needs an SSH key (``ssh_key_name``) or a Secrets
        Manager ``secret`` with its ``secret_group``, and the VM's ``network_ids`` (the standby's
        ``standby_network_ids`` on HA plans); the recorded deployment keeps what it was deployed with."""
        _, secondary = self._sites(ctx)
        orch_params = ctx.parameters.get("orchestrator") or {}
        standby = bool(ctx.plan.features.get("standby"))
        self._check_deployable(orch_params, standby)
        orch = self.cloud.ensure("orchestrator", ctx.instance_id, None, "active", {
            "workspace_crn": secondary, "name": orch_params.get("name"), "ip": "10.30.0.11",
            "machine_type": orch_params.get("machine_type"), "tier": orch_params.get("tier"),
            "proxy": orch_params.get("proxy"), **self._access(orch_params),
            "network_ids": list(orch_params.get("network_ids") or [])})
        out: dict[str, Any] = {"orchestrator_id": orch.id}
        if standby:
            out["standby_orchestrator_id"] = self._ensure_standby(ctx).id
        return out

    @staticmethod
    def _access(orch_params: Mapping[str, Any]) -> dict[str, Any]:
        """How the orchestrator VMs are reached: the SSH key's name, or the Secrets Manager secret's."""
        if orch_params.get("ssh_key_name"):
            return {"ssh_key_name": orch_params["ssh_key_name"]}
        return {"secret": orch_params.get("secret"), "secret_group": orch_params.get("secret_group")}

    @staticmethod
    def _check_deployable(orch_params: Mapping[str, Any], standby: bool) -> None:
        if not orch_params.get("ssh_key_name") and not (orch_params.get("secret") and orch_params.get("secret_group")):
            raise PermanentBackendError("DR Automation: the orchestrator needs ssh_key_name, or secret and "
                                        "secret_group")
        if not orch_params.get("network_ids"):
            raise PermanentBackendError("DR Automation: the orchestrator needs network_ids")
        if standby and not orch_params.get("standby_network_ids"):
            raise PermanentBackendError("DR Automation: the standby orchestrator needs standby_network_ids")

    def _ensure_standby(self, ctx: StepContext) -> Resource:
        primary, _ = self._sites(ctx)
        orch_params = ctx.parameters.get("orchestrator") or {}
        self._check_deployable(orch_params, True)
        return self.cloud.ensure("standby_orchestrator", ctx.instance_id, None, "active",
                                 {"workspace_crn": primary, "ip": "10.20.0.12", **self._access(orch_params),
                                  "network_ids": list(orch_params.get("standby_network_ids") or [])})

    def _manage_vms(self, ctx: StepContext) -> Mapping[str, Any]:
        primary, _ = self._sites(ctx)
        wanted = [vm["pvm_instance_id"] for vm in ctx.parameters.get("managed_vms") or []]
        if not wanted:
            wanted = [r.data["vm_id"] for r in self.cloud.of_kind("pvm_instance", SEED_OWNER)
                      if r.data["workspace_crn"] == primary]
        if not self.cloud.set_state("orchestrator", ctx.instance_id, None, data={"managed_vms": wanted}):
            raise PermanentBackendError("the orchestrator is not deployed")
        return {"managed_vms": wanted}

    def _discover(self, ctx: StepContext) -> Mapping[str, Any]:
        _, secondary = self._sites(ctx)
        orch = self.cloud.get("orchestrator", ctx.instance_id)
        if orch is None:
            raise PermanentBackendError("the orchestrator is not deployed")
        for vm in orch.data.get("managed_vms") or []:
            self.cloud.ensure("backup_vm", ctx.instance_id, None, "SHUTOFF",
                              {"workspace_crn": secondary, "name": f"{vm}_BackUp", "workgroup": f"{vm}_WG"},
                              part=vm)
        self.cloud.update(orch, data={"discovered": True, "workgroup_state": "READY_TO_MOVE"})
        return {}

    def _expected_kinds(self, ctx: StepContext) -> list[str]:
        kinds = ["dr_policy", "replication_enablement", "volume_group", "auxiliary_volume_group"]
        if ctx.plan.features.get("byok"):
            kinds += ["key_ring", "root_key"]
        if ctx.plan.features.get("orchestrator") == "ksys":
            kinds.append("orchestrator")
            if ctx.plan.features.get("standby"):
                kinds.append("standby_orchestrator")
        return kinds

    def _verify(self, ctx: StepContext) -> Mapping[str, Any]:
        missing = [k for k in self._expected_kinds(ctx) if self.cloud.get(k, ctx.instance_id) is None]
        if missing:
            raise PermanentBackendError(f"verification failed: missing {', '.join(missing)}")
        group = self.cloud.get("volume_group", ctx.instance_id)
        if group is not None and group.state not in ("consistent_copying", "idling"):
            raise PermanentBackendError(f"verification failed: replication group is {group.state}")
        return {}

    # deprovision ----------------------------------------------------------------------------------
    def _revoke_all_bindings(self, ctx: StepContext) -> Mapping[str, Any]:
        return {"revoked_resources": self.cloud.remove_binding_resources(ctx.instance_id)}

    def _remove_orchestrator(self, ctx: StepContext) -> Mapping[str, Any]:
        for kind in ("rehearsal_vm", "rehearsal", "backup_vm", "standby_orchestrator", "orchestrator"):
            self.cloud.remove_all(kind, ctx.instance_id)
        return {}

    def _delete_replication_group(self, ctx: StepContext) -> Mapping[str, Any]:
        group = self.cloud.get("volume_group", ctx.instance_id)
        if group is not None:
            for vol_id in group.data.get("volumes") or []:
                vol = self._volume(group.data["workspace_crn"], vol_id)
                if vol is not None and vol.data.get("group") == group.id:
                    self.cloud.update(vol, data={"group": None})
            self.cloud.remove("volume_group", ctx.instance_id)
        self.cloud.remove_all("rehearsal_vm", ctx.instance_id)
        self.cloud.remove_all("rehearsal", ctx.instance_id)
        return {}

    def _disable_replication(self, ctx: StepContext) -> Mapping[str, Any]:
        marker = self.cloud.get("replication_enablement", ctx.instance_id)
        if marker is not None:
            primary = ctx.parameters.get("primary_workspace_crn")
            for vol_id in marker.data.get("volumes") or []:
                vol = self._volume(primary, vol_id) if primary else None
                if vol is not None:
                    self.cloud.update(vol, data={"replication_enabled": False})
            self.cloud.remove("replication_enablement", ctx.instance_id)
        return {}

    def _remove_auxiliary_volumes(self, ctx: StepContext) -> Mapping[str, Any]:
        self.cloud.remove("auxiliary_volume_group", ctx.instance_id)
        self.cloud.remove_all("auxiliary_volume", ctx.instance_id)
        return {}

    def _delete_root_key(self, ctx: StepContext) -> Mapping[str, Any]:
        """Delete the root key. With a dual-authorisation policy the broker is only the first approver: it sets
        the key for deletion (again, when an earlier approval expired) and waits, parked, until another
        identity approves with ``drbroker keys approve-deletion``; the step run after that deletes the key."""
        key = self.cloud.get("root_key", ctx.instance_id)
        if key is None or not key.data.get("dual_auth_delete"):
            return self.kp.delete(ctx.instance_id)
        auth = self.kp.deletion(key)
        if auth is not None and auth.get("approved_by") and auth["approved_by"] != auth["set_by"]:
            return {**self.kp.delete(ctx.instance_id), "deletion_approved_by": auth["approved_by"]}
        if auth is None:
            auth = self.kp.set_for_deletion(key.id, by=WORKER_IDENTITY)
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(auth["expires"])))
        raise AwaitingApproval(
            f"the simulated Key Protect root key {key.id} has a dual-authorisation delete policy; "
            f"{auth['set_by']} set it for deletion (first approval) and a second approver, another person, "
            f"must run `drbroker keys approve-deletion {ctx.instance_id} --approver NAME` before {until}. "
            f"The deprovision continues once they have (checked every {self.approval_poll_seconds:g} s; an "
            "expired approval is given again).", retry_after=self.approval_poll_seconds)

    def _delete_key_ring(self, ctx: StepContext) -> Mapping[str, Any]:
        if self.cloud.get("root_key", ctx.instance_id) is not None:
            raise PermanentBackendError("Key Protect: key ring still holds keys (409 KEY_RING_KEYS_NOT_DELETED)")
        self.cloud.remove("key_ring", ctx.instance_id)
        return {}

    def _verify_removed(self, ctx: StepContext) -> Mapping[str, Any]:
        left = self.cloud.inventory(ctx.instance_id)
        if left:
            raise PermanentBackendError("resources left behind: " + ", ".join(sorted({r.kind for r in left})))
        return {}

    # update ---------------------------------------------------------------------------------------
    def _apply_parameters(self, ctx: StepContext) -> Mapping[str, Any]:
        primary, secondary = self._sites(ctx)
        self.cloud.set_state("dr_policy", ctx.instance_id, None, data=self._policy_data(ctx))
        enc = ctx.parameters.get("encryption") or {}
        if enc:
            # The root key's policies (the service refused what Key Protect cannot do: removing dual
            # authorisation, moving the key to another ring).
            self.kp.set_policies(ctx.instance_id, rotation_months=enc.get("rotation_interval_months"),
                                 dual_auth_delete=True if enc.get("dual_auth_delete") else None)
        group = self.cloud.get("volume_group", ctx.instance_id)
        wanted = list(ctx.parameters.get("protected_volumes") or [])
        if group is None:
            return {}
        current = list(group.data.get("volumes") or [])
        added = [v for v in wanted if v not in current]
        removed = [v for v in current if v not in wanted]
        marker = self.cloud.get("replication_enablement", ctx.instance_id)
        enabled = set(marker.data["volumes"]) if marker else set()
        for vol_id in added:
            vol = self._volume(primary, vol_id)
            if vol is None:
                raise PermanentBackendError(f"volume {vol_id} not found (404)")
            if not vol.data.get("replication_enabled"):
                enabled.add(vol_id)
            self.cloud.update(vol, data={"replication_enabled": True, "group": group.id})
            self.cloud.ensure("auxiliary_volume", ctx.instance_id, None, "available",
                              {"workspace_crn": secondary, "source_crn": primary, "master_volume": vol_id,
                               "name": f"aux_{vol_id}"}, part=vol_id)
        for vol_id in removed:
            vol = self._volume(primary, vol_id)
            if vol is not None:
                self.cloud.update(vol, data={"group": None, "replication_enabled":
                                             vol.data.get("replication_enabled") and vol_id not in enabled})
            enabled.discard(vol_id)
            self.cloud.remove("auxiliary_volume", ctx.instance_id, part=vol_id)
        self.cloud.update(group, data={"volumes": wanted})
        if marker is not None:
            self.cloud.update(marker, data={"volumes": sorted(enabled)})
        return {}

    def _update_orchestrator_api_key(self, ctx: StepContext) -> Mapping[str, Any]:
        """DR Automation's ``update_apikey`` on the simulated orchestrator: the rotation is recorded (when, how
        many, and a 12-hex fingerprint to tell keys apart); the key itself is kept only in the instance's sealed
        parameters."""
        key = ctx.parameters.get("ibmcloud_api_key")
        if not key:
            return {}
        orch = self.cloud.get("orchestrator", ctx.instance_id)
        if orch is None:
            raise PermanentBackendError("the orchestrator is not deployed")
        self.cloud.update(orch, data={"api_key_fingerprint": _hash(str(key))[:12], "api_key_updated_at": self.clock(),
                                      "api_key_updates": int(orch.data.get("api_key_updates") or 0) + 1})
        return {"api_key_updated": True}

    def _sync_standby(self, ctx: StepContext) -> Mapping[str, Any]:
        if ctx.plan.features.get("standby"):
            self._ensure_standby(ctx)
        else:
            self.cloud.remove("standby_orchestrator", ctx.instance_id)
        return {}

    # bind / unbind --------------------------------------------------------------------------------
    def _create_service_id(self, ctx: StepContext) -> Mapping[str, Any]:
        given = ctx.bind_resource.get("serviceid_crn")
        if given:
            return {"serviceid_crn": given, "serviceid_created": False}
        account = (parse_workspace_crn(ctx.parameters.get("primary_workspace_crn", "")) or None)
        account_id = account.account if account else "sim"
        sid = self.cloud.ensure("service_id", ctx.instance_id, ctx.binding_id, "active",
                                {"name": f"drbroker-{(ctx.binding_id or '')[-24:]}", "account": account_id})
        return {"serviceid_crn": f"crn:v1:bluemix:public:iam-identity::a/{account_id}::serviceid:{sid.id}",
                "serviceid_created": True}

    def _reuse_service_id(self, ctx: StepContext) -> Mapping[str, Any]:
        """A rotation's successor: the service ID (and so the access policies) of its chain's first binding."""
        owner = ctx.identity_binding_id or ctx.binding_id
        sid = self.cloud.get("service_id", ctx.instance_id, owner)
        if sid is None:
            raise PermanentBackendError(f"the service ID of binding {owner} is gone; bind anew instead of rotating")
        return {"serviceid_crn": f"crn:v1:bluemix:public:iam-identity::a/{sid.data.get('account', 'sim')}::"
                                 f"serviceid:{sid.id}", "serviceid_created": True}

    def _other_keys(self, ctx: StepContext) -> list[str]:
        """The bindings (other than this one) that still hold an API key on this binding's service ID: while
        any does (a rotation's predecessor or successor), the service ID and its policies stay."""
        sid = self.cloud.get("service_id", ctx.instance_id, ctx.identity_binding_id or ctx.binding_id)
        if sid is None:
            return []
        return sorted(str(k.binding_id) for k in self.cloud.of_kind("api_key", ctx.instance_id)
                      if k.binding_id != ctx.binding_id and str(k.data.get("serviceid_crn", "")).endswith(
                          f":serviceid:{sid.id}"))

    def _delete_service_id(self, ctx: StepContext) -> Mapping[str, Any]:
        self.cloud.remove_all("api_key", ctx.instance_id, ctx.binding_id)
        others = self._other_keys(ctx)
        if others:
            return {"service_id_kept_for": others}
        owner = ctx.identity_binding_id or ctx.binding_id
        self.cloud.remove_all("api_key", ctx.instance_id, owner)
        self.cloud.remove_all("service_id", ctx.instance_id, owner)
        return {}

    @staticmethod
    def _account(ctx: StepContext) -> str:
        ref = parse_workspace_crn(ctx.parameters.get("primary_workspace_crn", ""))
        return ref.account if ref else "sim"

    def _grant_workspace_access(self, ctx: StepContext) -> Mapping[str, Any]:
        """The simulated IAM's access policies of the binding's identity, one per workspace, in IAM's terms
        (subject, role CRNs, resource attributes) as the ibmcloud backend creates them."""
        ids = []
        for grant in workspace_grants(ctx.binding_parameters, *self._sites(ctx)):
            policy = self.cloud.ensure("access_policy", ctx.instance_id, ctx.binding_id, "active", {
                "subject": ctx.outputs.get("serviceid_crn"), "roles": list(grant.roles),
                "resource": {"accountId": self._account(ctx), **grant.resource}}, part=grant.name)
            ids.append(policy.id)
        return {"workspace_policy_ids": ids}

    def _revoke_access(self, ctx: StepContext) -> Mapping[str, Any]:
        others = self._other_keys(ctx)
        if others:  # a binding of the same rotation chain still uses these grants
            return {"revoked_policies": 0, "access_kept_for": others}
        owner = ctx.identity_binding_id or ctx.binding_id
        removed = self.cloud.remove_all("access_policy", ctx.instance_id, owner)
        removed += self.cloud.remove_all("key_policy", ctx.instance_id, owner)
        return {"revoked_policies": removed}

    def _grant_key_access(self, ctx: StepContext) -> Mapping[str, Any]:
        key = self.cloud.get("root_key", ctx.instance_id)
        if key is None:
            raise PermanentBackendError("the instance has no root key")
        grant = key_grant("sim-kp", key.id)
        policy = self.cloud.ensure("key_policy", ctx.instance_id, ctx.binding_id, "active", {
            "subject": ctx.outputs.get("serviceid_crn"), "role": grant.roles[0], "roles": list(grant.roles),
            "resource": {"accountId": self._account(ctx), **grant.resource}})
        return {"key_policy_id": policy.id}

    def _wrap_key(self, ctx: StepContext) -> Mapping[str, Any]:
        key = self.cloud.get("root_key", ctx.instance_id)
        if key is None:
            raise PermanentBackendError("the instance has no root key")
        wrapped = self.kp.wrap(key.id, aad=[ctx.instance_id, ctx.binding_id or ""])
        # The plaintext data key is dropped here: only its ciphertext leaves Key Protect through the broker.
        return {"wrapped_dek": wrapped.ciphertext, "key_version": wrapped.key_version, "root_key_id": key.id}

    def _issue_credentials(self, ctx: StepContext) -> Mapping[str, Any]:
        credentials: dict[str, Any] = {"backend": "simulated", "dr_instance_id": ctx.instance_id}
        group = self.cloud.get("volume_group", ctx.instance_id)
        aux = self.cloud.get("auxiliary_volume_group", ctx.instance_id)
        primary, secondary = self._sites(ctx)
        credentials["replication"] = {
            "type": "global_mirror_change_volumes",
            "primary": {"workspace_crn": primary, "volume_group_id": group.id if group else None},
            "secondary": {"workspace_crn": secondary, "volume_group_id": aux.id if aux else None},
            "consistency_group_name": group.data.get("consistency_group") if group else None,
            "rpo_target_minutes": ctx.parameters.get("rpo_target_minutes"),
        }
        wants = purpose(ctx.binding_parameters)
        orch = self.cloud.get("orchestrator", ctx.instance_id) if wants in ("orchestrator", "kms-dek") else None
        if orch is not None:
            standby = self.cloud.get("standby_orchestrator", ctx.instance_id)
            credentials["orchestrator"] = {"endpoint": f"https://{orch.data['ip']}:3000",
                                           "primary_ip": orch.data["ip"],
                                           "standby_ip": standby.data["ip"] if standby else None}
        grants = workspace_grants(ctx.binding_parameters, primary, secondary)
        if ctx.outputs.get("wrapped_dek") and wants == "kms-dek":
            key = self.cloud.get("root_key", ctx.instance_id)
            ring = self.cloud.get("key_ring", ctx.instance_id)
            grants.append(key_grant("sim-kp", key.id if key else ""))
            credentials["kms"] = {
                "root_key_crn": f"crn:v1:bluemix:public:kms:sim:a/sim:sim-kp:key:{key.id if key else ''}",
                "key_ring_id": ring.data["key_ring_id"] if ring else None,
                "wrapped_dek": ctx.outputs["wrapped_dek"], "key_version_id": ctx.outputs.get("key_version"),
                "aad": [ctx.instance_id, ctx.binding_id]}
        iam: dict[str, Any] = {"serviceid_crn": ctx.outputs.get("serviceid_crn")}
        if ctx.outputs.get("serviceid_created"):
            # A fresh key on every run: an earlier attempt's plaintext is gone (only its hash was kept).
            apikey = secrets.token_urlsafe(32)
            self.cloud.remove_all("api_key", ctx.instance_id, ctx.binding_id)
            self.cloud.ensure("api_key", ctx.instance_id, ctx.binding_id, "active",
                              {"sha256": _hash(apikey), "serviceid_crn": ctx.outputs.get("serviceid_crn")})
            iam["apikey"] = apikey
        credentials["iam"] = iam
        credentials["access"] = {"purpose": wants, "role": ctx.binding_parameters.get("role", "Reader"),
                                 "grants": [g.public() for g in grants]}
        return {"credentials": credentials}

    # day-2 ----------------------------------------------------------------------------------------
    def _check_replication(self, ctx: StepContext) -> Mapping[str, Any]:
        group = self.cloud.get("volume_group", ctx.instance_id)
        if group is None or group.state != "consistent_copying":
            state = group.state if group else "missing"
            raise PermanentBackendError(f"replication group is {state}, not consistent_copying")
        return {}

    def _managed(self, ctx: StepContext) -> list[tuple[str, str]]:
        """(VM id, priority) of the VMs this instance manages: ``managed_vms``, or those the orchestrator was
        given to manage at provisioning; none on plans without an orchestrator (see ``broker.domain.recovery``)."""
        if not recovery.moves_vms(ctx.plan.features):
            return []
        listed = recovery.listed_vms(ctx.parameters)
        if listed:
            return listed
        orch = self.cloud.get("orchestrator", ctx.instance_id)
        return [(vm, recovery.DEFAULT_PRIORITY) for vm in (orch.data.get("managed_vms") if orch else None) or []]

    def boot_seconds(self) -> float:
        return self.step_seconds * BOOT_WEIGHT

    def _in_order(self, targets: list[tuple[Resource, str, str]], state: str) -> list[dict[str, Any]]:
        """Bring ``targets`` (resource, managed VM, priority) to ``state`` one priority group after another
        (stop Low first, start High first); a started VM goes BUILD, then ACTIVE once it has booted (the
        simulated boot time). The record of each VM: what was done, when, and when its group was ready."""
        verb = "start" if state == "ACTIVE" else "stop"
        order: list[dict[str, Any]] = []
        for priority, group in recovery.priority_groups(targets, lambda t: t[2], verb):
            acted: list[tuple[Resource, dict[str, Any]]] = []
            booting = False
            for res, managed_vm, _ in group:
                at = self.clock()
                needed = res.state != state
                if needed:
                    booting = booting or state == "ACTIVE"
                    res = self.cloud.update(res, state="BUILD" if state == "ACTIVE" else state)
                acted.append((res, {"vm": res.id, "name": res.data.get("name") or res.data.get("vm_id"),
                                    "managed_vm": managed_vm, "priority": priority,
                                    "action": verb if needed else "none", "at": at}))
            if booting and self.boot_seconds() > 0:
                time.sleep(self.boot_seconds())
            ready = self.clock()
            for res, rec in acted:
                if res.state != state:
                    self.cloud.update(res, state=state)
                order.append({**rec, "state": state, "ready_at": ready})
        return order

    def _start_rehearsal(self, ctx: StepContext) -> Mapping[str, Any]:
        """Clone the replicas and boot a ``<vm>_DRTest`` VM per managed VM from them, High priority first."""
        _, secondary = self._sites(ctx)
        managed = self._managed(ctx)
        self.cloud.ensure("rehearsal", ctx.instance_id, None, "active", {
            "workspace_crn": secondary, "vms": [f"{vm}_DRTest" for vm, _ in managed],
            "volumes": [f"test_{v}" for v in ctx.parameters.get("protected_volumes") or []]})
        targets = [(self.cloud.ensure("rehearsal_vm", ctx.instance_id, None, "SHUTOFF",
                                      {"workspace_crn": secondary, "name": f"{vm}_DRTest", "managed_vm": vm,
                                       "priority": priority}, part=vm), vm, priority)
                   for vm, priority in managed]
        return {"order": self._in_order(targets, "ACTIVE"), "rehearsal_vms": [f"{vm}_DRTest" for vm, _ in managed]}

    def _verify_rehearsal(self, ctx: StepContext) -> Mapping[str, Any]:
        """Every rehearsal VM ACTIVE: the rehearsal has recovered; its RTO runs from the operation's start."""
        if self.cloud.get("rehearsal", ctx.instance_id) is None:
            raise PermanentBackendError("rehearsal resources are missing")
        managed = self._managed(ctx)
        vms = {r.data.get("managed_vm"): r for r in self.cloud.of_kind("rehearsal_vm", ctx.instance_id)}
        down = [f"{vm}_DRTest" for vm, _ in managed if vm not in vms or vms[vm].state != "ACTIVE"]
        if down:
            raise PermanentBackendError(f"rehearsal VMs not ACTIVE: {', '.join(down)}")
        return recovery.rto_outcome(ctx.operation_started_at, self.clock(), ctx.plan.features)

    def _cleanup_rehearsal(self, ctx: StepContext) -> Mapping[str, Any]:
        # the rehearsal VMs go before the clones they boot from
        removed = [r.data.get("name") for r in self.cloud.of_kind("rehearsal_vm", ctx.instance_id)]
        self.cloud.remove_all("rehearsal_vm", ctx.instance_id)
        self.cloud.remove_all("rehearsal", ctx.instance_id)
        return {"removed_rehearsal_vms": sorted(removed)}

    def _power(self, site: str, state: str) -> Action:
        """Stop or start the managed VMs at ``site`` (the primary's own, or their backups at the secondary),
        in priority order; no other VM of the workspace is touched."""
        def act(ctx: StepContext) -> Mapping[str, Any]:
            primary, _ = self._sites(ctx)
            targets: list[tuple[Resource, str, str]] = []
            for vm, priority in self._managed(ctx):
                res = (self.cloud.get("pvm_instance", SEED_OWNER, None, part=f"{primary}/{vm}") if site == "primary"
                       else self.cloud.get("backup_vm", ctx.instance_id, None, part=vm))
                if res is None:
                    where = "in the primary workspace" if site == "primary" else "(no backup VM at the secondary)"
                    raise PermanentBackendError(f"managed VM {vm} not found {where}")
                targets.append((res, vm, priority))
            order = self._in_order(targets, state)
            return {f"{site}_vms_{state.lower()}": sorted(r["name"] for r in order), "order": order}
        return act

    def _group_action(self, state: str, *, role: str | None = None, stop: bool = False,
                      consistent: bool = False) -> Action:
        def act(ctx: StepContext) -> Mapping[str, Any]:
            group = self.cloud.get("volume_group", ctx.instance_id)
            if group is None:
                raise PermanentBackendError("the replication group does not exist")
            now = self.clock()
            data: dict[str, Any] = {}
            if role:
                data["primary_role"] = role
            if stop:
                data["freeze_time"] = self.replication_status(ctx.instance_id).freeze_time or now
                data["consistent_since"] = None
            if consistent:
                data["consistent_since"] = now
            self.cloud.update(group, state=state, data=data)
            aux = self.cloud.get("auxiliary_volume_group", ctx.instance_id)
            if aux is not None:
                self.cloud.update(aux, state=state, data={k: v for k, v in data.items() if k == "primary_role"})
            return {"dr_state": {"replication": state}}
        return act
