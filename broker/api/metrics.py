"""``GET /metrics`` in Prometheus format (prometheus-client), safe with several gunicorn workers.

Counters and histograms that each process updates (requests, step durations, retries, backend errors) use
prometheus-client's multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set (``drbroker serve`` sets it);
what lives in the database (operations by type and state, the queue, the oldest operation in progress, each
instance's DR state: ``broker.api.metrics_dr``) is read at scrape time, once, by whichever process answers, and
``process_*`` cover every process of the broker (``broker.api.metrics_process``). The metric list and the
shipped alert rules: docs/operations.md (Metrics, Alerts).
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
    GCCollector,
    Histogram,
    PlatformCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from broker.api.metrics_dr import instance_families
from broker.api.metrics_evidence import evidence_families
from broker.api.metrics_notifications import NotificationsCollector
from broker.api.metrics_process import BrokerProcessCollector
from broker.api.metrics_rehearsals import rehearsal_families
from broker.domain.models import OperationState, OperationType
from broker.store.tables import operations

bp = Blueprint("metrics", __name__)
# A *_created series per counter and histogram only outside multiprocess mode (prometheus-client cannot merge
# them across processes): off, so that one process and drbroker serve expose the same series.
disable_created_metrics()

REQUESTS = Counter("drbroker_http_requests_total", "HTTP requests by endpoint, method and status",
                   ["endpoint", "method", "status"])
LATENCY = Histogram("drbroker_http_request_seconds", "HTTP request latency by endpoint", ["endpoint"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
STEP_SECONDS = Histogram("drbroker_step_seconds", "Workflow step duration by action", ["action", "outcome"],
                         buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600))
STEP_RETRIES = Counter("drbroker_step_retries_total", "Transient backend errors retried, by action", ["action"])
# kind "transient": an error the step retried; "failed": the step ended without success (its operation failed,
# or it waits for a person: the engine reports both alike).
BACKEND_ERRORS = Counter("drbroker_backend_errors_total", "Errors of the DR backend in workflow steps, by action "
                         "and kind (transient: retried; failed: the step gave up)", ["action", "kind"])
BACKEND_ERROR_KINDS = ("transient", "failed")
# Labels are bounded: status is a 4xx, method one of PUT/PATCH/DELETE/POST, route a URL rule of the app or
# "unrouted" (never the path a client sent).
REFUSED = Counter("drbroker_refused_requests_total",
                  "Mutating requests refused before or at authentication (broker.api.audit_refusals), by status, "
                  "method and route", ["status", "method", "route"])
AUDIT_SUPPRESSED = Counter("drbroker_audit_refused_suppressed_total",
                           "Refused requests counted in a refused_requests_suppressed audit record instead of "
                           "a record of their own")
_METHODS = frozenset({"PUT", "PATCH", "DELETE", "POST"})


class MetricsObserver:
    """What the workflow engine reports as it runs steps."""

    def step_finished(self, action: str, seconds: float, ok: bool, *, parked: bool = False) -> None:
        STEP_SECONDS.labels(action=action, outcome="parked" if parked else "ok" if ok else "failed").observe(seconds)
        if not ok and not parked:
            BACKEND_ERRORS.labels(action=action, kind="failed").inc()

    def step_retried(self, action: str) -> None:
        STEP_RETRIES.labels(action=action).inc()
        BACKEND_ERRORS.labels(action=action, kind="transient").inc()


_initialised: set[int] = set()


def _zero_backend_errors(actions: frozenset[str]) -> None:
    """Every (action, kind) at 0 from the first scrape of each process on: a counter that first appears at 3
    shows no increase to ``increase()``, and the first errors would raise no alert."""
    if os.getpid() in _initialised:
        return
    for action in sorted(actions):
        for kind in BACKEND_ERROR_KINDS:
            BACKEND_ERRORS.labels(action=action, kind=kind)
    _initialised.add(os.getpid())


def refused(status: int, method: str, route: str) -> None:
    REFUSED.labels(status=str(status) if 400 <= status < 500 else "other",
                   method=method if method in _METHODS else "other", route=route[:128]).inc()


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
        now = self.runtime.service.clock()
        engine = self.runtime.store.engine
        by_state = GaugeMetricFamily("drbroker_operations", "Operations by type and state", labels=["type", "state"])
        with engine.connect() as conn:
            for op_type, state, count in conn.execute(
                    select(operations.c.type, operations.c.state, func.count()).group_by(operations.c.type,
                                                                                          operations.c.state)):
                by_state.add_metric([op_type, state], count)
            depth, oldest = conn.execute(select(func.count(), func.min(operations.c.created_at)).where(
                operations.c.state == OperationState.QUEUED.value)).one()
            running = dict(conn.execute(select(operations.c.type, func.min(operations.c.created_at)).where(
                operations.c.state == OperationState.IN_PROGRESS.value).group_by(operations.c.type)).all())
        yield by_state
        yield GaugeMetricFamily("drbroker_queue_depth", "Operations waiting for a worker", value=depth)
        yield GaugeMetricFamily("drbroker_queue_oldest_seconds", "Age of the oldest waiting operation",
                                value=(now - oldest) if oldest else 0.0)
        stuck = GaugeMetricFamily("drbroker_operation_oldest_in_progress_seconds",
                                  "Seconds since the oldest operation in progress was accepted, by type (0: none)",
                                  labels=["type"])
        for op_type in OperationType:
            accepted = running.get(op_type.value)
            stuck.add_metric([op_type.value], max(0.0, now - accepted) if accepted else 0.0)
        yield stuck
        yield from instance_families(self.runtime)
        yield from evidence_families(self.runtime)
        yield from rehearsal_families(self.runtime)


_PLATFORM = PlatformCollector(registry=None)


@bp.before_request
def _before() -> None:
    runtime = current_app.extensions["drbroker"]
    if not getattr(runtime.settings, "metrics_public", False):
        runtime.authenticate()


@bp.get("/metrics")
def metrics() -> Response:
    runtime = current_app.extensions["drbroker"]
    _zero_backend_errors(runtime.orchestrator.actions())
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        for collector in (REQUESTS, LATENCY, STEP_SECONDS, STEP_RETRIES, BACKEND_ERRORS, REFUSED, AUDIT_SUPPRESSED):
            registry.register(collector)
        # One process's garbage collector: meaningless summed over workers, so only outside multiprocess mode.
        GCCollector(registry=registry)
    registry.register(BrokerProcessCollector())
    registry.register(_PLATFORM)
    registry.register(StoreCollector(runtime))
    registry.register(NotificationsCollector(runtime))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
