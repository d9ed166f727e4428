"""Workflows as data: for each operation type and plan, the ordered steps and their compensations.

A step names an orchestrator action; ``compensation`` names the action that undoes it when a later step
fails permanently. Plans select optional parts through their catalog ``features``:
``orchestrator: ksys`` (deploy KSYS), ``standby: true`` (a standby orchestrator), ``byok: true`` (Key Protect
keys).
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.domain.catalog import Plan
from broker.domain.models import OperationType


@dataclass(frozen=True)
class Step:
    action: str
    title: str
    compensation: str | None = None


def _provision(plan: Plan) -> list[Step]:
    f = plan.features
    steps = [
        Step("validate_sites", "validating sites"),
        Step("create_dr_policy", "creating DR policy", "delete_dr_policy"),
    ]
    if f.get("byok"):
        steps += [
            Step("create_key_ring", "creating key ring", "delete_key_ring"),
            Step("create_root_key", "creating root key", "delete_root_key"),
        ]
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
            Step("discover", "discovering the workgroup"),
        ]
    steps.append(Step("verify", "verifying"))
    return steps


def _deprovision(plan: Plan) -> list[Step]:
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
    if f.get("byok"):
        steps += [
            Step("delete_root_key", "deleting the root key"),
            Step("delete_key_ring", "deleting the key ring"),
        ]
    steps += [
        Step("delete_dr_policy", "deleting the DR policy"),
        Step("verify_removed", "verifying nothing is left"),
    ]
    return steps


def _update(plan: Plan) -> list[Step]:
    return [
        Step("apply_parameters", "applying parameters"),
        Step("verify", "verifying"),
    ]


def _bind(plan: Plan) -> list[Step]:
    steps = [Step("create_service_id", "creating the service ID", "delete_service_id")]
    if plan.features.get("byok"):
        steps.append(Step("grant_key_access", "granting Reader on the root key", "revoke_key_access"))
    steps.append(Step("issue_credentials", "issuing credentials", "revoke_credentials"))
    return steps


def _unbind(plan: Plan) -> list[Step]:
    steps = [Step("revoke_credentials", "revoking credentials")]
    if plan.features.get("byok"):
        steps.append(Step("revoke_key_access", "revoking key access"))
    steps.append(Step("delete_service_id", "deleting the service ID"))
    return steps


_BUILDERS = {
    OperationType.PROVISION: _provision,
    OperationType.DEPROVISION: _deprovision,
    OperationType.UPDATE: _update,
    OperationType.BIND: _bind,
    OperationType.UNBIND: _unbind,
}


def steps_for(op_type: OperationType, plan: Plan) -> tuple[Step, ...]:
    return tuple(_BUILDERS[op_type](plan))


def all_actions(plan: Plan) -> set[str]:
    """Every action any workflow of ``plan`` may call (steps and compensations)."""
    names: set[str] = set()
    for op_type in OperationType:
        for step in steps_for(op_type, plan):
            names.add(step.action)
            if step.compensation:
                names.add(step.compensation)
    return names
