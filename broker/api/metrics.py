"""``GET /metrics`` in Prometheus format (prometheus-client), safe with several gunicorn workers.

Counters and histograms that each process updates (requests, step durations, retries) use prometheus-client's
multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set (``drbroker serve`` sets it); what lives in the
database (operations by type and state, the queue, each instance's achieved RPO and last rehearsal) is read at
scrape time, once, by whichever process answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from broker.domain.models import InstanceState, OperationState
from broker.store.tables import instances, operations

bp = Blueprint("metrics", __name__)

REQUESTS = Counter("drbroker_http_requests_total", "HTTP requests by endpoint, method and status",
                   ["endpoint", "method", "status"])
LATENCY = Histogram("drbroker_http_request_seconds", "HTTP request latency by endpoint", ["endpoint"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
STEP_SECONDS = Histogram("drbroker_step_seconds", "Workflow step duration by action", ["action", "outcome"],
                         buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600))
STEP_RETRIES = Counter("drbroker_step_retries_total", "Transient backend errors retried, by action", ["action"])


class MetricsObserver:
    """What the workflow engine reports as it runs steps."""

    def step_finished(self, action: str, seconds: float, ok: bool) -> None:
        STEP_SECONDS.labels(action=action, outcome="ok" if ok else "failed").observe(seconds)

    def step_retried(self, action: str) -> None:
        STEP_RETRIES.labels(action=action).inc()


def before_request() -> None:
    g.metrics_started = time.perf_counter()


def after_request(response: Response) -> Response:
    started = g.get("metrics_started")
    if started is not None:
        endpoint = request.endpoint or "unknown"
        REQUESTS.labels(endpoint=endpoint, method=request.method, status=str(response.status_code)).inc()
        LATENCY.labels(endpoint=endpoint).observe(time.perf_counter() - started)
    return response


class StoreCollector(Collector):
    """Metrics that live in the database, computed at scrape time."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.time()
        engine = self.runtime.store.engine
        by_state = GaugeMetricFamily("drbroker_operations", "Operations by type and state", labels=["type", "state"])
        with engine.connect() as conn:
            for op_type, state, count in conn.execute(
                    select(operations.c.type, operations.c.state, func.count()).group_by(operations.c.type,
                                                                                          operations.c.state)):
                by_state.add_metric([op_type, state], count)
            depth, oldest = conn.execute(select(func.count(), func.min(operations.c.created_at)).where(
                operations.c.state == OperationState.QUEUED.value)).one()
            ready = list(conn.execute(select(instances.c.id).where(instances.c.state == InstanceState.READY.value)))
        yield by_state
        yield GaugeMetricFamily("drbroker_queue_depth", "Operations waiting for a worker", value=depth)
        yield GaugeMetricFamily("drbroker_queue_oldest_seconds", "Age of the oldest waiting operation",
                                value=(now - oldest) if oldest else 0.0)
        achieved = GaugeMetricFamily("drbroker_instance_achieved_rpo_seconds", "now - last consistent freeze time",
                                     labels=["instance_id", "plan"])
        target = GaugeMetricFamily("drbroker_instance_rpo_target_seconds", "The instance's RPO target",
                                   labels=["instance_id", "plan"])
        rehearsal = GaugeMetricFamily("drbroker_instance_last_rehearsal_age_seconds",
                                      "Seconds since the last successful test failover (absent: never)",
                                      labels=["instance_id", "plan"])
        with self.runtime.store.read() as tx:
            for (iid,) in ready:
                inst = tx.get_instance(iid)
                if inst is None:
                    continue
                plan = self.runtime.catalog.plan(inst.plan_id)
                labels = [iid, plan.name if plan else inst.plan_id]
                attrs = self.runtime.service.dr_attributes(inst)
                if attrs.get("achieved_rpo_seconds") is not None:
                    achieved.add_metric(labels, attrs["achieved_rpo_seconds"])
                if attrs.get("rpo_target_seconds"):
                    target.add_metric(labels, attrs["rpo_target_seconds"])
                last = (inst.dr_state or {}).get("last_rehearsal_at")
                if last:
                    rehearsal.add_metric(labels, now - last)
        yield achieved
        yield target
        yield rehearsal


@bp.before_request
def _before() -> None:
    runtime = current_app.extensions["drbroker"]
    if not getattr(runtime.settings, "metrics_public", False):
        runtime.authenticate()


@bp.get("/metrics")
def metrics() -> Response:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        for collector in (REQUESTS, LATENCY, STEP_SECONDS, STEP_RETRIES):
            registry.register(collector)
    registry.register(StoreCollector(current_app.extensions["drbroker"]))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
