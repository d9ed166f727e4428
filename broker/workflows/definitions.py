"""Workflows as data: for each operation type and plan, the ordered steps and their compensations.

A step names an orchestrator action; ``compensation`` names the action that undoes it when a later step
fails permanently. Plans select optional parts through their catalog ``features``:
``orchestrator: ksys`` (deploy KSYS; only then do moves stop and start VMs, and only the managed ones),
``rto_target_minutes`` (what a rehearsal's measured RTO is compared with), ``standby: true`` (a standby
orchestrator), ``byok: true`` (Key Protect keys), ``rehearsal_only: true`` (only test failovers). Day-2 DR
actions arrive as updates whose payload carries ``dr_action``; ``DR_ACTIONS`` says what each requires of the
instance's DR state and what it changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.domain import recovery
from broker.domain.catalog import Plan
from broker.domain.models import OperationType


@dataclass(frozen=True)
class Step:
    action: str
    title: str
    compensation: str | None = None


def _keys() -> list[Step]:
    return [
        Step("create_key_ring", "creating key ring", "delete_key_ring"),
        Step("create_root_key", "creating root key", "delete_root_key"),
    ]


def _provision(plan: Plan, payload: Mapping[str, Any]) -> list[Step]:
    f = plan.features
    steps = [
        Step("validate_sites", "validating sites"),
        Step("create_dr_policy", "creating DR policy", "delete_dr_policy"),
    ]
    if f.get("byok"):
        steps += _keys()
    steps += [
        Step("enable_replication", "enabling volume replication", "disable_replication"),
        Step("create_replication_group", "creating replication group", "delete_replication_group"),
        Step("wait_consistent_copying", "waiting for consistent_copying"),
        Step("onboard_auxiliary_volumes", "onboarding auxiliary volumes at the secondary",
             "remove_auxiliary_volumes"),
    ]
    if f.get("orchestrator") == "ksys":
        steps += [
            Step("deploy_orchestrator", "deploying the DR orchestrator", "remove_orchestrator"),
            Step("add_sites", "adding sites to the orchestrator"),
            Step("manage_vms", "managing VMs"),
            Step("discover", "discovering the workgroups"),
        ]
    steps.append(Step("verify", "verifying"))
    return steps


def _deprovision(plan: Plan, payload: Mapping[str, Any]) -> list[Step]:
    f = plan.features
    # The documented tear-down order: bindings' grants first, then the orchestrator, the group's
    # volumes, the group, replication, the secondary side; keys last because bindings wrapped data keys.
    steps = [Step("revoke_all_bindings", "revoking remaining bindings")]
    if f.get("orchestrator") == "ksys":
        steps.append(Step("remove_orchestrator", "removing the DR orchestrator"))
    steps += [
        Step("delete_replication_group", "deleting the replication group"),
        Step("disable_replication", "disabling volume replication"),
        Step("remove_auxiliary_volumes", "removing auxiliary volumes at the secondary"),
    ]
    # Keys go whenever the instance may have them (a plan change to byok creates them).
    steps += [
        Step("delete_root_key", "deleting the root key"),
        Step("delete_key_ring", "deleting the key ring"),
        Step("delete_dr_policy", "deleting the DR policy"),
        Step("verify_removed", "verifying nothing is left"),
    ]
    return steps


def _update(plan: Plan, payload: Mapping[str, Any]) -> list[Step]:
    action = payload.get("dr_action")
    if action:
        return DR_ACTIONS[action["type"]].steps(plan, action)
    steps = [Step("apply_parameters", "applying parameters")]
    if payload.get("rotate_api_key") and plan.features.get("orchestrator") == "ksys":
        # the update carries a new ibmcloud_api_key: DR Automation's orchestrator gets it
        steps.append(Step("update_orchestrator_api_key", "handing the new API key to DR Automation"))
    if plan.features.get("byok"):
        steps += [Step("create_key_ring", "creating key ring"), Step("create_root_key", "creating root key")]
    if plan.features.get("orchestrator") == "ksys":
        steps.append(Step("sync_standby_orchestrator", "matching the standby orchestrator to the plan"))
    steps.append(Step("verify", "verifying"))
    return steps


def bind_purpose(plan: Plan, payload: Mapping[str, Any]) -> str:
    """The binding's ``purpose`` (bind parameter): the bind service puts it in the operation's payload; a bind
    queued before it did falls back to what such a binding received then (byok plans: a wrapped data key)."""
    purpose = payload.get("purpose")
    if purpose:
        return str(purpose)
    if plan.features.get("byok"):
        return "kms-dek"
    return "orchestrator" if plan.features.get("orchestrator") == "ksys" else "readonly"


def _rotate(plan: Plan, payload: Mapping[str, Any]) -> list[Step]:
    # A successor (OSB 2.17 rotation, broker.services.rotation) keeps the grants of its chain's first binding
    # (``identity_binding_id``): it finds that service ID again, gets a data key wrapped for itself (AAD names
    # its own binding id) and an API key of its own on the shared service ID. Nothing shared is undone when it
    # fails: only its own API key is revoked.
    steps = [Step("reuse_service_id", "finding the predecessor's service ID")]
    if bind_purpose(plan, payload) == "kms-dek":
        steps.append(Step("wrap_key", "wrapping a fresh data key"))
    steps.append(Step("issue_credentials", "issuing fresh credentials", "revoke_credentials"))
    return steps


def _bind(plan: Plan, payload: Mapping[str, Any]) -> list[Step]:
    if payload.get("identity_binding_id"):
        return _rotate(plan, payload)
    # Every binding: an identity, an access policy on each of the instance's workspaces (the role follows the
    # bind parameters ``purpose`` and ``role``), and the credentials. ``kms-dek`` adds Reader on the root key
    # and a wrapped data key.
    steps = [
        Step("create_service_id", "creating the service ID", "delete_service_id"),
        Step("grant_workspace_access", "granting access to the two workspaces", "revoke_access"),
    ]
    if bind_purpose(plan, payload) == "kms-dek":
        steps += [
            Step("grant_key_access", "granting Reader on the root key", "revoke_key_access"),
            Step("wrap_key", "wrapping a data key"),
        ]
    steps.append(Step("issue_credentials", "issuing credentials", "revoke_credentials"))
    return steps


def _unbind(plan: Plan, payload: Mapping[str, Any]) -> list[Step]:
    # The same steps for every binding: the first revokes only this binding's API key; the access policies
    # and the service ID go only when no other binding of the rotation chain still holds a key on them.
    return [
        Step("revoke_credentials", "revoking credentials"),
        Step("revoke_access", "revoking every access policy of the binding"),
        Step("delete_service_id", "deleting the service ID"),
    ]


@dataclass(frozen=True)
class DrAction:
    """A day-2 action: when it is allowed, its steps, and the DR state it leaves."""

    name: str
    real_move: bool
    allowed: Callable[[Mapping[str, Any]], str | None]  # dr_state -> None, or why not
    build: Callable[[Plan, Mapping[str, Any]], list[Step]]
    result: Mapping[str, Any] = field(default_factory=dict)

    def steps(self, plan: Plan, action: Mapping[str, Any]) -> list[Step]:
        return self.build(plan, action)


def _active(state: Mapping[str, Any]) -> str:
    return state.get("active_site", "primary")


def moves_vms(plan: Plan) -> bool:
    """Whether the plan's moves stop and start VMs: only with a DR orchestrator (``orchestrator: ksys``), and
    then only the VMs the instance manages. ``orchestrator: none`` (grs-async: "you own the standby VMs")
    moves the replicas alone and touches no VM."""
    return recovery.moves_vms(plan.features)


def _failover_steps(plan: Plan, action: Mapping[str, Any]) -> list[Step]:
    vms = moves_vms(plan)
    steps = [Step("check_replication", "checking replication")] if action.get("mode") != "unplanned" else []
    if action.get("mode") != "unplanned" and vms:
        steps.append(Step("stop_primary_vms", "stopping VMs at the primary site"))
    steps.append(Step("failover_replication", "stopping replication with access at the secondary"))
    if vms:
        steps.append(Step("start_secondary_vms", "starting VMs at the secondary site"))
    return steps


def _failback_steps(plan: Plan, action: Mapping[str, Any]) -> list[Step]:
    vms = moves_vms(plan)
    steps = [Step("stop_secondary_vms", "stopping VMs at the secondary site")] if vms else []
    steps += [
        Step("reverse_replication", "resyncing changes from the secondary to the primary"),
        Step("wait_reverse_consistent", "waiting for the reverse copy to be consistent"),
        Step("stop_reverse_with_access", "stopping the reverse copy with access at the primary"),
        Step("restart_replication", "restarting replication from the primary"),
        Step("wait_consistent_copying", "waiting for consistent_copying"),
    ]
    if vms:
        steps.append(Step("start_primary_vms", "starting VMs at the primary site"))
    return steps


# The DR actions that rehearse (test failover): the engine records their RTO, the event log, the rehearsal
# schedule and the reports treat them as rehearsals. "rehearsal" is the whole one the scheduler runs.
REHEARSAL_ACTIONS = frozenset({"test_failover", "rehearsal"})


def _rehearsal_blocker(state: Mapping[str, Any]) -> str | None:
    """Why no rehearsal may start in this DR state (None: one may)."""
    if state.get("test_active"):
        return "a test failover is already active; run cleanup_test first"
    if _active(state) != "primary":
        return "the instance is failed over; fail back before rehearsing"
    return None


DR_ACTIONS: dict[str, DrAction] = {a.name: a for a in (
    DrAction(
        "test_failover", real_move=False,
        allowed=_rehearsal_blocker,
        build=lambda plan, a: [
            Step("check_replication", "checking replication"),
            Step("start_rehearsal", "starting rehearsal VMs and volumes at the secondary", "cleanup_rehearsal"),
            Step("verify_rehearsal", "verifying the rehearsal"),
        ],
        result={"test_active": True}),
    DrAction(
        # A whole rehearsal as one operation (what the rehearsal scheduler runs; a platform may ask for it
        # too): test failover, its check and RTO, and the clean-up. A failure compensates start_rehearsal,
        # so nothing of the rehearsal is left behind either way.
        "rehearsal", real_move=False,
        allowed=_rehearsal_blocker,
        build=lambda plan, a: [
            Step("check_replication", "checking replication"),
            Step("start_rehearsal", "starting rehearsal VMs and volumes at the secondary", "cleanup_rehearsal"),
            Step("verify_rehearsal", "verifying the rehearsal and measuring the RTO"),
            Step("cleanup_rehearsal", "removing rehearsal VMs and volumes"),
        ],
        result={"test_active": False}),
    DrAction(
        "cleanup_test", real_move=False,
        allowed=lambda s: None if s.get("test_active") else "no test failover is active",
        build=lambda plan, a: [Step("cleanup_rehearsal", "removing rehearsal VMs and volumes")],
        result={"test_active": False}),
    DrAction(
        "failover", real_move=True,
        allowed=lambda s: ("the instance is already failed over to the secondary site"
                           if _active(s) != "primary" else "a test failover is active; run cleanup_test first"
                           if s.get("test_active") else None),
        build=_failover_steps,
        result={"active_site": "secondary"}),
    DrAction(
        "failback", real_move=True,
        allowed=lambda s: None if _active(s) == "secondary" else "failback needs a failover first: the primary "
                                                                 "site is active",
        build=_failback_steps,
        result={"active_site": "primary"}),
    DrAction(
        "resync", real_move=False,
        allowed=lambda s: ("the instance is failed over; use failback to resync towards the primary"
                           if _active(s) != "primary" else None),
        build=lambda plan, a: [
            Step("restart_replication", "restarting replication from the primary"),
            Step("wait_consistent_copying", "waiting for consistent_copying"),
        ]),
)}


_BUILDERS: dict[OperationType, Callable[[Plan, Mapping[str, Any]], list[Step]]] = {
    OperationType.PROVISION: _provision,
    OperationType.DEPROVISION: _deprovision,
    OperationType.UPDATE: _update,
    OperationType.BIND: _bind,
    OperationType.UNBIND: _unbind,
}


def steps_for(op_type: OperationType, plan: Plan, payload: Mapping[str, Any] | None = None) -> tuple[Step, ...]:
    return tuple(_BUILDERS[op_type](plan, payload or {}))


def bind_purposes(plan: Plan) -> list[str]:
    """The bind ``purpose`` values the plan's bind schema offers."""
    schema = plan.parameter_schema("bind") or {}
    return list(((schema.get("properties") or {}).get("purpose") or {}).get("enum") or [])


def variants(plan: Plan) -> list[Mapping[str, Any]]:
    """The payloads besides DR actions that change a workflow's steps: a bind's purpose (of a first binding or
    of a rotation's successor), an update's new API key."""
    return [{"rotate_api_key": True}, *({"purpose": p} for p in bind_purposes(plan)),
            *({"purpose": p, "identity_binding_id": "rotation"} for p in bind_purposes(plan))]


def all_actions(plan: Plan) -> set[str]:
    """Every action any workflow of ``plan`` may call (steps and compensations), day-2 included."""
    payloads: list[Mapping[str, Any]] = [{}, *variants(plan)]
    payloads += [{"dr_action": {"type": name, "mode": mode}} for name in DR_ACTIONS
                 for mode in ("planned", "unplanned")]
    names: set[str] = set()
    for op_type in OperationType:
        for payload in payloads:
            for step in steps_for(op_type, plan, payload):
                names.add(step.action)
                if step.compensation:
                    names.add(step.compensation)
    return names
