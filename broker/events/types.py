"""Every DR event type the broker records: its severity and what it means. The one table of names;
docs/events.md shows it and ``tests/events/test_event_types.py`` holds the two to each other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventType:
    name: str
    severity: str  # info | warning | critical
    meaning: str


SEVERITIES = ("info", "warning", "critical")

EVENT_TYPES: dict[str, EventType] = {t.name: t for t in (
    EventType("instance.provisioned", "info", "the instance is protected for the first time (provision done)"),
    EventType("instance.deprovisioned", "info", "everything the instance made is removed"),
    EventType("instance.not_protected", "critical",
              "the instance stopped being protected (replication not copying, or the RPO target missed)"),
    EventType("instance.protected", "info", "the instance is protected again"),
    EventType("replication.state_changed", "warning", "the replication group's state changed"),
    EventType("rpo.breached", "warning", "the achieved RPO exceeds the instance's target"),
    EventType("rpo.recovered", "info", "the achieved RPO is within target again after a breach"),
    EventType("rehearsal.started", "info", "a rehearsal (test failover) started, on request or on schedule"),
    EventType("rehearsal.passed", "info", "a rehearsal verified its VMs and volumes; its RTO is measured"),
    EventType("rehearsal.failed", "critical", "a rehearsal failed; what it created is cleaned up"),
    EventType("rehearsal.skipped", "warning",
              "a scheduled rehearsal did not start: the instance is busy, disabled or failed over"),
    EventType("failover.started", "warning", "a failover to the secondary site started"),
    EventType("failover.finished", "warning", "a failover finished (outcome: succeeded or failed)"),
    EventType("failback.started", "info", "a failback to the primary site started"),
    EventType("failback.finished", "info", "a failback finished (outcome: succeeded or failed)"),
    EventType("step.failed", "warning", "a step of an operation failed permanently"),
    EventType("key.rotated", "info", "the instance's root key got a new version"),
    EventType("binding.issued", "info", "credentials were issued to a binding"),
    EventType("binding.revoked", "info", "a binding's credentials and access were revoked"),
)}


def severity_of(name: str) -> str:
    return EVENT_TYPES[name].severity
