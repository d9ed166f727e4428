"""/metrics after a lifecycle: the series exist and hold the values the lifecycle implies."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from broker.app import build_runtime, create_app
from tests.conftest import OSB, PASSWORD, SERVICE_ID, USER, make_settings


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


def test_metrics_add_up_across_gunicorn_workers(tmp_path) -> None:
    import subprocess

    from tests.e2e.conftest import BrokerProcess, base_env, drbroker_command, free_port

    proc = BrokerProcess(base_env(tmp_path / "state.db"), tmp_path, tmp_path / "broker.log")
    proc.port = free_port()
    proc.proc = subprocess.Popen([*drbroker_command(), "serve", "--port", str(proc.port), "--workers", "2"],
                                 env=proc.env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
    try:
        assert proc._wait_healthy()
        session = requests.Session()
        session.auth = (USER, PASSWORD)
        session.headers["X-Broker-API-Version"] = "2.17"
        for _ in range(40):  # spread over both workers by the kernel's accept queue
            assert session.get(f"{proc.url}/v2/catalog", timeout=10).status_code == 200
            session.close()
        samples = _samples(session.get(f"{proc.url}/metrics", timeout=10).text)
        assert _value(samples, "drbroker_http_requests_total", endpoint="osb.catalog", status="200") == 40
    finally:
        proc.stop()
