"""The DR events the RPO sampler records: replication state changes, RPO breaches and recoveries, protection
lost and regained; once per change however many processes sample, and never again after a restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from broker.app import Runtime, build_runtime
from broker.domain.models import Instance, InstanceState
from broker.domain.protocols import StepContext
from broker.workflows.rpo_sampler import RpoSampler
from tests.conftest import GRS_PARAMS, GRS_PLAN, SERVICE_ID, make_settings
from tests.events.conftest import events, types
from tests.services.conftest import DR

OBSERVED = ["replication.state_changed", "rpo.breached", "rpo.recovered", "instance.not_protected",
            "instance.protected"]


def _sampler(rt: Runtime, clock: Any = time.time, **kw: Any) -> RpoSampler:
    kw.setdefault("page_pause", 0.0)
    return RpoSampler(rt.store, rt.orchestrator, interval=60.0, clock=clock, **kw)


def _seen(rt: Runtime, iid: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    return [(e["type"], e["data"]) for e in events(rt, instance_id=iid, types=OBSERVED)]


def _act(dr: DR, iid: str, kind: str, mode: str | None = None) -> None:
    assert dr.action(iid, kind, mode).status_code == 202
    assert dr.wait(iid)["state"] == "succeeded"


def test_a_failover_and_a_failback_are_seen_as_replication_and_protection_changes(dr: DR) -> None:
    rt = dr.runtime
    dr.ready("ob-1")
    sampler = _sampler(rt)
    sampler.sample_once()
    assert _seen(rt) == []  # healthy, as a provision leaves it: nothing to say, nothing written
    with rt.store.read() as tx:
        assert "observed" not in tx.get_instance("ob-1").dr_state  # and nothing written for it

    _act(dr, "ob-1", "failover", "planned")
    sampler.sample_once()
    sampler.sample_once()  # seen once, recorded once
    got = _seen(rt, "ob-1")
    assert [t for t, _ in got] == ["replication.state_changed", "instance.not_protected"]
    assert got[0][1]["from"] == "consistent_copying" and got[0][1]["to"] == "idling"
    assert got[1][1]["status"] == "not protected" and "secondary" in got[1][1]["reason"]

    _act(dr, "ob-1", "failback")
    sampler.sample_once()
    got = _seen(rt, "ob-1")[2:]
    assert [(t, d.get("from"), d.get("to")) for t, d in got] == [
        ("replication.state_changed", "idling", "consistent_copying"), ("instance.protected", None, None)]
    assert sampler.events_written == 4


def test_an_rpo_over_target_is_a_breach_until_it_recovers_and_a_restart_does_not_repeat_it(dr: DR) -> None:
    rt = dr.runtime
    dr.ready("ob-rpo")
    later = time.time() + 3600  # an hour without a new freeze: over the 15 min target
    _sampler(rt, clock=lambda: later).sample_once()
    got = _seen(rt, "ob-rpo")
    assert [t for t, _ in got] == ["rpo.breached", "instance.not_protected"]
    breach = got[0][1]
    assert breach["rpo_target_seconds"] == 900 and breach["achieved_rpo_seconds"] > 900
    assert got[1][1]["status"] == "degraded"

    # Another process (or this one restarted) finds the breach already recorded.
    other = build_runtime(rt.settings)
    try:
        _sampler(other, clock=lambda: later + 60).sample_once()
    finally:
        other.store.engine.dispose()
    assert len(_seen(rt, "ob-rpo")) == 2

    _sampler(rt).sample_once()  # now: the freeze is recent again
    got = _seen(rt, "ob-rpo")[2:]
    assert [t for t, _ in got] == ["rpo.recovered", "instance.protected"]
    assert got[0][1]["achieved_rpo_seconds"] <= 900


def _instance(rt: Runtime, iid: str) -> None:
    """A stored ready instance with a consistent volume group in the simulated cloud."""
    now = time.time()
    with rt.store.write() as tx:
        tx.insert_instance(Instance(id=iid, service_id=SERVICE_ID, plan_id=GRS_PLAN, state=InstanceState.READY,
                                    parameters=dict(GRS_PARAMS), context={}, organization_guid="o",
                                    space_guid="s", maintenance_version=None, dashboard_url=None,
                                    request_hash="h", enabled=True, last_active=None, created_at=now,
                                    updated_at=now))
    ctx = StepContext(operation_id=f"op-{iid}", operation_type="provision", instance_id=iid,
                      plan=rt.catalog.find_plan("grs-async"), parameters=dict(GRS_PARAMS))
    rt.orchestrator.perform("create_replication_group", ctx)
    rt.orchestrator.perform("wait_consistent_copying", ctx)


def _stop_replication(rt: Runtime, iids: list[str]) -> None:
    for iid in iids:
        assert rt.orchestrator.cloud.set_state("volume_group", iid, None, "consistent_stopped") is not None


@pytest.fixture
def rt(tmp_path: Path, db_url: str) -> Iterator[Runtime]:
    runtime = build_runtime(make_settings(tmp_path, database_url=db_url))
    yield runtime
    runtime.store.engine.dispose()


def test_processes_sampling_at_once_record_each_change_once_in_seq_order(rt: Runtime) -> None:
    iids = [f"race-{n:02d}" for n in range(12)]
    for iid in iids:
        _instance(rt, iid)
    _stop_replication(rt, iids)
    runtimes = [rt, build_runtime(rt.settings), build_runtime(rt.settings)]
    errors: list[BaseException] = []

    def run(r: Runtime, page_size: int) -> None:
        try:
            _sampler(r, page_size=page_size).sample_once()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r, n + 2)) for n, r in enumerate(runtimes)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for r in runtimes[1:]:
            r.store.engine.dispose()
    assert errors == []
    got = events(rt)
    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))  # no gap, no duplicate
    changed = [e["instance_id"] for e in got if e["type"] == "replication.state_changed"]
    lost = [e["instance_id"] for e in got if e["type"] == "instance.not_protected"]
    assert sorted(changed) == sorted(lost) == iids  # each instance's change exactly once
    assert len(got) == 2 * len(iids)


def _count_statements(rt: Runtime) -> tuple[list[str], Any]:
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    event.listen(rt.store.engine, "before_cursor_execute", before)
    return seen, before


def test_a_healthy_page_costs_no_statement_for_events_and_a_changed_page_a_few(tmp_path: Path) -> None:
    """Statements per round, counted (not timed): healthy pages add none for the event log; a page where
    every instance changed adds one locked read, one batched update and one insert of all its events."""
    rt = build_runtime(make_settings(tmp_path))
    try:
        iids = [f"cost-{n:02d}" for n in range(10)]
        for iid in iids:
            _instance(rt, iid)
        seen, hook = _count_statements(rt)
        _sampler(rt, page_size=4).sample_once()  # pages of 4, 4 and 2
        healthy = list(seen)
        # per page: the instances, the statuses, the samples; then the prune (BEGIN/COMMIT not counted)
        assert [s for s in healthy if s != "BEGIN"] == ["SELECT", "SELECT", "INSERT"] * 3 + ["DELETE"], healthy
        _stop_replication(rt, iids)
        seen.clear()
        _sampler(rt, page_size=4, clock=lambda: time.time() + 60).sample_once()
        changed = [s for s in seen if s != "BEGIN"]

        def page() -> list[str]:
            return ["SELECT", "SELECT", "INSERT", "SELECT", "UPDATE", "SELECT", "INSERT"]

        assert changed == page() * 3 + ["DELETE"], changed
        event.remove(rt.store.engine, "before_cursor_execute", hook)
        assert types(rt).count("replication.state_changed") == 10
    finally:
        rt.store.engine.dispose()
