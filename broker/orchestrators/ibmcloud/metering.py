"""Hourly usage records for paid plans, through IBM's usage metering API (``UsageMeteringV4``).

For each instance of a plan with ``free: false`` that is ready and enabled (a disabled instance is not
billed), every finished hour since it was created (at most ``BACKFILL_HOURS`` back) gets one record:
``instance_hours`` = 1 and ``protected_volume_hours`` = the number of protected volumes.

Idempotent per hour: a row in ``metering_records`` (instance, hour; read and written only through
``broker.store.metering``) is claimed before the record is sent (state ``sending`` with a lease, so two
processes never send the same hour at once, and a process that died mid-send is taken over when the lease
ends), then marked ``sent``. IBM's metering service also answers 409
for a record it already accepted, which counts as sent. Transient errors are retried (``RetryPolicy``),
and whatever still fails stays ``sending`` until its lease ends and the next run tries again; a record IBM
rejects (4xx) is ``rejected`` with its error. The IBM transaction id of the accepted call is kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ibm_cloud_sdk_core.authenticators import Authenticator
from ibm_platform_services import UsageMeteringV4
from ibm_platform_services.usage_metering_v4 import MeasureAndQuantity, ResourceInstanceUsage

from broker.domain.catalog import Catalog
from broker.domain.errors import PermanentBackendError, TransientBackendError
from broker.domain.models import Instance, InstanceState
from broker.orchestrators.ibmcloud.errors import call, collecting
from broker.store import metering as metering_rows
from broker.workflows.periodic import PeriodicJob
from broker.workflows.retry import RetryPolicy

log = logging.getLogger(__name__)

BACKFILL_HOURS = 24
LEASE_SECONDS = 300.0


@dataclass(frozen=True)
class Report:
    instance_id: str
    hour_start: int
    state: str
    detail: str = ""


class UsageMeter(PeriodicJob):
    thread_name = "drbroker-metering"
    what = "usage metering run"

    def __init__(self, store: Any, catalog: Catalog, authenticator: Authenticator, url: str, resource_id: str, *,
                 region: str = "us-south", interval: float = 300.0, hour_seconds: int = 3600,
                 retry: RetryPolicy | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__(interval)
        self.store = store
        self.catalog = catalog
        self.authenticator = authenticator
        self.api = UsageMeteringV4(authenticator=authenticator)
        self.api.set_service_url(url)
        self.resource_id = resource_id
        self.region = region
        self.hour = hour_seconds
        self.retry = retry or RetryPolicy(attempts=4, initial=0.5, maximum=30.0)
        self.clock = clock

    def start(self) -> bool:
        started = super().start()
        if started:
            log.info("usage metering: every %gs, records of %ds to %s", self.interval, self.hour,
                     self.api.service_url)
        return started

    # one run --------------------------------------------------------------------------------------
    def metered(self) -> list[Instance]:
        with self.store.read() as tx:
            instances = tx.list_instances()
        out = []
        for inst in instances:
            plan = self.catalog.plan(inst.plan_id)
            # OSB: a plan is free unless it says "free": false
            paid = plan is not None and plan.raw.get("free", True) is False
            if paid and inst.state == InstanceState.READY and inst.enabled:
                out.append(inst)
        return out

    def due_hours(self, inst: Instance, now: float) -> list[int]:
        last_done = int(now // self.hour) * self.hour - self.hour
        first = max(int(inst.created_at // self.hour) * self.hour, last_done - (BACKFILL_HOURS - 1) * self.hour)
        return list(range(first, last_done + 1, self.hour))

    def run_once(self, now: float | None = None) -> list[Report]:
        now = self.clock() if now is None else now
        reports = []
        for inst in self.metered():
            for hour in self.due_hours(inst, now):
                if self._claim(inst, hour, now):
                    reports.append(self._send(inst, hour))
        return reports

    def _resource_instance_id(self, inst: Instance) -> str:
        return str(inst.context.get("crn") or inst.id)

    def _claim(self, inst: Instance, hour: int, now: float) -> bool:
        with self.store.write() as tx:
            return metering_rows.claim_hour(tx, instance_id=inst.id, hour_start=hour, plan_id=inst.plan_id,
                                            resource_instance_id=self._resource_instance_id(inst), now=now,
                                            lease_until=now + LEASE_SECONDS)

    def _record(self, inst: Instance, hour: int) -> ResourceInstanceUsage:
        volumes = len(inst.parameters.get("protected_volumes") or [])
        rid = self._resource_instance_id(inst)
        return ResourceInstanceUsage(
            resource_instance_id=rid, plan_id=inst.plan_id, start=hour * 1000, end=(hour + self.hour) * 1000,
            measured_usage=[MeasureAndQuantity("instance_hours", 1),
                            MeasureAndQuantity("protected_volume_hours", volumes)],
            region=None if rid.startswith("crn:") else self.region)

    def _send(self, inst: Instance, hour: int) -> Report:
        record = self._record(inst, hour)
        attempts = 0

        def send() -> tuple[dict[str, Any], str | None]:
            nonlocal attempts
            attempts += 1
            with collecting() as calls:
                resp = call(f"Usage metering POST /v4/metering/resources/{self.resource_id}/usage",
                            lambda: self.api.report_resource_usage(self.resource_id, [record]),
                            authenticator=self.authenticator)
            assert resp is not None
            result = (resp.get_result() or {}).get("resources") or [{}]
            status = int(result[0].get("status") or 0)
            tid = calls[-1]["transaction_id"] if calls else None
            if status >= 500:
                raise TransientBackendError(f"usage record: {status} {result[0].get('message', '')}")
            return result[0], tid

        key = (inst.id, hour)
        try:
            outcome, tid = self.retry.call(send)
        except TransientBackendError as exc:
            self._update(key, attempts, error=exc.description)  # stays "sending": retried when the lease ends
            log.warning("usage record %s @%d not sent yet: %s", inst.id, hour, exc.description)
            return Report(inst.id, hour, "retrying", exc.description)
        except PermanentBackendError as exc:
            self._update(key, attempts, state="rejected", error=exc.description)
            return Report(inst.id, hour, "rejected", exc.description)
        status = int(outcome.get("status") or 0)
        if status in (201, 202, 409):  # 409: IBM already holds this record (an earlier send was accepted)
            self._update(key, attempts, state="sent", transaction_id=tid, sent_at=self.clock(),
                         error=None if status != 409 else "duplicate: already accepted")
            return Report(inst.id, hour, "sent", str(status))
        detail = f"{status} {outcome.get('code', '')}: {outcome.get('message', '')}"
        self._update(key, attempts, state="rejected", error=detail, transaction_id=tid)
        return Report(inst.id, hour, "rejected", detail)

    def _update(self, key: tuple[str, int], attempts: int, **values: Any) -> None:
        with self.store.write() as tx:
            metering_rows.update_record(tx, *key, attempts=attempts, now=self.clock(), **values)

    def records(self) -> list[dict[str, Any]]:
        with self.store.read() as tx:
            return metering_rows.list_records(tx)
