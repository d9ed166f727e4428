"""The rehearsal scheduler: a ``PeriodicJob`` ("rehearsals") in every serving process, and what
``drbroker jobs run-due`` runs once.

Each run claims the due schedule rows with a lease (``rows.claim``) and fires each in one transaction, guarded
by that lease: the rehearsal operation is queued through the service layer (``BrokerService.scheduled_rehearsal``:
the OSB concurrency rules hold, a busy, disabled, failed-over or test-active instance is skipped with a
``rehearsal.skipped`` event), and ``next_due_at`` moves to the first slot after *now*, so a run missed during
downtime runs once, not once per missed slot. A crash before the commit leaves neither the operation nor the
move; the lease expires and the next run fires it. The operation itself is run by any broker's worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from broker.config import env_number
from broker.domain.models import InstanceState, Operation
from broker.events.log import DrEvent, record
from broker.rehearsals import rows
from broker.rehearsals.spec import effective, fire_time, next_due
from broker.security.audit import AuditEvent
from broker.services.requests import Caller
from broker.store.tables import instances, rehearsal_schedules
from broker.workflows.periodic import PeriodicJob
from broker.workflows.worker import new_owner_id

log = logging.getLogger(__name__)

PRINCIPAL = "drbroker:scheduler"
CHECK_VARIABLE = "DRBROKER_REHEARSAL_CHECK_SECONDS"
DEFAULT_CHECK_SECONDS = 30.0
# Rows fired per run at most: the rest wait for the next run (seconds later), so one run stays short.
MAX_PER_RUN = 200


def check_seconds(env: Mapping[str, str]) -> float:
    """``DRBROKER_REHEARSAL_CHECK_SECONDS``: how often each process looks for due rehearsals."""
    return env_number(env, CHECK_VARIABLE, DEFAULT_CHECK_SECONDS, low=0.05, high=86400)


class RehearsalScheduler(PeriodicJob):
    job_name = "rehearsals"
    thread_name = "drbroker-rehearsals"
    what = "fires scheduled rehearsals when due"

    def __init__(self, store: Any, service: Any, *, interval: float, lease_seconds: float,
                 clock: Callable[[], float], audit: Any = None, wake: Callable[[], None] | None = None) -> None:
        super().__init__(interval)
        self.store = store
        self.service = service
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.audit = audit
        self.wake = wake
        self.owner = new_owner_id()
        self.caller = Caller(principal=PRINCIPAL)
        self._backfilled = False

    def run_once(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"fired": 0, "skipped": 0, "deferred": 0, "lost": 0}
        if not self._backfilled:
            summary["backfilled"] = self.backfill()
            self._backfilled = True
        while summary["fired"] + summary["skipped"] + summary["deferred"] < MAX_PER_RUN and not self.stopping:
            now = self.clock()
            with self.store.write() as tx:
                claimed = rows.claim(tx.conn, self.owner, now, self.lease_seconds)
            if not claimed:
                break
            for instance_id in claimed:
                summary[self.fire(instance_id)] += 1
        return summary

    def fire(self, instance_id: str) -> str:
        """Fire (or skip, or defer to its window) one claimed row; returns which of them, or "lost"."""
        now = self.clock()
        fired: Operation | None = None
        with self.store.write() as tx:
            row = rows.held(tx.conn, instance_id, self.owner, now)
            if row is None:
                return "lost"  # our lease ran out and another process took the row over
            spec = rows.spec_of(row)
            due_at = float(row["next_due_at"])
            opens = fire_time(spec, now)
            if opens > now:
                # Due, but outside the window: it runs at the window's next opening.
                rows.finish(tx.conn, instance_id, self.owner, next_due_at=opens, updated_at=now)
                return "deferred"
            following = next_due(spec, now)
            outcome = self.service.scheduled_rehearsal(tx, instance_id, self.caller, due_at)
            if isinstance(outcome, Operation):
                fired = outcome
                rows.finish(tx.conn, instance_id, self.owner, next_due_at=following, last_fired_at=now,
                            last_outcome="started", last_operation_id=outcome.id, updated_at=now)
            else:
                reason, why = outcome
                if reason == "gone":
                    rows.remove(tx.conn, instance_id)
                    return "skipped"
                record(tx.conn, DrEvent("rehearsal.skipped", instance_id, f"scheduled rehearsal skipped: {why}",
                                        {"reason": reason, "detail": why, "due_at": due_at,
                                         "next_due_at": following}), at=now)
                rows.finish(tx.conn, instance_id, self.owner, next_due_at=following,
                            last_outcome=f"skipped:{reason}", updated_at=now)
        if fired is None:
            log.info("scheduled rehearsal of %s skipped (%s); next due at %.0f", instance_id, reason, following)
            return "skipped"
        log.info("scheduled rehearsal of %s queued as operation %s", instance_id, fired.id)
        if self.wake is not None:
            self.wake()
        if self.audit is not None:
            # After the commit: the audit trail writes in a transaction of its own (its chain lock).
            try:
                self.audit.append(AuditEvent(action="rehearsal:scheduled", principal=PRINCIPAL,
                                             instance_id=instance_id, operation_id=fired.id, status=202,
                                             outcome="accepted", detail={"due_at": due_at}))
            except Exception:
                log.exception("audit record of the scheduled rehearsal of %s failed", instance_id)
        return "fired"

    def backfill(self) -> int:
        """Rows for ready instances whose parameters ask for rehearsals but that have none yet (instances
        provisioned before schedules were kept: dr_test_schedule); once per process start."""
        made = 0
        with self.store.read() as tx:
            have = set(tx.conn.execute(select(rehearsal_schedules.c.instance_id)).scalars())
            ids = [i for i in tx.conn.execute(select(instances.c.id).where(
                instances.c.state == InstanceState.READY.value)).scalars() if i not in have]
        for instance_id in ids:
            with self.store.read() as tx:
                inst = tx.get_instance(instance_id)
            spec = effective(inst.parameters) if inst is not None else None
            if spec is None:
                continue
            try:
                with self.store.write() as tx:
                    if rows.get(tx.conn, instance_id) is None:
                        rows.upsert(tx.conn, instance_id, spec, self.clock())
                        made += 1
            except IntegrityError:
                pass  # another process made it meanwhile
        return made


def make_job(runtime: Any) -> RehearsalScheduler:
    settings = runtime.settings
    return RehearsalScheduler(runtime.store, runtime.service, interval=check_seconds(settings.evidence_env),
                              lease_seconds=max(5.0, float(settings.lease_seconds)), clock=runtime.service.clock,
                              audit=runtime.audit, wake=runtime.worker.wake)
