"""The seams between the workflow engine and the outside world.

An orchestrator backend performs named, idempotent actions (``create_replication_group``,
``delete_dr_policy``, ...). The workflow definitions (``broker.workflows.definitions``) are data that name
those actions in order; every backend must implement every action they name, which the contract tests in
``tests/orchestrators`` check for each backend.
"""

from __future__ import annotations

from collections.abc import Mapping
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
