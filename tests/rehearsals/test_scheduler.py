"""The rehearsal scheduler against the real database and worker: it fires a due rehearsal once, skips with an
event (busy, disabled, failed over, test active), runs a missed run once, defers to the window, compensates a
failing rehearsal, and two schedulers on one database (SQLite, PostgreSQL) fire each due row once."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from broker.events.log import list_events
from broker.orchestrators.simulated.cloud import SimulatedCloud
from tests.rehearsals.conftest import EVERY_MINUTE, Rig


def test_a_due_rehearsal_fires_once_and_runs_as_one_operation(rig: Rig) -> None:
    rig.ready_with("fire-1", 11, EVERY_MINUTE)
    job = rig.scheduler()
    assert job.run_once()["fired"] == 0  # not due yet
    rig.due_now("fire-1")
    assert job.run_once()["fired"] == 1
    assert job.run_once()["fired"] == 0  # moved on to the next slot
    (op,) = rig.operations("fire-1")
    assert op.payload["dr_action"] == {"type": "rehearsal", "scheduled": True}
    assert op.principal == "drbroker:scheduler"
    result = rig.wait("fire-1")
    assert result["state"] == "succeeded", result
    with rig.runtime.store.read() as tx:
        steps = [s.name for s in tx.steps(op.id)]
    assert steps == ["check_replication", "start_rehearsal", "verify_rehearsal", "cleanup_rehearsal"]
    attrs = rig.attributes("fire-1")
    assert attrs["test_failover_active"] is False and attrs["last_rehearsal_rto_seconds"] is not None
    row = rig.row("fire-1")
    assert row["last_outcome"] == "passed" and row["last_operation_id"] == op.id
    assert row["next_due_at"] > rig.clock() and row["lease_owner"] is None
    audit = [r for r in rig.runtime.audit.records() if r["action"] == "rehearsal:scheduled"]
    assert [r["operation_id"] for r in audit] == [op.id]


def test_a_run_missed_during_downtime_runs_once_not_once_per_slot(rig: Rig) -> None:
    rig.ready_with("miss-1", 12, EVERY_MINUTE)
    rig.due_now("miss-1")
    rig.clock.offset += 45 * 60  # 45 slots missed
    job = rig.scheduler()
    assert job.run_once()["fired"] == 1
    assert job.run_once()["fired"] == 0
    assert len(rig.operations("miss-1")) == 1
    assert 0 < rig.row("miss-1")["next_due_at"] - rig.clock() <= 60


def test_a_due_run_outside_its_window_waits_for_the_opening(rig: Rig) -> None:
    rig.ready_with("win-1", 13, {"schedule": "* * * * *", "window": {"start": "00:00", "duration_minutes": 1}})
    rig.due_now("win-1")
    job = rig.scheduler()
    row = rig.row("win-1")
    # The row's next due time is already a window opening (00:00 UTC): push the clock past the window.
    rig.clock.offset += 120
    summary = job.run_once()
    assert summary["deferred"] == 1 and summary["fired"] == 0
    assert rig.row("win-1")["next_due_at"] == row["next_due_at"] + 86400
    assert rig.operations("win-1") == []


def _skip_case(rig: Rig, iid: str, n: int, setup: Callable[[Rig, str], None], reason: str) -> None:
    rig.ready_with(iid, n, EVERY_MINUTE, plan="ksys-managed")
    setup(rig, iid)
    rig.due_now(iid)
    before = rig.row(iid)["next_due_at"]
    assert rig.scheduler().run_once()["skipped"] == 1
    (event,) = rig.skipped(iid)
    assert event["data"]["reason"] == reason, event
    assert event["severity"] == "warning" and "skipped" in event["summary"]
    assert rig.operations(iid) == []
    row = rig.row(iid)
    assert row["last_outcome"] == f"skipped:{reason}" and row["next_due_at"] > before


def _busy(rig: Rig, iid: str) -> None:
    rig.runtime.worker.stop(10)  # the update stays queued: the instance is busy
    assert rig.update(iid, {"rpo_target_minutes": 30}).status_code == 202


def _disabled(rig: Rig, iid: str) -> None:
    assert rig.put(f"/bluemix_v1/service_instances/{iid}", {"enabled": False}).status_code == 204


def _failed_over(rig: Rig, iid: str) -> None:
    assert rig.action(iid, "failover").status_code == 202
    assert rig.wait(iid)["state"] == "succeeded"


def _test_active(rig: Rig, iid: str) -> None:
    assert rig.action(iid, "test_failover").status_code == 202
    assert rig.wait(iid)["state"] == "succeeded"


@pytest.mark.parametrize(("setup", "reason"), [(_busy, "busy"), (_disabled, "disabled"),
                                               (_failed_over, "failed_over"), (_test_active, "test_active")])
def test_a_due_rehearsal_is_skipped_with_an_event(rig: Rig, setup, reason) -> None:
    _skip_case(rig, f"skip-{reason}", 20 + len(reason), setup, reason)


def test_a_failing_rehearsal_is_compensated_and_leaves_nothing(rig_factory) -> None:
    rig = rig_factory(sim_faults="verify_rehearsal=fail")
    rig.ready_with("fail-1", 31, EVERY_MINUTE, plan="ksys-managed")
    rig.due_now("fail-1")
    assert rig.scheduler().run_once()["fired"] == 1
    result = rig.wait("fail-1")
    assert result["state"] == "failed" and "cleaned up: cleanup_rehearsal" in result["description"], result
    kinds = {r.kind for r in SimulatedCloud(rig.runtime.store.engine).inventory("fail-1")}
    assert not kinds & {"rehearsal", "rehearsal_vm"}, kinds
    assert rig.attributes("fail-1")["test_failover_active"] is False
    assert rig.row("fail-1")["last_outcome"] == "failed"
    got = scrape(rig, "fail-1")
    assert got["drbroker_instance_rehearsal_last_passed"] == 0.0
    assert "drbroker_instance_rehearsal_last_rto_seconds" not in got


def scrape(rig: Rig, iid: str) -> dict[str, float]:
    """The instance's drbroker_instance_* samples of one /metrics scrape, by name."""
    from prometheus_client.parser import text_string_to_metric_families

    text = rig.get("/metrics").get_data(as_text=True)
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name.startswith("drbroker_instance_") and s.labels.get("instance_id") == iid
            and set(s.labels) == {"instance_id", "plan"}}


def test_metrics_show_the_next_rehearsal_the_last_result_and_its_rto(rig: Rig) -> None:
    rig.ready_with("met-1", 32, {**EVERY_MINUTE, "max_age_days": 3})
    got = scrape(rig, "met-1")
    assert got["drbroker_instance_rehearsal_next_timestamp_seconds"] == rig.row("met-1")["next_due_at"]
    assert got["drbroker_instance_rehearsal_interval_seconds"] == 3 * 86400  # the effective max age
    assert "drbroker_instance_rehearsal_last_passed" not in got
    rig.due_now("met-1")
    assert rig.scheduler().run_once()["fired"] == 1
    assert rig.wait("met-1")["state"] == "succeeded"
    got = scrape(rig, "met-1")
    assert got["drbroker_instance_rehearsal_last_passed"] == 1.0
    assert got["drbroker_instance_rehearsal_last_rto_seconds"] == rig.attributes("met-1")["last_rehearsal_rto_seconds"]
    assert got["drbroker_instance_rehearsal_next_timestamp_seconds"] == rig.row("met-1")["next_due_at"]
    # paused: no next rehearsal
    assert rig.update("met-1", {"rehearsal": {"enabled": False}}).status_code == 202
    assert rig.wait("met-1")["state"] == "succeeded"
    assert "drbroker_instance_rehearsal_next_timestamp_seconds" not in scrape(rig, "met-1")


def test_run_due_fires_from_outside_the_serving_processes(rig: Rig, tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    from broker.cli import main

    rig.ready_with("cli-1", 33, EVERY_MINUTE)
    env = {"DRBROKER_DATABASE_URL": rig.runtime.settings.database_url,
           "DRBROKER_CATALOG": rig.runtime.settings.catalog_path, "DRBROKER_SIM_STEP_SECONDS": "0",
           "DRBROKER_USERNAME": "u", "DRBROKER_PASSWORD": "p", "DRBROKER_STATE_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["jobs", "run-due", "--only", "rehearsals", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert '"fired": 0' in result.output  # not due yet (the CLI reads the real clock)
    with rig.runtime.store.write() as tx:  # due a minute ago
        from sqlalchemy import update

        from broker.store.tables import rehearsal_schedules
        tx.conn.execute(update(rehearsal_schedules).values(next_due_at=rig.clock() - 60))
    result = CliRunner().invoke(main, ["jobs", "run-due", "--only", "rehearsals", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert '"fired": 1' in result.output, result.output
    assert rig.wait("cli-1")["state"] == "succeeded"  # this process's worker ran what the CLI queued
    assert len(rig.operations("cli-1")) == 1


def test_two_schedulers_on_one_database_fire_each_due_row_once(db_url: str, tmp_path, rig_factory) -> None:
    first = rig_factory(database_url=db_url)
    second = rig_factory(database_url=db_url)
    ids = [f"two-{k}" for k in range(4)]
    for k, iid in enumerate(ids):
        first.ready_with(iid, 40 + k, EVERY_MINUTE)
    for iid in ids:
        first.due_now(iid)
    second.clock.offset = first.clock.offset
    # two schedulers in each of two runtimes (each its own lease owner), all started at once
    jobs = [first.scheduler(), second.scheduler(), first.scheduler(), second.scheduler()]
    gate = threading.Barrier(len(jobs))
    results: list[dict] = []

    def run(job) -> None:
        gate.wait()
        results.append(job.run_once())

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(r["fired"] for r in results) == len(ids), results
    for iid in ids:
        assert len(first.operations(iid)) == 1, iid
    with first.runtime.store.read() as tx:
        assert not list_events(tx.conn, types=["rehearsal.skipped"])
