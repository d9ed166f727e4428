"""``key.rotated``: the simulated Key Protect's rotation job records one event per rotation, in the transaction
that adds the key version, with the key and version ids and never key material."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.app import Runtime, build_runtime, create_app
from broker.orchestrators.simulated.cloud import SimulatedCloud
from tests.conftest import make_settings
from tests.events.conftest import events
from tests.services.conftest import DR, params_for

PLAN = "ksys-managed-byok"
MONTH = 100.0


@pytest.fixture
def sim(tmp_path: Path, made: list[Runtime]) -> DR:
    rt = build_runtime(make_settings(tmp_path, sim_month_seconds=MONTH))
    made.append(rt)
    rt.worker.start()
    dr = DR(create_app(runtime=rt).test_client(), rt)
    params = params_for(PLAN)
    params["encryption"] = {**params["encryption"], "rotation_interval_months": 1}
    dr.ready_plan("key-1", PLAN, params)
    return dr


def test_each_rotation_records_key_rotated_for_the_owning_instance(sim: DR) -> None:
    job = sim.runtime.key_rotation
    key = SimulatedCloud(sim.runtime.store.engine).get("root_key", "key-1")
    start = key.data["versions"][-1]["created"]
    job.clock = lambda: start + MONTH * 0.5
    assert job.run_once() == 0
    assert events(sim.runtime, types=["key.rotated"]) == []
    job.clock = lambda: start + MONTH * 1.01
    assert job.run_once() == 1
    assert job.run_once() == 0  # not due again: no second event

    (rotated,) = events(sim.runtime, types=["key.rotated"])
    key = SimulatedCloud(sim.runtime.store.engine).get("root_key", "key-1")
    assert rotated["instance_id"] == "key-1" and rotated["severity"] == "info"
    assert rotated["data"]["key_id"] == key.id
    assert rotated["data"]["version_id"] == key.data["versions"][-1]["id"]
    assert rotated["at"] == pytest.approx(start + MONTH * 1.01)
    text = json.dumps(rotated)
    assert all(v["material"] not in text for v in key.data["versions"])  # no key material


def test_a_rotation_whose_event_cannot_be_written_does_not_happen(sim: DR, monkeypatch: pytest.MonkeyPatch) -> None:
    """One transaction: when writing the event fails, the new version is not added either."""
    from broker.orchestrators.simulated import rotation

    def refuse(*_: object) -> None:
        raise RuntimeError("the event log refused")

    monkeypatch.setattr(rotation, "_record_rotation", refuse)
    job = sim.runtime.key_rotation
    key = SimulatedCloud(sim.runtime.store.engine).get("root_key", "key-1")
    job.clock = lambda: key.data["versions"][-1]["created"] + MONTH * 1.01
    with pytest.raises(RuntimeError):
        job.run_once()
    after = SimulatedCloud(sim.runtime.store.engine).get("root_key", "key-1")
    assert len(after.data["versions"]) == len(key.data["versions"]) == 1
    assert events(sim.runtime, types=["key.rotated"]) == []
