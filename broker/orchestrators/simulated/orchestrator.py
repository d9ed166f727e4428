"""The simulated orchestrator: the ``Orchestrator`` protocol over ``SimulatedCloud``.

Each action takes ``step_seconds * weight`` of wall time (``DRBROKER_SIM_STEP_SECONDS``; 0 = instant),
then creates, changes or removes resources owned by the instance or binding.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine

from broker.domain.errors import PermanentBackendError
from broker.domain.protocols import StepContext
from broker.orchestrators.simulated.cloud import SimulatedCloud
from broker.orchestrators.simulated.faults import FaultInjector

log = logging.getLogger(__name__)

Action = Callable[[StepContext], Mapping[str, Any]]

# Relative duration of each action; a step takes step_seconds * weight.
_WEIGHTS = {
    "deploy_orchestrator": 3.0,
    "wait_consistent_copying": 2.0,
    "create_service_id": 0.1,
    "grant_key_access": 0.1,
    "issue_credentials": 0.1,
    "revoke_credentials": 0.1,
    "revoke_key_access": 0.1,
    "delete_service_id": 0.1,
}

# Resources a ready instance has, by plan feature; ``verify`` checks them.
_BASE_KINDS = ("dr_policy", "replicated_volumes", "volume_group", "auxiliary_volume_group")


def _expected_kinds(ctx: StepContext) -> list[str]:
    kinds = list(_BASE_KINDS)
    if ctx.plan.features.get("byok"):
        kinds += ["key_ring", "root_key"]
    if ctx.plan.features.get("orchestrator") == "ksys":
        kinds.append("orchestrator")
        if ctx.plan.features.get("standby"):
            kinds.append("standby_orchestrator")
    return kinds


class SimulatedOrchestrator:
    name = "simulated"

    def __init__(self, engine: Engine, *, step_seconds: float = 1.0, faults: str = "") -> None:
        self.cloud = SimulatedCloud(engine)
        self.step_seconds = step_seconds
        self.faults = FaultInjector(faults)
        self._actions: dict[str, Action] = {
            "validate_sites": self._validate_sites,
            "create_dr_policy": self._creator("dr_policy", "active", self._policy_data),
            "delete_dr_policy": self._remover("dr_policy"),
            "create_key_ring": self._creator("key_ring", "active"),
            "delete_key_ring": self._remover("key_ring"),
            "create_root_key": self._creator("root_key", "active", lambda c: {"algorithm": "AES-256"}),
            "delete_root_key": self._remover("root_key"),
            "enable_replication": self._creator("replicated_volumes", "enabled", self._volume_data),
            "disable_replication": self._remover("replicated_volumes"),
            "create_replication_group": self._creator("volume_group", "inconsistent_copying"),
            "wait_consistent_copying": self._wait_consistent,
            "delete_replication_group": self._remover("volume_group"),
            "onboard_auxiliary_volumes": self._creator("auxiliary_volume_group", "consistent_copying"),
            "remove_auxiliary_volumes": self._remover("auxiliary_volume_group"),
            "deploy_orchestrator": self._deploy_orchestrator,
            "remove_orchestrator": self._remove_orchestrator,
            "add_sites": self._orchestrator_fact("sites_added", True),
            "manage_vms": self._orchestrator_fact("vms_managed", True),
            "discover": self._orchestrator_fact("discovered", True),
            "verify": self._verify,
            "verify_removed": self._verify_removed,
            "apply_parameters": self._apply_parameters,
            "revoke_all_bindings": self._revoke_all_bindings,
            "create_service_id": self._create_service_id,
            "delete_service_id": self._remover("service_id", binding=True),
            "grant_key_access": self._creator("key_policy", "active", binding=True),
            "revoke_key_access": self._remover("key_policy", binding=True),
            "issue_credentials": self._issue_credentials,
            "revoke_credentials": self._remover("api_key", binding=True),
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

    # action builders ------------------------------------------------------------------------------
    def _creator(self, kind: str, state: str, data: Callable[[StepContext], Mapping[str, Any]] | None = None,
                 *, binding: bool = False) -> Action:
        def act(ctx: StepContext) -> Mapping[str, Any]:
            res = self.cloud.ensure(kind, ctx.instance_id, ctx.binding_id if binding else None, state,
                                    data(ctx) if data else {})
            return {f"{kind}_id": res.id}
        return act

    def _remover(self, kind: str, *, binding: bool = False) -> Action:
        def act(ctx: StepContext) -> Mapping[str, Any]:
            self.cloud.remove(kind, ctx.instance_id, ctx.binding_id if binding else None)
            return {}
        return act

    def _orchestrator_fact(self, key: str, value: Any) -> Action:
        def act(ctx: StepContext) -> Mapping[str, Any]:
            if not self.cloud.set_state("orchestrator", ctx.instance_id, None, "active", {key: value}):
                raise PermanentBackendError(f"{key}: the orchestrator of {ctx.instance_id} is not deployed")
            return {}
        return act

    # actions --------------------------------------------------------------------------------------
    @staticmethod
    def _policy_data(ctx: StepContext) -> Mapping[str, Any]:
        return {"rpo_target_minutes": ctx.parameters.get("rpo_target_minutes")}

    @staticmethod
    def _volume_data(ctx: StepContext) -> Mapping[str, Any]:
        return {"volumes": list(ctx.parameters.get("protected_volumes") or [])}

    def _validate_sites(self, ctx: StepContext) -> Mapping[str, Any]:
        primary = ctx.parameters.get("primary_workspace_crn")
        secondary = ctx.parameters.get("secondary_workspace_crn")
        if not primary or not secondary:
            raise PermanentBackendError("both primary and secondary workspaces are required")
        return {}

    def _wait_consistent(self, ctx: StepContext) -> Mapping[str, Any]:
        if not self.cloud.set_state("volume_group", ctx.instance_id, None, "consistent_copying"):
            raise PermanentBackendError("the replication group does not exist")
        return {}

    def _deploy_orchestrator(self, ctx: StepContext) -> Mapping[str, Any]:
        res = self.cloud.ensure("orchestrator", ctx.instance_id, None, "deploying", {})
        out = {"orchestrator_id": res.id}
        if ctx.plan.features.get("standby"):
            out["standby_orchestrator_id"] = self.cloud.ensure(
                "standby_orchestrator", ctx.instance_id, None, "active", {}).id
        return out

    def _remove_orchestrator(self, ctx: StepContext) -> Mapping[str, Any]:
        self.cloud.remove("standby_orchestrator", ctx.instance_id)
        self.cloud.remove("orchestrator", ctx.instance_id)
        return {}

    def _verify(self, ctx: StepContext) -> Mapping[str, Any]:
        missing = [k for k in _expected_kinds(ctx) if self.cloud.get(k, ctx.instance_id) is None]
        if missing:
            raise PermanentBackendError(f"verification failed: missing {', '.join(missing)}")
        return {}

    def _verify_removed(self, ctx: StepContext) -> Mapping[str, Any]:
        left = self.cloud.inventory(ctx.instance_id)
        if left:
            raise PermanentBackendError("resources left behind: " + ", ".join(r.kind for r in left))
        return {}

    def _apply_parameters(self, ctx: StepContext) -> Mapping[str, Any]:
        self.cloud.set_state("dr_policy", ctx.instance_id, None, "active", self._policy_data(ctx))
        self.cloud.set_state("replicated_volumes", ctx.instance_id, None, "enabled", self._volume_data(ctx))
        if ctx.plan.features.get("standby"):
            self.cloud.ensure("standby_orchestrator", ctx.instance_id, None, "active", {})
        elif ctx.plan.features.get("orchestrator") == "ksys":
            self.cloud.remove("standby_orchestrator", ctx.instance_id)
        return {}

    def _revoke_all_bindings(self, ctx: StepContext) -> Mapping[str, Any]:
        return {"revoked_resources": self.cloud.remove_binding_resources(ctx.instance_id)}

    def _create_service_id(self, ctx: StepContext) -> Mapping[str, Any]:
        given = ctx.bind_resource.get("serviceid_crn")
        if given:
            return {"serviceid_crn": given, "serviceid_created": False}
        res = self.cloud.ensure("service_id", ctx.instance_id, ctx.binding_id, "active", {})
        account = (ctx.context or {}).get("account_id", "sim0account")
        return {"serviceid_crn": f"crn:v1:bluemix:public:iam-identity::a/{account}::serviceid:{res.id}",
                "serviceid_created": True}

    def _issue_credentials(self, ctx: StepContext) -> Mapping[str, Any]:
        key = self.cloud.ensure("api_key", ctx.instance_id, ctx.binding_id, "active",
                                {"apikey": secrets.token_urlsafe(32)})
        group = self.cloud.get("volume_group", ctx.instance_id)
        aux = self.cloud.get("auxiliary_volume_group", ctx.instance_id)
        orch = self.cloud.get("orchestrator", ctx.instance_id)
        root = self.cloud.get("root_key", ctx.instance_id)
        credentials: dict[str, Any] = {
            "backend": "simulated",
            "replication": {
                "primary": {"workspace_crn": ctx.parameters.get("primary_workspace_crn"),
                            "volume_group_id": group.id if group else None},
                "secondary": {"workspace_crn": ctx.parameters.get("secondary_workspace_crn"),
                              "volume_group_id": aux.id if aux else None},
                "consistency_group_name": f"rccg-{group.id[-12:]}" if group else None,
                "rpo_target_minutes": ctx.parameters.get("rpo_target_minutes"),
            },
            "iam": {"serviceid_crn": ctx.outputs.get("serviceid_crn"), "apikey": key.data["apikey"]},
        }
        if orch:
            credentials["orchestrator"] = {"endpoint": f"https://ksys-{orch.id[-12:]}.sim.invalid:3000"}
        if root:
            credentials["kms"] = {"root_key_id": root.id}
        return {"credentials": credentials}
