"""The simulated backend reads many instances' replication in one query, and reports what it reports for
each instance alone, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.app import Runtime, build_runtime
from broker.domain.protocols import StepContext
from broker.orchestrators.simulated import cloud as simulated_cloud
from tests.conftest import GRS_PARAMS, make_settings

# every runtime here starts on a database already at head (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("migrated_state_db")


@pytest.fixture
def rt(tmp_path: Path, db_url: str) -> Iterator[Runtime]:
    runtime = build_runtime(make_settings(tmp_path, database_url=db_url))
    yield runtime
    runtime.store.engine.dispose()


def _perform(rt: Runtime, iid: str, *actions: str) -> None:
    ctx = StepContext(operation_id=f"op-{iid}", operation_type="provision", instance_id=iid,
                      plan=rt.catalog.find_plan("grs-async"), parameters=dict(GRS_PARAMS))
    for action in actions:
        rt.orchestrator.perform(action, ctx)


def test_bulk_and_single_replication_status_agree(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    orch = rt.orchestrator
    since = 1_700_000_000.0
    monkeypatch.setattr(orch, "clock", lambda: since)
    _perform(rt, "copying", "create_replication_group")
    _perform(rt, "consistent", "create_replication_group", "wait_consistent_copying")
    _perform(rt, "failed-over", "create_replication_group", "wait_consistent_copying")
    _perform(rt, "policy-only", "create_dr_policy")  # resources, but no volume group
    # Later, mid-cycle: a consistent group's freeze time is the last cycle boundary.
    monkeypatch.setattr(orch, "clock", lambda: since + 1000.0)
    _perform(rt, "failed-over", "failover_replication")
    monkeypatch.setattr(simulated_cloud, "BULK_CHUNK", 2)  # several queries' worth of ids

    ids = ["copying", "consistent", "failed-over", "policy-only", "never-provisioned", "consistent"]
    bulk = orch.replication_statuses(ids)

    single = {iid: s for iid in ids if (s := orch.replication_status(iid)) is not None}
    assert bulk == single
    assert sorted(bulk) == ["consistent", "copying", "failed-over"]
    assert bulk["consistent"].state == "consistent_copying"
    assert bulk["consistent"].freeze_time == since + 900.0
    assert bulk["copying"].state == "inconsistent_copying" and bulk["copying"].freeze_time is None
    assert bulk["failed-over"].state == "idling"
    assert orch.replication_statuses([]) == {}
