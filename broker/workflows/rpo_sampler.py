"""Records each ready instance's achieved RPO every few minutes, so the dashboard can show it over time.

One sampler per process; samples are keyed by (instance, time bucket), so several processes sampling the same
bucket write one row (the duplicate insert is ignored). Old samples are pruned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from broker.domain.models import InstanceState
from broker.domain.protocols import Orchestrator
from broker.store.repository import Store
from broker.store.tables import instances, rpo_samples

log = logging.getLogger(__name__)


class RpoSampler:
    def __init__(self, store: Store, orchestrator: Orchestrator, *, interval: float = 60.0,
                 keep_seconds: float = 7 * 86400, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.orchestrator = orchestrator
        self.interval = max(1.0, interval)
        self.keep_seconds = keep_seconds
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="drbroker-rpo-sampler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:
                log.exception("RPO sampling failed; trying again later")
            self._stop.wait(self.interval)

    def sample_once(self) -> int:
        """Record one sample per ready instance for the current time bucket; return how many were new."""
        now = self.clock()
        bucket = int(now // self.interval * self.interval)
        with self.store.engine.connect() as conn:
            ids = [r[0] for r in conn.execute(select(instances.c.id).where(
                instances.c.state == InstanceState.READY.value))]
        written = 0
        for iid in ids:
            status = self.orchestrator.replication_status(iid)
            if status is None:
                continue
            rpo = None if status.freeze_time is None else max(0.0, now - status.freeze_time)
            try:
                with self.store.engine.begin() as conn:
                    conn.execute(insert(rpo_samples).values(instance_id=iid, at=bucket, achieved_rpo_seconds=rpo,
                                                            replication_state=status.state))
                written += 1
            except IntegrityError:
                pass  # another process took this bucket
        with self.store.engine.begin() as conn:
            conn.execute(delete(rpo_samples).where(rpo_samples.c.at < now - self.keep_seconds))
        return written


def history(store: Store, instance_id: str, since: float) -> list[tuple[float, float | None, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(rpo_samples.c.at, rpo_samples.c.achieved_rpo_seconds,
                                   rpo_samples.c.replication_state)
                            .where(rpo_samples.c.instance_id == instance_id, rpo_samples.c.at >= since)
                            .order_by(rpo_samples.c.at))
        return [(r[0], r[1], r[2]) for r in rows]
