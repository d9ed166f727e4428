"""Reports of what the real app did: a real rehearsal through OSB (the worker runs it against the simulated
backend, the event listener records it), then each format of the report: JSON keys, CSV parsed by the csv
module, HTML rows; and no secret of the instance in any of them."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.app import Runtime, build_runtime, create_app
from broker.events.log import list_events
from broker.reports import render_csv, render_html, render_json
from broker.reports.build import Scope
from tests.conftest import KSYS_PARAMS, KSYS_PLAN, OSB, PASSWORD, SERVICE_ID, make_settings
from tests.reports.conftest import DAY, add_samples, report

API_KEY = "ibm-apikey-NEVER-IN-A-REPORT-7f3a"
ORCH_PASSWORD = KSYS_PARAMS["orchestrator"]["password"]
SECRETS = (API_KEY, ORCH_PASSWORD, PASSWORD)


@pytest.fixture
def failing(tmp_path: Path) -> Iterator[tuple[Runtime, OSB]]:
    """A broker whose rehearsals fail at the verify step (injected permanent fault)."""
    rt = build_runtime(make_settings(tmp_path, sim_faults="verify_rehearsal=fail"))
    rt.worker.start()
    try:
        yield rt, OSB(create_app(runtime=rt).test_client())
    finally:
        rt.worker.stop(timeout=10)
        rt.store.engine.dispose()


def _rehearse(osb: OSB, iid: str) -> dict[str, Any]:
    r = osb.patch(f"/v2/service_instances/{iid}?accepts_incomplete=true",
                  {"service_id": SERVICE_ID, "parameters": {"dr_action": {"type": "test_failover"}}})
    assert r.status_code == 202, r.get_data(as_text=True)
    return osb.wait(iid)


def test_a_rehearsal_that_fails_leaves_a_report_line_in_every_format(failing: tuple[Runtime, OSB]) -> None:
    rt, osb = failing
    osb.ready("rep-1", KSYS_PLAN, {**KSYS_PARAMS, "ibmcloud_api_key": API_KEY})
    assert _rehearse(osb, "rep-1")["state"] == "failed"
    now = time.time()
    add_samples(rt, "rep-1", [(now - 180, 30.0, "consistent_copying"), (now - 120, 1200.0, "consistent_copying"),
                              (now - 60, None, "consistent_stopped")])
    with rt.store.read() as tx:  # the listener recorded it (the report reads what it wrote)
        kinds = [e["type"] for e in list_events(tx.conn, instance_id="rep-1", limit=None)]
    assert "rehearsal.failed" in kinds and "step.failed" in kinds

    rep = report(rt, Scope("instance", "rep-1"), now - DAY, now + 1, now=now)
    (line,) = rep.instances[0].rehearsals
    assert (line.outcome, line.scheduled, line.rto_met) == ("failed", False, None)
    assert "verify_rehearsal" in line.detail
    (failure,) = rep.instances[0].failures
    assert (failure.operation, failure.step) == ("test_failover", "verify_rehearsal")

    doc = json.loads(render_json.render(rep))
    assert set(doc) == {"schema", "generated_at", "scope", "period", "rpo_sampling", "totals", "instances"}
    assert doc["schema"] == "drbroker.report/1" and doc["scope"] == {"kind": "instance", "value": "rep-1"}
    inst = doc["instances"][0]
    assert set(inst) == {"instance_id", "account_id", "plan", "state", "protection_status", "protection_reason",
                         "rpo", "rto_target_seconds", "last_rehearsal_at", "rehearsals", "rehearsal_summary",
                         "moves", "failures", "risks"}
    assert inst["rehearsals"][0]["outcome"] == "failed" and inst["rehearsals"][0]["at"].endswith("Z")
    assert inst["rpo"]["share_within_target"] == pytest.approx(1 / 3, abs=1e-4)
    assert inst["rpo"]["worst"]["achieved_rpo_seconds"] == 1200.0
    assert inst["rehearsal_summary"] == {"count": 1, "passed": 0, "failed": 1, "skipped": 0, "rto_missed": 0}
    assert [r["code"] for r in inst["risks"]] == ["never_rehearsed"]

    rows = list(csv.DictReader(io.StringIO(render_csv.render(rep))))
    assert len(rows) == 1 and tuple(rows[0]) == render_csv.COLUMNS
    assert rows[0]["instance_id"] == "rep-1" and rows[0]["rehearsals_failed"] == "1"
    assert rows[0]["rpo_samples"] == "3" and rows[0]["rpo_breach_samples"] == "2"
    assert rows[0]["rpo_breach_minutes"] == "2.0" and rows[0]["failures"] == "1"

    page = render_html.render(rep)
    assert 'data-instance="rep-1"' in page and 'class="rehearsal" data-outcome="failed"' in page
    assert "verify_rehearsal" in page and "<script" not in page and "@media print" in page

    for text in (render_json.render(rep), render_csv.render(rep), page):
        for secret in SECRETS:
            assert secret not in text


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted_as_text(failing: tuple[Runtime, OSB]) -> None:
    rt, osb = failing
    osb.ready("=HYPERLINK(1)", KSYS_PLAN, KSYS_PARAMS)
    now = time.time()
    rows = list(csv.DictReader(io.StringIO(render_csv.render(report(rt, Scope("all"), now - DAY, now)))))
    assert rows[0]["instance_id"] == "'=HYPERLINK(1)"


def test_html_escapes_what_the_platform_chose(failing: tuple[Runtime, OSB]) -> None:
    rt, osb = failing
    osb.ready("%3Cscript%3Ex", KSYS_PLAN, KSYS_PARAMS)  # the id <script>x
    now = time.time()
    page = render_html.render(report(rt, Scope("all"), now - DAY, now))
    assert "<script>x" not in page and "&lt;script&gt;x" in page
