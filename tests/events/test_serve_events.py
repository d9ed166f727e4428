"""A rehearsal through a real ``drbroker serve`` process, and its events through ``drbroker events list``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import SERVICE_ID
from tests.e2e.conftest import BrokerProcess, Client, base_env, drbroker_command


def test_a_rehearsal_on_a_served_broker_is_in_the_event_log(broker_factory: Callable[..., BrokerProcess],
                                                           client_for: Callable[..., Client], db_path: Path,
                                                           tmp_path: Path) -> None:
    broker = broker_factory(db_path, DRBROKER_SIM_STEP_SECONDS="0.02")
    osb = client_for(broker)
    assert osb.provision("srv-1").status_code == 202
    assert osb.wait("srv-1", timeout=60)["state"] == "succeeded"
    r = osb.request("PATCH", "/v2/service_instances/srv-1?accepts_incomplete=true",
                    json={"service_id": SERVICE_ID, "parameters": {"dr_action": {"type": "test_failover"}}})
    assert r.status_code == 202, r.text
    operation = r.json()["operation"]
    assert osb.wait("srv-1", timeout=60)["state"] == "succeeded"

    out = subprocess.run([*drbroker_command(), "events", "list", "--instance", "srv-1", "--type", "rehearsal.*",
                          "--json"], env=base_env(db_path), cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert [(e["type"], e["operation_id"]) for e in got] == [("rehearsal.started", operation),
                                                             ("rehearsal.passed", operation)]
    passed = got[1]["data"]
    assert passed["rto_met"] is True and passed["rto_seconds"] > 0 and passed["rto_target_seconds"] == 14400
    fetched = osb.get("/v2/service_instances/srv-1").json()["metadata"]["attributes"]
    assert fetched["recent_events"][0]["seq"] == got[1]["seq"]
    assert fetched["last_rehearsal_rto_seconds"] == passed["rto_seconds"]
