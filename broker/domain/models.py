"""Records and states of the broker's durable world. Immutable; the store returns fresh copies."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class InstanceState(StrEnum):
    PROVISIONING = "provisioning"
    READY = "ready"
    FAILED = "failed"
    DEPROVISIONING = "deprovisioning"
    GONE = "gone"


class BindingState(StrEnum):
    BINDING = "binding"
    BOUND = "bound"
    FAILED = "failed"
    UNBINDING = "unbinding"
    GONE = "gone"


class OperationType(StrEnum):
    PROVISION = "provision"
    UPDATE = "update"
    DEPROVISION = "deprovision"
    BIND = "bind"
    UNBIND = "unbind"

    @property
    def is_binding(self) -> bool:
        return self in (OperationType.BIND, OperationType.UNBIND)


class OperationState(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (OperationState.SUCCEEDED, OperationState.FAILED)


@dataclass(frozen=True)
class Instance:
    id: str
    service_id: str
    plan_id: str
    state: InstanceState
    parameters: dict[str, Any]
    context: dict[str, Any]
    organization_guid: str | None
    space_guid: str | None
    maintenance_version: str | None
    dashboard_url: str | None
    request_hash: str
    enabled: bool
    last_active: float | None
    created_at: float
    updated_at: float
    dr_state: dict[str, Any] = field(default_factory=dict)
    account_id: str | None = None


@dataclass(frozen=True)
class Binding:
    instance_id: str
    id: str
    service_id: str
    plan_id: str
    state: BindingState
    parameters: dict[str, Any]
    bind_resource: dict[str, Any]
    context: dict[str, Any]
    credentials: dict[str, Any] | None
    request_hash: str
    created_at: float
    updated_at: float
    # rotation (OSB 2.17, broker.services.rotation): the binding this one succeeds, the first of the chain
    # (whose service ID and grants it shares), and its lifetime from the plan (epoch seconds)
    predecessor_binding_id: str | None = None
    identity_binding_id: str | None = None
    expires_at: float | None = None
    renew_before: float | None = None


@dataclass(frozen=True)
class Operation:
    id: str
    instance_id: str
    binding_id: str | None
    type: OperationType
    state: OperationState
    plan_id: str
    request_hash: str
    created_at: float
    description: str | None = None
    step_index: int = 0
    step_total: int = 0
    step_started_at: float | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    originating_identity: dict[str, Any] | None = None
    request_identity: str | None = None
    principal: str | None = None
    cancel_requested: bool = False
    blocked_by: str | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    heartbeat_at: float | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class StepRecord:
    operation_id: str
    idx: int
    name: str
    state: str
    attempts: int
    started_at: float | None
    finished_at: float | None
    outputs: dict[str, Any]
    error: str | None
