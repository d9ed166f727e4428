"""The COS export's lag, read from the database at scrape time (only when COS is configured): records not yet
exported and the age of the oldest of them per stream, the last successful export, the snapshots due."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, or_, select

from broker.evidence.cos import CosConfig
from broker.evidence.streams import STREAMS
from broker.store.tables import export_cursors, instance_snapshots


def evidence_families(runtime: Any) -> Iterator[GaugeMetricFamily]:
    try:
        configured = CosConfig.from_env(runtime.settings.evidence_env) is not None
    except SystemExit:
        configured = False
    if not configured:
        return
    now = runtime.service.clock()
    pending = GaugeMetricFamily("drbroker_cos_export_pending_records",
                                "Records not yet exported to COS, by stream (events, audit)", labels=["stream"])
    oldest = GaugeMetricFamily("drbroker_cos_export_lag_seconds",
                               "Seconds since the oldest record not yet exported to COS was written (0: none)",
                               labels=["stream"])
    last = GaugeMetricFamily("drbroker_cos_export_last_success_timestamp_seconds",
                             "When the stream's last batch reached COS (0: never)", labels=["stream"])
    failing = GaugeMetricFamily("drbroker_cos_export_failing",
                                "1 when the stream's last export attempt failed", labels=["stream"])
    with runtime.store.engine.connect() as conn:
        rows = {r.name: r for r in conn.execute(select(export_cursors))}
        for stream in STREAMS:
            row = rows.get(stream.name)
            done = int(row.last_seq) if row is not None else 0
            head = stream.head(conn)
            at = stream.oldest_at(conn, done)
            pending.add_metric([stream.folder], max(0, head - done))
            oldest.add_metric([stream.folder], max(0.0, now - at) if at is not None else 0.0)
            last.add_metric([stream.folder], float(row.last_export_at or 0) if row is not None else 0.0)
            failing.add_metric([stream.folder], 1.0 if row is not None and row.last_error else 0.0)
        s = instance_snapshots.c
        due = conn.execute(select(func.count()).where(or_(s.exported_changed_at.is_(None),
                                                          s.exported_changed_at < s.changed_at))).scalar()
    yield pending
    yield oldest
    yield last
    yield failing
    yield GaugeMetricFamily("drbroker_cos_snapshots_due", "Instances whose configuration snapshot is not yet in COS",
                            value=float(due or 0))
