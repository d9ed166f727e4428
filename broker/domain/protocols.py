"""The seams between the workflow engine and the outside world.

An orchestrator backend performs named, idempotent actions (``create_replication_group``,
``delete_dr_policy``, ...). The workflow definitions (``broker.workflows.definitions``) are data that name
those actions in order; every backend must implement every action they name, which the contract tests in
``tests/orchestrators`` check for each backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from broker.domain.catalog import Plan


@dataclass(frozen=True)
class StepContext:
    """What an action may know. ``outputs`` holds what earlier steps of this operation returned."""

    operation_id: str
    operation_type: str
    instance_id: str
    plan: Plan
    parameters: Mapping[str, Any]
    context: Mapping[str, Any] = field(default_factory=dict)
    binding_id: str | None = None
    binding_parameters: Mapping[str, Any] = field(default_factory=dict)
    bind_resource: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    # the binding whose service ID and access policies this binding uses: the first of its rotation chain
    # (``broker.services.rotation``); None for a binding that has its own
    identity_binding_id: str | None = None
    # when the operation started running (epoch seconds): a rehearsal measures its RTO from here
    operation_started_at: float | None = None


@dataclass(frozen=True)
class ReplicationStatus:
    """The replication group as the storage reports it. Achieved RPO = now - ``freeze_time``."""

    state: str
    primary_role: str
    freeze_time: float | None
    cycle_period_seconds: int
    consistency_group: str | None = None


class Orchestrator(Protocol):
    """A DR backend. ``perform`` must be idempotent: repeating an action finds what it made before."""

    name: str

    def actions(self) -> frozenset[str]:
        """Every action name this backend implements."""
        ...

    def perform(self, action: str, ctx: StepContext) -> Mapping[str, Any]:
        """Carry out ``action``; return the external ids and facts later steps need.

        Raises ``TransientBackendError`` for what may succeed on retry and ``PermanentBackendError``
        for what will not.
        """
        ...

    def expected_seconds(self, action: str) -> float:
        """How long the action usually takes; drives ``Retry-After``."""
        ...

    def describe(self) -> str:
        """One line for the start-up log."""
        ...

    def check_protection(self, primary_crn: str, secondary_crn: str, volume_ids: Sequence[str],
                         instance_id: str | None = None) -> list[str]:
        """What stands in the way of protecting these volumes (missing workspaces or volumes, volumes in
        several pools or already in another group); each problem names its parameter."""
        ...

    def replication_status(self, instance_id: str) -> ReplicationStatus | None:
        """The instance's replication group state, or None when it has none (yet)."""
        ...

    def replication_statuses(self, instance_ids: Sequence[str]) -> dict[str, ReplicationStatus]:
        """``replication_status`` of many instances at once, for periodic sampling of every instance.

        Only instances that have replication appear in the result. A backend that can read many groups in
        one request should; one that cannot may loop over ``replication_status``.
        """
        ...
