"""A DR report as plain data: what ``broker.reports.build`` computes and every renderer (JSON, CSV, HTML) shows.

Times are epoch seconds here; the renderers write them as ISO 8601 UTC. Nothing in a report is a secret: it
is built from states, timestamps, figures and operation descriptions, never from instance parameters other
than the RPO target and the rehearsal schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.reports.rpo import RpoCompliance

SCHEMA = "drbroker.report/1"


@dataclass(frozen=True)
class Period:
    since: float
    until: float
    # RPO samples older than the retention are pruned: the RPO figures cover from here (>= since).
    rpo_covered_since: float


@dataclass(frozen=True)
class Rehearsal:
    at: float
    operation_id: str | None
    scheduled: bool  # started by the rehearsal schedule (else on request)
    outcome: str  # passed | failed | skipped | running
    rto_seconds: float | None
    rto_target_seconds: float | None
    rto_met: bool | None
    detail: str  # why it failed or was skipped; the operation's description otherwise


@dataclass(frozen=True)
class Move:
    type: str  # failover | failback
    mode: str | None  # planned | unplanned (failover)
    started_at: float
    finished_at: float | None
    duration_seconds: float | None
    outcome: str  # succeeded | failed | running
    operation_id: str | None


@dataclass(frozen=True)
class Failure:
    at: float
    operation_id: str | None
    operation: str  # provision, update, test_failover, failover, ... (the DR action for an update)
    step: str | None  # the backend action that failed, when known
    reason: str


@dataclass(frozen=True)
class Risk:
    code: str
    severity: str  # critical | warning
    summary: str
    since: float | None = None


@dataclass(frozen=True)
class InstanceReport:
    instance_id: str
    account_id: str | None
    plan: str
    state: str
    protection_status: str
    protection_reason: str
    rpo: RpoCompliance
    rto_target_seconds: float | None
    last_rehearsal_at: float | None
    rehearsals: list[Rehearsal] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    risks: list[Risk] = field(default_factory=list)

    def rehearsal_count(self, outcome: str) -> int:
        return sum(1 for r in self.rehearsals if r.outcome == outcome)

    @property
    def rto_missed(self) -> int:
        return sum(1 for r in self.rehearsals if r.rto_met is False)


@dataclass(frozen=True)
class Totals:
    instances: int
    samples: int
    within_target: int
    breaches: int
    breach_minutes: float
    share_within_target: float | None
    worst_breach_instance: str | None
    worst_breach_seconds: float | None
    worst_breach_at: float | None
    rehearsals: int
    rehearsals_passed: int
    rehearsals_failed: int
    rehearsals_skipped: int
    rto_missed: int
    moves: int
    failures: int
    open_risks: int
    instances_with_risks: int


@dataclass(frozen=True)
class Report:
    generated_at: float
    scope: str  # instance | account | all
    scope_value: str | None
    period: Period
    sample_interval_seconds: float
    sample_retention_seconds: float
    instances: list[InstanceReport]
    totals: Totals
