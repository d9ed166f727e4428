"""/metrics after a lifecycle: the series exist and hold the values the lifecycle implies."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from broker.app import build_runtime, create_app
from tests.conftest import OSB, PASSWORD, SERVICE_ID, USER, make_settings
from tests.e2e.conftest import wait_until


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples, name: str, **labels) -> float:
    return sum(v for (n, lab), v in samples.items() if n == name and all((k, v2) in lab
                                                                       for k, v2 in labels.items()))


def test_metrics_after_a_lifecycle_hold_the_expected_values(tmp_path) -> None:
    rt = build_runtime(make_settings(tmp_path, sim_faults="create_replication_group=transient:2"))
    rt.worker.start()
    try:
        osb = OSB(create_app(runtime=rt).test_client())
        before = _samples(osb.get("/metrics").get_data(as_text=True))
        osb.ready("m-1")
        osb.patch("/v2/service_instances/m-1?accepts_incomplete=true",
                  {"service_id": SERVICE_ID, "parameters": {"dr_action": {"type": "test_failover"}}})
        assert osb.wait("m-1")["state"] == "succeeded"
        assert osb.bind("m-1", "b-1").status_code == 201
        assert osb.unbind("m-1", "b-1").status_code == 200
        r = osb.get("/metrics")
        assert r.status_code == 200 and r.mimetype == "text/plain"
        after = _samples(r.get_data(as_text=True))
    finally:
        rt.worker.stop(10)

    def delta(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("drbroker_http_requests_total", endpoint="osb.provision", method="PUT", status="202") == 1
    assert delta("drbroker_http_requests_total", endpoint="osb.bind", method="PUT", status="201") == 1
    assert delta("drbroker_http_request_seconds_count", endpoint="osb.provision") == 1
    assert _value(after, "drbroker_operations", type="provision", state="succeeded") == 1
    assert _value(after, "drbroker_operations", type="update", state="succeeded") == 1
    assert _value(after, "drbroker_operations", type="unbind", state="succeeded") == 1
    assert _value(after, "drbroker_queue_depth") == 0
    assert delta("drbroker_step_seconds_count", action="create_replication_group", outcome="ok") == 1
    assert delta("drbroker_step_retries_total", action="create_replication_group") == 2
    assert _value(after, "drbroker_instance_rpo_target_seconds", instance_id="m-1", plan="grs-async") == 900
    achieved = _value(after, "drbroker_instance_achieved_rpo_seconds", instance_id="m-1")
    assert 0 <= achieved <= 300
    age = _value(after, "drbroker_instance_last_rehearsal_age_seconds", instance_id="m-1")
    assert 0 <= age < 60


def test_metrics_need_authentication_unless_configured_public(tmp_path) -> None:
    app = create_app(runtime=build_runtime(make_settings(tmp_path)))
    assert app.test_client().get("/metrics").status_code == 401
    public = create_app(runtime=build_runtime(make_settings(tmp_path / "p", metrics_public=True)))
    assert public.test_client().get("/metrics").status_code == 200


def _worker_pids(master: int) -> set[int]:
    """The gunicorn worker processes (the master's children)."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(c) for c in children}


def _catalog_requests_by_process(folder: Path) -> dict[int, float]:
    """osb.catalog 200s as each process wrote them to its own prometheus-client file (counter_<pid>.db)."""
    counts: dict[int, float] = {}
    for path in folder.glob("counter_*.db"):
        pid = int(path.stem.split("_", 1)[1])
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _metric, sample, labels, _help = json.loads(key)
            if sample == "drbroker_http_requests_total" and labels.get("endpoint") == "osb.catalog" \
                    and labels.get("status") == "200":
                counts[pid] = counts.get(pid, 0) + value
    return counts


def test_metrics_add_up_across_gunicorn_workers(broker_factory, db_path, tmp_path) -> None:
    """A real ``drbroker serve --workers 2``: requests answered by both worker processes, and one scrape
    (answered by either) reports their sum, not only its own process's count."""
    prom = tmp_path / "prometheus"
    broker = broker_factory(db_path, args=["--workers", "2"], PROMETHEUS_MULTIPROC_DIR=str(prom))
    workers = wait_until(lambda: (lambda pids: pids if len(pids) == 2 else None)(_worker_pids(broker.pid)), 30,
                         "two gunicorn workers")

    def one(_: int) -> int:  # a new connection per request, so the kernel may hand it to either worker
        return requests.get(f"{broker.url}/v2/catalog", auth=(USER, PASSWORD), timeout=30,
                            headers={"X-Broker-API-Version": "2.17", "Connection": "close"}).status_code

    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        while sent < 800:
            assert set(pool.map(one, range(40))) == {200}
            sent += 40
            by_process = _catalog_requests_by_process(prom)
            if len([pid for pid, n in by_process.items() if n > 0]) >= 2:
                break
    by_process = _catalog_requests_by_process(prom)
    assert set(by_process) == workers, (by_process, workers)  # each worker answered some of them
    assert all(n > 0 for n in by_process.values()), by_process
    assert sum(by_process.values()) == sent

    for _ in range(4):  # whichever worker answers the scrape reports the total of both
        scrape = requests.get(f"{broker.url}/metrics", auth=(USER, PASSWORD), timeout=30,
                              headers={"Connection": "close"})
        assert scrape.status_code == 200
        total = _value(_samples(scrape.text), "drbroker_http_requests_total", endpoint="osb.catalog", status="200")
        assert total == sent, (total, sent, by_process)
