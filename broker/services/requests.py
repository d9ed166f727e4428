"""What the HTTP adapter hands the service layer: plain, already shape-checked request records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Caller:
    """Who asks: the authenticated principal and the platform's originating identity, for the record."""

    principal: str | None = None
    originating_identity: dict[str, Any] | None = None
    request_identity: str | None = None
    base_url: str | None = None


@dataclass(frozen=True)
class ProvisionRequest:
    instance_id: str
    service_id: str
    plan_id: str
    accepts_incomplete: bool
    organization_guid: str | None = None
    space_guid: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    maintenance_version: str | None = None
    caller: Caller = field(default_factory=Caller)


@dataclass(frozen=True)
class UpdateRequest:
    instance_id: str
    service_id: str
    accepts_incomplete: bool
    plan_id: str | None = None
    parameters: dict[str, Any] | None = None
    context: dict[str, Any] = field(default_factory=dict)
    maintenance_version: str | None = None
    previous_values: dict[str, Any] = field(default_factory=dict)
    caller: Caller = field(default_factory=Caller)


@dataclass(frozen=True)
class DeprovisionRequest:
    instance_id: str
    service_id: str
    plan_id: str
    accepts_incomplete: bool
    caller: Caller = field(default_factory=Caller)


@dataclass(frozen=True)
class BindRequest:
    instance_id: str
    binding_id: str
    service_id: str
    plan_id: str
    accepts_incomplete: bool
    parameters: dict[str, Any] = field(default_factory=dict)
    bind_resource: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    app_guid: str | None = None
    caller: Caller = field(default_factory=Caller)
    # OSB 2.17 rotation: the binding this one succeeds (service_id, plan_id and parameters are inherited)
    predecessor_binding_id: str | None = None


@dataclass(frozen=True)
class UnbindRequest:
    instance_id: str
    binding_id: str
    service_id: str
    plan_id: str
    accepts_incomplete: bool
    caller: Caller = field(default_factory=Caller)


@dataclass(frozen=True)
class Result:
    """An accepted request. ``status`` is the OSB outcome: created (201), accepted (202), ok (200)."""

    status: str
    operation: str | None = None
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LastOperation:
    state: str  # "in progress" | "succeeded" | "failed"
    description: str | None = None
    instance_usable: bool | None = None
    update_repeatable: bool | None = None
    retry_after: int | None = None
