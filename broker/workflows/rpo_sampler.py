"""Records each ready instance's achieved RPO every few minutes, so the dashboard can show it over time.

One sampler per process; samples are keyed by (instance, time bucket), so several processes sampling the same
bucket write one row (the duplicate insert is ignored). Old samples are pruned.

A round costs a few statements per page of instances, not per instance: the ready instances are read a page at a
time (keyset, by id), the backend is asked for the page's statuses at once, and the page's samples are
inserted in one transaction. The same page read feeds the DR event log (``broker.events.observations``:
replication state changes, RPO breaches and recoveries, protection lost and regained), which writes only when
something changed since it last looked, with its events in one transaction. The sampler pauses briefly
between pages so that at start-up, when it runs at once over every instance, it does not hold the CPU (and
the SQLite writer lock) away from request threads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from broker.domain.models import Instance
from broker.domain.protocols import Orchestrator
from broker.events.observations import record_changes
from broker.store.db import is_sqlite
from broker.store.repository import Store
from broker.store.tables import rpo_samples
from broker.workflows.periodic import PeriodicJob

log = logging.getLogger(__name__)


class RpoSampler(PeriodicJob):
    thread_name = "drbroker-rpo-sampler"
    what = "RPO sampling"

    def __init__(self, store: Store, orchestrator: Orchestrator, *, interval: float = 60.0,
                 keep_seconds: float = 7 * 86400, clock: Callable[[], float] = time.time,
                 page_size: int = 500, page_pause: float = 0.01) -> None:
        super().__init__(max(1.0, interval))
        self.store = store
        self.orchestrator = orchestrator
        self.keep_seconds = keep_seconds
        self.clock = clock
        self.page_size = max(1, page_size)
        self.page_pause = max(0.0, page_pause)
        self.events_written = 0  # DR events recorded by this sampler since it was made

    def run_once(self) -> int:
        return self.sample_once()

    def sample_once(self) -> int:
        """Record one sample per ready instance for the current time bucket; return how many were new.

        Stops after the current page when the sampler is stopped; the pages already written stay.
        """
        now = self.clock()
        bucket = int(now // self.interval * self.interval)
        written = 0
        after: str | None = None
        while True:
            page = self._ready_page(after)
            if not page:
                break
            ids = [inst.id for inst in page]
            statuses = self.orchestrator.replication_statuses(ids)
            rows = []
            for iid in ids:
                status = statuses.get(iid)
                if status is None:
                    continue  # no replication group (yet): nothing to sample
                rpo = None if status.freeze_time is None else max(0.0, now - status.freeze_time)
                rows.append(dict(instance_id=iid, at=bucket, achieved_rpo_seconds=rpo,
                                 replication_state=status.state))
            written += self._insert(rows)
            self.events_written += record_changes(self.store, page, statuses, now)
            after = ids[-1]
            if len(ids) < self.page_size or self.pause(self.page_pause):
                break
        with self.store.write() as tx:
            tx.conn.execute(delete(rpo_samples).where(rpo_samples.c.at < now - self.keep_seconds))
        return written

    def _ready_page(self, after: str | None) -> list[Instance]:
        with self.store.read(snapshot=False) as tx:
            return tx.ready_instances(after, self.page_size)

    def _insert(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert a page's samples in one statement; a bucket another process sampled first is skipped."""
        if not rows:
            return 0
        engine = self.store.engine
        dialect_insert = sqlite.insert if is_sqlite(engine) else postgresql.insert
        # One multi-row INSERT. ON CONFLICT DO NOTHING skips a row another process inserted first (and keeps
        # the rest of the page); RETURNING names the rows really inserted, which rowcount does not do on every
        # driver.
        stmt = (dialect_insert(rpo_samples).values(list(rows))
                .on_conflict_do_nothing(index_elements=[rpo_samples.c.instance_id, rpo_samples.c.at])
                .returning(rpo_samples.c.instance_id))
        with self.store.write() as tx:
            return len(tx.conn.execute(stmt).all())


def history(store: Store, instance_id: str, since: float) -> list[tuple[float, float | None, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(rpo_samples.c.at, rpo_samples.c.achieved_rpo_seconds,
                                   rpo_samples.c.replication_state)
                            .where(rpo_samples.c.instance_id == instance_id, rpo_samples.c.at >= since)
                            .order_by(rpo_samples.c.at))
        return [(r[0], r[1], r[2]) for r in rows]
