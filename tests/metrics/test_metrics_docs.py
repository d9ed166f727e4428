"""docs/operations.md names every metric /metrics exposes and every shipped alert, with the anchor its
``runbook`` annotation points to."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from broker.app import build_runtime, create_app
from tests.conftest import GRS_PARAMS, OSB, ROOT, SERVICE_ID, make_settings
from tests.metrics import promtool

DOC = (ROOT / "docs" / "operations.md").read_text()


def test_every_metric_is_in_the_metric_list(tmp_path) -> None:
    rt = build_runtime(make_settings(tmp_path, sim_faults="create_replication_group=transient:1"))
    rt.worker.start()
    try:
        osb = OSB(create_app(runtime=rt).test_client())
        osb.ready("d-1", params={**GRS_PARAMS, "dr_test_schedule": "weekly"})
        osb.patch("/v2/service_instances/d-1?accepts_incomplete=true",
                  {"service_id": SERVICE_ID, "parameters": {"dr_action": {"type": "test_failover"}}})
        assert osb.wait("d-1")["state"] == "succeeded"
        osb.put("/v2/service_instances/x?accepts_incomplete=true", b"{")  # a refused request
        text = osb.get("/metrics").get_data(as_text=True)
    finally:
        rt.worker.stop(10)
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    ours = {n for n in names if n.startswith("drbroker_")}
    assert len(ours) > 25, ours
    missing = sorted(n for n in ours if f"`{n}`" not in DOC)
    assert not missing, missing
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names


def test_every_alert_has_its_row() -> None:
    for name, alert in promtool.alerts().items():
        anchor = alert.annotations["runbook"].split("#", 1)[1]
        assert f'<a id="{anchor}"></a>`{name}`' in DOC, name
        assert f"severity {alert.labels['severity']}" in DOC or f"| {alert.labels['severity']}, " in DOC, name
