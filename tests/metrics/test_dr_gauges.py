"""Each per-instance DR gauge, the operation-age gauge and the backend-error counter of /metrics hold the value
the state implies: the real app and worker on a SQLite file, the simulated backend, the clock moved forward
where the question is what happens with time."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from broker.app import build_runtime, create_app
from broker.services.protection import REPLICATION_STATES as KNOWN_REPLICATION
from tests.conftest import GRS_PARAMS, GRS_PLAN, OSB, SERVICE_ID, grs_params, make_settings
from tests.metrics.promtool import samples

PLAN = "grs-async"
SCHEDULED = {**GRS_PARAMS, "dr_test_schedule": "monthly"}


class Clock:
    """The broker's clock: the real time, moved on by ``offset`` seconds when the test says so."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def broker(tmp_path, request):
    faults = getattr(request, "param", "")
    rt = build_runtime(make_settings(tmp_path, sim_faults=faults))
    clock = Clock()
    rt.service.clock = clock
    rt.orchestrator.clock = clock
    rt.worker.start()
    osb = OSB(create_app(runtime=rt).test_client())
    osb.clock = clock
    yield osb
    rt.worker.stop(10)
    rt.store.engine.dispose()


def scrape(osb: OSB) -> dict:
    r = osb.get("/metrics")
    assert r.status_code == 200
    return samples(r.get_data(as_text=True))


def value(got: dict, name: str, **labels: str) -> float | None:
    """The one sample of ``name`` with exactly these labels, or None."""
    return got.get((name, tuple(sorted(labels.items()))))


def one_of(got: dict, name: str, label: str, iid: str) -> dict[str, float]:
    """A state set of ``iid``: {label value: 0 or 1}."""
    return {dict(lab)[label]: v for (n, lab), v in got.items()
            if n == name and dict(lab).get("instance_id") == iid}


def dr_action(osb: OSB, iid: str, kind: str, **extra: Any) -> None:
    r = osb.patch(f"/v2/service_instances/{iid}?accepts_incomplete=true",
                  {"service_id": SERVICE_ID, "parameters": {"dr_action": {"type": kind, **extra}}})
    assert r.status_code == 202, r.get_data(as_text=True)
    assert osb.wait(iid)["state"] == "succeeded"


def attributes(osb: OSB, iid: str) -> dict[str, Any]:
    return osb.get(f"/v2/service_instances/{iid}").json["metadata"]["attributes"]


def epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_healthy_instance(broker) -> None:
    broker.ready("h-1", params=SCHEDULED)
    got = scrape(broker)
    i = {"instance_id": "h-1", "plan": PLAN}
    assert one_of(got, "drbroker_instance_protection_status", "status", "h-1") == {
        "protected": 1, "degraded": 0, "not protected": 0, "rehearsing": 0}
    replication = one_of(got, "drbroker_instance_replication_state", "state", "h-1")
    assert set(replication) == {*KNOWN_REPLICATION, "other", "unknown"}
    assert {k for k, v in replication.items() if v} == {"consistent_copying"}
    assert one_of(got, "drbroker_instance_state", "state", "h-1") == {
        "provisioning": 0, "ready": 1, "failed": 0, "deprovisioning": 0}
    assert one_of(got, "drbroker_instance_active_site", "site", "h-1") == {"primary": 1, "secondary": 0}
    assert value(got, "drbroker_instance_failed_over", **i) == 0
    assert value(got, "drbroker_instance_replicating", **i) == 1
    assert value(got, "drbroker_instance_rpo_met", **i) == 1
    assert value(got, "drbroker_instance_test_failover_active", **i) == 0
    assert value(got, "drbroker_instance_achieved_rpo_seconds", **i) == attributes(broker, "h-1")[
        "achieved_rpo_seconds"]
    assert value(got, "drbroker_instance_not_replicating_since_timestamp_seconds", **i) is None
    assert value(got, "drbroker_instance_rpo_target_seconds", **i) == 900
    assert value(got, "drbroker_instance_rto_target_seconds", **i) == 240 * 60  # the plan's feature
    assert value(got, "drbroker_instance_rehearsal_interval_seconds", **i) == 31 * 86400
    assert value(got, "drbroker_instance_last_rehearsal_age_seconds", **i) is None  # never rehearsed
    assert value(got, "drbroker_instance_last_rehearsal_rto_seconds", **i) is None
    assert 0 <= value(got, "drbroker_instance_age_seconds", **i) < 60


def test_a_rehearsal_and_then_its_age_and_rto(broker) -> None:
    broker.ready("r-1", params=SCHEDULED)
    dr_action(broker, "r-1", "test_failover")
    got = scrape(broker)
    i = {"instance_id": "r-1", "plan": PLAN}
    assert one_of(got, "drbroker_instance_protection_status", "status", "r-1")["rehearsing"] == 1
    assert value(got, "drbroker_instance_test_failover_active", **i) == 1
    assert value(got, "drbroker_instance_replicating", **i) == 1  # production still replicates
    dr_action(broker, "r-1", "cleanup_test")
    attrs = attributes(broker, "r-1")
    broker.clock.offset = 3 * 86400
    got = scrape(broker)
    assert value(got, "drbroker_instance_test_failover_active", **i) == 0
    assert value(got, "drbroker_instance_last_rehearsal_rto_seconds", **i) == attrs["last_rehearsal_rto_seconds"]
    age = value(got, "drbroker_instance_last_rehearsal_age_seconds", **i)
    assert age == pytest.approx(time.time() + 3 * 86400 - epoch(attrs["last_rehearsal_at"]), abs=30)
    assert one_of(got, "drbroker_instance_protection_status", "status", "r-1")["protected"] == 1


def test_a_failover_is_not_a_growing_lag(broker) -> None:
    broker.ready("f-1")
    dr_action(broker, "f-1", "failover", mode="unplanned")
    attrs = attributes(broker, "f-1")
    i = {"instance_id": "f-1", "plan": PLAN}
    first = scrape(broker)
    broker.clock.offset = 6 * 3600  # six hours on
    later = scrape(broker)
    for got in (first, later):
        assert one_of(got, "drbroker_instance_protection_status", "status", "f-1")["not protected"] == 1
        assert {k for k, v in one_of(got, "drbroker_instance_replication_state", "state", "f-1").items()
                if v} == {"idling"}
        assert one_of(got, "drbroker_instance_active_site", "site", "f-1") == {"primary": 0, "secondary": 1}
        assert value(got, "drbroker_instance_failed_over", **i) == 1
        assert value(got, "drbroker_instance_replicating", **i) == 0
        assert value(got, "drbroker_instance_rpo_met", **i) == 0
        assert value(got, "drbroker_instance_achieved_rpo_seconds", **i) is None  # no lag reported at all
        assert value(got, "drbroker_instance_not_replicating_since_timestamp_seconds", **i) == pytest.approx(
            epoch(attrs["not_replicating_since"]), abs=1e-3)
    dr_action(broker, "f-1", "failback")
    got = scrape(broker)
    assert value(got, "drbroker_instance_failed_over", **i) == 0
    assert value(got, "drbroker_instance_not_replicating_since_timestamp_seconds", **i) is None
    assert value(got, "drbroker_instance_achieved_rpo_seconds", **i) is not None


def test_an_instance_without_a_schedule_has_no_rehearsal_interval(broker) -> None:
    params = {k: v for k, v in grs_params(1).items() if k != "rpo_target_minutes"}
    broker.ready("n-1", params=params)
    got = scrape(broker)
    i = {"instance_id": "n-1", "plan": PLAN}
    assert value(got, "drbroker_instance_rehearsal_interval_seconds", **i) is None
    assert value(got, "drbroker_instance_rpo_target_seconds", **i) == 3600  # the catalog's default target


@pytest.mark.parametrize("broker", ["wait_consistent_copying=latency:30"], indirect=True)
def test_an_instance_being_provisioned_and_the_oldest_operation(broker) -> None:
    assert broker.provision("p-1").status_code == 202
    rt = broker.client.application.extensions["drbroker"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with rt.store.read() as tx:
            op = tx.latest_instance_operation("p-1")
        if op.state.value == "in_progress":
            break
        time.sleep(0.02)
    got = scrape(broker)
    assert one_of(got, "drbroker_instance_state", "state", "p-1")["provisioning"] == 1
    assert one_of(got, "drbroker_instance_protection_status", "status", "p-1")["not protected"] == 1
    broker.clock.offset = 5400
    got = scrape(broker)
    ages = {dict(lab)["type"]: v for (n, lab), v in got.items() if n == "drbroker_operation_oldest_in_progress_seconds"}
    assert set(ages) == {"provision", "update", "deprovision", "bind", "unbind"}
    assert ages["provision"] == pytest.approx(time.time() + 5400 - op.created_at, abs=30)
    assert ages["bind"] == ages["update"] == 0


@pytest.mark.parametrize("broker", ["create_replication_group=transient:2,issue_credentials=fail"], indirect=True)
def test_backend_errors_are_counted_by_step_and_kind(broker) -> None:
    before = scrape(broker)
    # every step of the backend is there from the start (at 0 in a new process; this one ran other tests), so
    # that the first errors are an increase
    for action, kind in (("issue_credentials", "failed"), ("create_dr_policy", "transient"),
                         ("create_replication_group", "transient"), ("create_replication_group", "failed")):
        assert value(before, "drbroker_backend_errors_total", action=action, kind=kind) is not None, (action, kind)

    def delta(action: str, kind: str) -> float:
        return value(after, "drbroker_backend_errors_total", action=action, kind=kind) - value(
            before, "drbroker_backend_errors_total", action=action, kind=kind)
    broker.ready("e-1")
    r = broker.put("/v2/service_instances/e-1/service_bindings/b-1?accepts_incomplete=true",
                   {"service_id": SERVICE_ID, "plan_id": GRS_PLAN})
    assert r.status_code == 202, r.get_data(as_text=True)
    assert broker.wait_binding("e-1", "b-1")["state"] == "failed"
    after = scrape(broker)
    assert delta("create_replication_group", "transient") == 2
    assert delta("create_replication_group", "failed") == 0
    assert delta("issue_credentials", "failed") == 1


def test_series_stay_bounded_and_leave_with_the_instance(broker) -> None:
    from broker.api.metrics_dr import SERIES_PER_INSTANCE

    broker.ready("g-1", params=SCHEDULED)
    dr_action(broker, "g-1", "test_failover")
    dr_action(broker, "g-1", "cleanup_test")
    got = scrape(broker)
    mine = [k for k in got if k[0].startswith("drbroker_instance_") and dict(k[1]).get("instance_id") == "g-1"]
    assert len(mine) == SERIES_PER_INSTANCE - 1  # all but not_replicating_since, while it replicates
    assert all(set(dict(lab)) <= {"instance_id", "plan", "state", "status", "site"} for _, lab in mine)
    r = broker.deprovision("g-1")
    assert r.status_code == 202
    assert broker.wait("g-1")["state"] == "succeeded"
    got = scrape(broker)
    assert not [k for k in got if k[0].startswith("drbroker_instance_") and dict(k[1]).get("instance_id") == "g-1"]
