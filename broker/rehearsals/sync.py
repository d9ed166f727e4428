"""Keeps each instance's ``rehearsal_schedules`` row in step with its parameters: an engine listener, so the row
changes in the transaction that records the provision, update or deprovision (never ahead of it, never lost).

- provision or parameter update succeeded: the effective schedule (``spec.effective``) is upserted, or the row
  deleted when the instance has none any more;
- deprovision succeeded: the row is deleted;
- a rehearsal or test failover finished: its outcome (``passed``/``failed``) is noted on the row, so the
  metrics can say how the last one went.
"""

from __future__ import annotations

import logging
from typing import Any

from broker.domain.models import Instance, Operation, OperationType
from broker.rehearsals import rows
from broker.rehearsals.spec import effective
from broker.workflows.definitions import REHEARSAL_ACTIONS

log = logging.getLogger(__name__)


def _dr_action(op: Operation) -> str | None:
    action = op.payload.get("dr_action")
    return str(action.get("type")) if isinstance(action, dict) else None


class ScheduleSync:
    def succeeded(self, tx: Any, op: Operation, before: Instance | None, after: Instance | None,
                  outputs: Any, now: float) -> None:
        action = _dr_action(op)
        if action is not None:
            if action in REHEARSAL_ACTIONS:
                rows.set_outcome(tx.conn, op.instance_id, "passed", now)
            return
        if op.type == OperationType.DEPROVISION:
            rows.remove(tx.conn, op.instance_id)
        elif op.type in (OperationType.PROVISION, OperationType.UPDATE) and after is not None:
            spec = effective(after.parameters)
            if spec is None:
                rows.remove(tx.conn, op.instance_id)
                return
            try:
                rows.upsert(tx.conn, op.instance_id, spec, now)
            except (ValueError, KeyError) as exc:
                # Validation refuses such a schedule before any operation exists; should one slip through (a
                # time zone gone from tzdata), the operation's success must still be recorded.
                log.warning("instance %s: rehearsal schedule not kept: %s", op.instance_id, exc)

    def failed(self, tx: Any, op: Operation, reason: str, failed_action: str | None, now: float) -> None:
        if _dr_action(op) in REHEARSAL_ACTIONS:
            rows.set_outcome(tx.conn, op.instance_id, "failed", now)


def make_listener(runtime: Any) -> ScheduleSync:
    return ScheduleSync()
