"""The RPO sampler on both SQLite and PostgreSQL: a page of instances at a time, one backend read and one
insert per page, and one row per (instance, bucket) however many processes sample."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from broker.app import Runtime, build_runtime
from broker.domain.models import Instance, InstanceState
from broker.domain.protocols import ReplicationStatus, StepContext
from broker.store.tables import rpo_samples
from broker.workflows.rpo_sampler import RpoSampler, history
from tests.conftest import GRS_PARAMS, GRS_PLAN, SERVICE_ID, make_settings

NOW = time.time() + 3600.0  # the sampler's clock: an hour after the groups became consistent


class PageRecorder:
    """The runtime's orchestrator, recording each bulk read; a per-instance read fails the test."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.batches: list[list[str]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def replication_status(self, instance_id: str) -> ReplicationStatus | None:
        raise AssertionError(f"the sampler read {instance_id} on its own instead of with its page")

    def replication_statuses(self, instance_ids: Sequence[str]) -> dict[str, ReplicationStatus]:
        with self._lock:
            self.batches.append(list(instance_ids))
        return self.inner.replication_statuses(instance_ids)


@pytest.fixture
def rt(tmp_path: Path, db_url: str) -> Iterator[Runtime]:
    runtime = build_runtime(make_settings(tmp_path, database_url=db_url))
    yield runtime
    runtime.store.engine.dispose()


def _instance(rt: Runtime, iid: str, *, state: InstanceState = InstanceState.READY, replicated: bool = True,
              consistent: bool = True) -> None:
    """A stored instance and, when ``replicated``, its volume group in the simulated cloud."""
    now = time.time()
    with rt.store.write() as tx:
        tx.insert_instance(Instance(id=iid, service_id=SERVICE_ID, plan_id=GRS_PLAN, state=state,
                                    parameters=dict(GRS_PARAMS), context={}, organization_guid="o",
                                    space_guid="s", maintenance_version=None, dashboard_url=None,
                                    request_hash="h", enabled=True, last_active=None, created_at=now,
                                    updated_at=now))
    ctx = StepContext(operation_id=f"op-{iid}", operation_type="provision", instance_id=iid,
                      plan=rt.catalog.find_plan("grs-async"), parameters=dict(GRS_PARAMS))
    if replicated:
        rt.orchestrator.perform("create_replication_group", ctx)
    if replicated and consistent:
        rt.orchestrator.perform("wait_consistent_copying", ctx)


def _rows(rt: Runtime) -> dict[str, tuple[float, float | None, str]]:
    with rt.store.engine.connect() as conn:
        rows = conn.execute(select(rpo_samples.c.instance_id, rpo_samples.c.at, rpo_samples.c.achieved_rpo_seconds,
                                   rpo_samples.c.replication_state)).all()
    assert len(rows) == len({r[0] for r in rows}), rows  # one bucket sampled: one row per instance
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _sampler(rt: Runtime, orchestrator: Any = None, **kw: Any) -> RpoSampler:
    kw.setdefault("page_pause", 0.0)
    return RpoSampler(rt.store, orchestrator or rt.orchestrator, interval=60.0, clock=lambda: NOW, **kw)


@pytest.mark.parametrize("page_size", [3, 4])
def test_sampling_reads_ready_instances_a_page_at_a_time_in_id_order(rt: Runtime, page_size: int) -> None:
    ready = [f"inst-{n:02d}" for n in range(7)]
    for iid in ready:
        _instance(rt, iid)
    _instance(rt, "inst-03a", replicated=False)  # ready, but no replication group yet
    _instance(rt, "inst-04a", state=InstanceState.PROVISIONING)  # has a group, but is not ready
    _instance(rt, "inst-05a", state=InstanceState.GONE)
    recorder = PageRecorder(rt.orchestrator)

    assert _sampler(rt, recorder, page_size=page_size).sample_once() == len(ready)

    ids = sorted([*ready, "inst-03a"])
    assert recorder.batches == [ids[i:i + page_size] for i in range(0, len(ids), page_size)]
    rows = _rows(rt)
    assert sorted(rows) == ready  # neither the unreplicated nor the non-ready instances were sampled
    bucket = NOW // 60 * 60
    for iid in ready:
        freeze = rt.orchestrator.replication_status(iid).freeze_time
        at, rpo, state = rows[iid]
        assert (at, state) == (bucket, "consistent_copying")
        assert rpo == pytest.approx(NOW - freeze)
        assert history(rt.store, iid, since=0) == [(at, rpo, state)]


def test_a_group_not_yet_consistent_is_sampled_without_an_rpo(rt: Runtime) -> None:
    _instance(rt, "copying", consistent=False)
    assert _sampler(rt).sample_once() == 1
    assert _rows(rt) == {"copying": (NOW // 60 * 60, None, "inconsistent_copying")}


def test_a_second_sampler_on_the_same_bucket_writes_no_duplicates(rt: Runtime) -> None:
    for n in range(5):
        _instance(rt, f"dup-{n}")
    other = build_runtime(rt.settings)  # another process: its own engine on the same database
    try:
        assert _sampler(rt, page_size=2).sample_once() == 5
        assert _sampler(other, page_size=3).sample_once() == 0
        before = _rows(rt)
        assert len(before) == 5

        # A page that is partly sampled already keeps the samples it has and adds only the missing one.
        _instance(rt, "dup-5")
        assert _sampler(other, page_size=3).sample_once() == 1
        after = _rows(rt)
        assert {k: v for k, v in after.items() if k != "dup-5"} == before and "dup-5" in after
    finally:
        other.store.engine.dispose()


def test_samplers_racing_on_one_bucket_write_each_sample_once(rt: Runtime) -> None:
    for n in range(12):
        _instance(rt, f"race-{n:02d}")
    runtimes = [rt, build_runtime(rt.settings), build_runtime(rt.settings)]
    written: list[int] = []
    errors: list[BaseException] = []

    def run(r: Runtime) -> None:
        try:
            written.append(_sampler(r, page_size=2).sample_once())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in runtimes]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for r in runtimes[1:]:
            r.store.engine.dispose()
    assert errors == []
    assert sum(written) == 12
    assert len(_rows(rt)) == 12


def test_a_stopped_sampler_ends_its_round_after_the_current_page(rt: Runtime) -> None:
    for n in range(5):
        _instance(rt, f"stop-{n}")
    sampler = _sampler(rt, page_size=2)
    sampler.stop()
    assert sampler.sample_once() == 2
    assert sorted(_rows(rt)) == ["stop-0", "stop-1"]


def test_sampling_prunes_samples_older_than_it_keeps(rt: Runtime) -> None:
    _instance(rt, "pruned")
    with rt.store.engine.begin() as conn:
        conn.execute(insert(rpo_samples), [
            dict(instance_id="pruned", at=NOW - 7200, achieved_rpo_seconds=1.0, replication_state="x"),
            dict(instance_id="pruned", at=NOW - 600, achieved_rpo_seconds=2.0, replication_state="x")])
    assert _sampler(rt, keep_seconds=3600).sample_once() == 1
    assert [at for at, _, _ in history(rt.store, "pruned", since=0)] == [NOW - 600, NOW // 60 * 60]
    with rt.store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rpo_samples)).scalar_one() == 2
