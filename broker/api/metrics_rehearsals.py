"""Per-instance gauges of scheduled rehearsals, read at scrape time from ``rehearsal_schedules``.

For each instance with a schedule: when its next rehearsal is due (absent while the schedule is paused), whether
its last rehearsal passed (1) or failed (0; absent before the first one), and the RTO that last rehearsal
measured (absent when it failed). Labels: ``instance_id`` and ``plan``, like ``broker.api.metrics_dr``; three
series per instance at most (``SERIES_PER_INSTANCE``, counted in the bound of docs/operations.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import select

from broker.domain.models import InstanceState
from broker.rehearsals import rows
from broker.store.tables import instances

_LABELS = ["instance_id", "plan"]
_FAMILIES = (
    ("rehearsal_next_timestamp_seconds", "When the next scheduled rehearsal is due (absent: schedule paused)"),
    ("rehearsal_last_passed", "1 when the last rehearsal (scheduled or test_failover) passed, 0 when it failed "
                              "(absent: none since the schedule was set)"),
    ("rehearsal_last_rto_seconds", "The RTO the last rehearsal measured (absent: it failed, or none yet)"),
)
SERIES_PER_INSTANCE = len(_FAMILIES)


def rehearsal_families(runtime: Any) -> Iterator[GaugeMetricFamily]:
    families = {name: GaugeMetricFamily(f"drbroker_instance_{name}", text, labels=_LABELS) for name, text in _FAMILIES}
    with runtime.store.read() as tx:
        schedules = rows.all_rows(tx.conn)
        # Only the columns needed (the parameters are sealed: opening them all again would double the scrape).
        live = {r.id: r for r in tx.conn.execute(
            select(instances.c.id, instances.c.plan_id, instances.c.dr_state).where(
                instances.c.state != InstanceState.GONE.value))} if schedules else {}
    for row in schedules:
        inst = live.get(row["instance_id"])
        if inst is None:
            continue
        plan = runtime.catalog.plan(inst.plan_id)
        labels = [inst.id, plan.name if plan else inst.plan_id]
        dr_state = json.loads(inst.dr_state) if isinstance(inst.dr_state, str) else (inst.dr_state or {})
        if row["enabled"]:
            families["rehearsal_next_timestamp_seconds"].add_metric(labels, float(row["next_due_at"]))
        outcome = row["last_outcome"]
        if outcome in ("passed", "failed"):
            families["rehearsal_last_passed"].add_metric(labels, 1.0 if outcome == "passed" else 0.0)
        rto = (dr_state or {}).get("last_rehearsal_rto_seconds")
        if outcome == "passed" and rto is not None:
            families["rehearsal_last_rto_seconds"].add_metric(labels, float(rto))
    yield from families.values()
