"""Two broker replicas on one PostgreSQL: provision through one, poll through the other, kill -9 the first in
the middle of a step; the second finishes the operation, and no step other than the interrupted one ran twice.
(The same on SQLite is in test_two_servers.py; this is the scale-out deployment.)"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from broker.store import db
from tests.e2e.conftest import BrokerProcess, Client, base_env, dr_params, drbroker_command, wait_until

HOLD = "onboard_auxiliary_volumes=latency:60"




def _rows(url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    engine = create_engine(db.normalise_url(url))
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def test_second_replica_finishes_what_a_killed_replica_started(
        broker_factory: Callable[..., BrokerProcess], client_for: Callable[..., Client], pg_url: str,
        tmp_path: Path) -> None:
    env = {**base_env(None), "DRBROKER_DATABASE_URL": pg_url}
    first = broker_factory(None, env={**env, "DRBROKER_SIM_FAULTS": HOLD})
    iid = "pg-two-replicas"
    r = client_for(first).provision(iid, dr_params("vol-bulk-031", "vol-bulk-032"))
    assert r.status_code == 202, r.text
    operation = r.json()["operation"]
    # The second replica starts once the first has claimed the operation: any replica may claim a queued
    # operation, and this test is about taking over one that another replica was running.
    wait_until(lambda: client_for(first).last_operation(iid).json()["description"].startswith("step "), 30,
          "the first replica did not start the operation")
    second = broker_factory(None, env=env)
    osb2 = client_for(second)
    wait_until(lambda: osb2.last_operation(iid).json()["description"].startswith("step 6/7"), 30,
          "the second replica did not report the first one's step 6/7")
    (op,) = _rows(pg_url, "SELECT lease_owner FROM operations WHERE id = :id", id=operation)
    first_workers = subprocess.run(["pgrep", "-P", str(first.pid)], capture_output=True, text=True).stdout.split()
    assert op["lease_owner"] and op["lease_owner"].split(":")[1] in first_workers

    first.kill9()
    final = osb2.wait(iid, timeout=40)
    assert final["state"] == "succeeded", final
    (op,) = _rows(pg_url, "SELECT * FROM operations WHERE id = :id", id=operation)
    assert op["state"] == "succeeded" and op["attempts"] == 2 and op["lease_owner"] is None
    steps = _rows(pg_url, "SELECT name, state, attempts FROM operation_steps WHERE operation_id = :id", id=operation)
    assert {s["state"] for s in steps} == {"done"} and len(steps) == op["step_total"]
    assert {s["name"]: s["attempts"] for s in steps if s["attempts"] != 1} == {"onboard_auxiliary_volumes": 2}

    out = subprocess.run([*drbroker_command(), "sim", "inventory", "--json"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    kinds = Counter(r["kind"] for r in json.loads(out.stdout) if r["instance_id"] == iid)
    assert kinds and max(kinds.values()) <= 2  # auxiliary volumes: one per protected volume
    assert kinds["auxiliary_volume"] == 2 and kinds["volume_group"] == 1 and kinds["auxiliary_volume_group"] == 1
