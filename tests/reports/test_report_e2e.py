"""Through real processes: a ``drbroker serve`` provisions and rehearses, then ``drbroker report`` (another
process, the same database) shows the rehearsal, and the server's report page shows the same."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import KSYS_PARAMS, KSYS_PLAN, SERVICE_ID
from tests.e2e.conftest import BrokerProcess, base_env, drbroker_command, query, wait_until

IID = "e2e-report"


def _report(db: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*drbroker_command(), "report", *args], env=base_env(db), cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


def test_drbroker_report_shows_the_rehearsal_a_serving_broker_ran(
        broker_factory: Callable[..., BrokerProcess], client_for: Callable[..., Any], db_path: Path,
        tmp_path: Path) -> None:
    broker = broker_factory(db_path, DRBROKER_RPO_SAMPLE_SECONDS="1")
    c = client_for(broker)
    r = c.provision(IID, KSYS_PARAMS, plan_id=KSYS_PLAN)
    assert r.status_code == 202, r.text
    assert c.wait(IID)["state"] == "succeeded"
    for action in ("test_failover", "cleanup_test"):
        r = c.request("PATCH", f"/v2/service_instances/{IID}?accepts_incomplete=true",
                      json={"service_id": SERVICE_ID, "parameters": {"dr_action": {"type": action}}})
        assert r.status_code == 202, r.text
        assert c.wait(IID)["state"] == "succeeded"
    wait_until(lambda: query(db_path, "SELECT 1 FROM rpo_samples WHERE instance_id = ?", (IID,)), 10,
               "an RPO sample")

    out = _report(db_path, tmp_path, "--instance", IID, "--format", "json", "--days", "1")
    assert out.returncode == 0, out.stderr
    inst = json.loads(out.stdout)["instances"][0]
    (rehearsal,) = inst["rehearsals"]
    assert rehearsal["outcome"] == "passed" and rehearsal["scheduled"] is False
    assert rehearsal["rto_target_seconds"] == 3600 and rehearsal["rto_met"] is True
    assert isinstance(rehearsal["rto_seconds"], int | float) and rehearsal["rto_seconds"] > 0
    assert inst["rpo"]["samples"] >= 1 and inst["rpo"]["share_within_target"] == 1.0
    assert inst["protection_status"] == "protected" and inst["risks"] == []
    assert KSYS_PARAMS["orchestrator"]["password"] not in out.stdout

    page = c.get(f"/dashboard/instances/{IID}/report?days=1")
    assert page.status_code == 200 and 'class="rehearsal" data-outcome="passed"' in page.text
    bad = _report(db_path, tmp_path, "--instance", IID, "--until", "tomorrow")
    assert bad.returncode != 0 and bad.stderr.strip() == (
        "Error: --until: 'tomorrow' is not an ISO 8601 date or time (e.g. 2026-03-01 or 2026-03-01T12:00:00Z)")
