"""Every DR event type the broker records: its severity, what it means and the facts its ``data`` holds. The
one table of names; docs/events.md shows it and ``tests/events/test_event_types.py`` holds the two to each
other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventType:
    name: str
    severity: str  # info | warning | critical
    meaning: str
    data: tuple[str, ...] = ()  # the keys of the event's data (never a secret)


SEVERITIES = ("info", "warning", "critical")

_REHEARSAL = ("operation_id", "action", "scheduled", "rto_seconds", "rto_target_seconds", "rto_met")
_RPO = ("achieved_rpo_seconds", "rpo_target_seconds", "replication_state")
_PROTECTION = ("status", "reason", "replication_state")

EVENT_TYPES: dict[str, EventType] = {t.name: t for t in (
    EventType("instance.provisioned", "info", "the instance is protected for the first time (provision done)",
              ("plan_id",)),
    EventType("instance.deprovisioned", "info", "everything the instance made is removed", ("plan_id",)),
    EventType("instance.not_protected", "critical",
              "the RPO sampler saw the instance stop being protected: degraded (RPO over target, secondary not "
              "consistent) or not protected (replication stopped, failed over)", _PROTECTION),
    EventType("instance.protected", "info", "the RPO sampler saw the instance protected again (or rehearsing)",
              _PROTECTION),
    EventType("replication.state_changed", "warning", "the RPO sampler saw the replication group's state change",
              ("from", "to", "consistency_group")),
    EventType("rpo.breached", "warning", "the achieved RPO, while replication copies, exceeds the instance's target",
              _RPO),
    EventType("rpo.recovered", "info", "the achieved RPO is within target again after a breach", _RPO),
    EventType("rehearsal.started", "info", "a rehearsal (test_failover or rehearsal) started, on request or on "
              "schedule", ("operation_id", "action", "scheduled")),
    EventType("rehearsal.passed", "info", "a rehearsal verified its VMs and volumes within the RTO target (or the "
              "plan has none)", _REHEARSAL),
    EventType("rehearsal.failed", "critical", "a rehearsal failed: a step failed (what it created is cleaned up), "
              "it was abandoned or timed out, or its measured RTO missed the target", (*_REHEARSAL, "reason")),
    EventType("rehearsal.skipped", "warning",
              "a scheduled rehearsal did not start: the instance is busy, disabled or failed over",
              ("reason", "detail", "due_at", "next_due_at")),
    EventType("failover.started", "warning", "a failover to the secondary site started", ("mode",)),
    EventType("failover.finished", "warning", "a failover finished (outcome: succeeded or failed)",
              ("mode", "outcome", "reason")),
    EventType("failback.started", "info", "a failback to the primary site started", ("mode",)),
    EventType("failback.finished", "info", "a failback finished (outcome: succeeded or failed)",
              ("mode", "outcome", "reason")),
    EventType("step.failed", "warning", "a step of an operation failed permanently (or ran out of time)",
              ("action", "operation_type", "dr_action", "reason")),
    EventType("key.rotated", "info", "the instance's root key got a new version (simulated Key Protect's "
              "rotation policy)", ("key_id", "version_id", "rotation_interval_months", "by")),
    EventType("binding.issued", "info", "credentials were issued to a binding", ("purpose",)),
    EventType("binding.revoked", "info", "a binding's credentials and access were revoked", ("purpose",)),
    EventType("binding.rotated", "info", "a successor binding (OSB 2.17 rotation) got fresh credentials on its "
              "predecessor's grants; both stay valid until each is unbound", ("purpose", "predecessor_binding_id")),
)}


def severity_of(name: str) -> str:
    return EVENT_TYPES[name].severity
