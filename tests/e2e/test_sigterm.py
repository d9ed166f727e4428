"""SIGTERM drains a real ``drbroker serve``: requests in flight finish, the running step finishes and its
operation's lease is released, so the next start resumes it at once."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests.conftest import GRS_PLAN, PASSWORD, SERVICE_ID, USER
from tests.e2e.conftest import VERSION, BrokerProcess, Client, dr_params, query
from tests.e2e.test_crash_restart import wait_for_step


def fresh_step(db: Path, operation: str, younger_than: float = 0.3, timeout: float = 15.0) -> int:
    """The index of the step the operation is running, once one has just started (so that a signal sent
    now lands well inside it, far from a step boundary)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = query(db, "SELECT idx, started_at FROM operation_steps WHERE operation_id = ? AND state = 'running'",
                     (operation,))
        assert len(rows) <= 1, rows
        if rows and time.time() - rows[0]["started_at"] < younger_than:
            return rows[0]["idx"]
        time.sleep(0.01)
    raise AssertionError(f"operation {operation}: no step started within {timeout}s")


def test_sigterm_drains(broker_factory: Callable[..., BrokerProcess], client_for: Callable[..., Client],
                        db_path: Path) -> None:
    ready, slow = "e2e-sigterm-ready", "e2e-sigterm-slow"

    # An instance to bind to, provisioned at full speed by a first server.
    fast = broker_factory(db_path, DRBROKER_SIM_STEP_SECONDS="0")
    osb = client_for(fast)
    assert osb.provision(ready, dr_params("vol-bulk-011", "vol-bulk-012")).status_code == 202
    assert osb.wait(ready, timeout=30)["state"] == "succeeded"
    osb.close()
    fast.stop()

    # Slow steps (1.5 s each); a synchronous bind that takes about a second.
    server = broker_factory(db_path, DRBROKER_SIM_STEP_SECONDS="1.5",
                            DRBROKER_SIM_FAULTS="issue_credentials=latency:0.8")
    osb = client_for(server)
    r = osb.provision(slow, dr_params("vol-bulk-013", "vol-bulk-014"))
    assert r.status_code == 202, r.text
    operation = r.json()["operation"]
    wait_for_step(osb, slow, at_least=2)
    in_flight = fresh_step(db_path, operation)

    bind_result: dict[str, Any] = {}

    def bind() -> None:
        try:
            bind_result["response"] = requests.put(
                f"{server.url}/v2/service_instances/{ready}/service_bindings/app-during-sigterm",
                json={"service_id": SERVICE_ID, "plan_id": GRS_PLAN}, auth=(USER, PASSWORD),
                headers={"X-Broker-API-Version": VERSION}, timeout=60)
        except requests.RequestException as exc:  # pragma: no cover - reported below
            bind_result["error"] = exc

    binder = threading.Thread(target=bind, name="bind-during-sigterm")
    binder.start()
    deadline = time.monotonic() + 10
    while not query(db_path, "SELECT id FROM bindings WHERE instance_id = ? AND state = 'binding'", (ready,)):
        assert time.monotonic() < deadline, "the bind request never reached the broker"
        assert binder.is_alive(), bind_result
        time.sleep(0.01)

    assert binder.is_alive(), "the bind finished before SIGTERM; it was meant to be in flight"
    sent, sent_at = time.monotonic(), time.time()
    os.kill(server.pid, signal.SIGTERM)  # the gunicorn master, as a process supervisor would

    binder.join(timeout=40)
    assert not binder.is_alive()
    assert "error" not in bind_result, bind_result
    response = bind_result["response"]
    assert response.status_code == 201, response.text
    assert response.json()["credentials"]["iam"]["apikey"]

    rc = server.wait_exit(timeout=35)
    elapsed = time.monotonic() - sent
    assert elapsed < 30, f"the broker took {elapsed:.1f}s to stop"
    assert rc == 0, server.log_tail()

    # The step running at SIGTERM finished; nothing is left running, and the lease was handed back.
    steps = query(db_path, "SELECT idx, name, state, started_at, finished_at FROM operation_steps "
                           "WHERE operation_id = ? ORDER BY idx", (operation,))
    by_idx = {s["idx"]: s for s in steps}
    assert by_idx[in_flight]["state"] == "done", steps
    assert all(s["state"] == "done" for s in steps), steps
    (op,) = query(db_path, "SELECT state, step_index, lease_owner, lease_until FROM operations WHERE id = ?",
                  (operation,))
    assert op["state"] == "in_progress", op
    assert op["lease_owner"] is None and not op["lease_until"], op
    assert op["step_index"] == len(steps) > in_flight, (op, steps)
    # ... and the worker stopped at that step boundary: no step started after SIGTERM.
    assert op["step_index"] == in_flight + 1, (op, in_flight, steps)
    assert all(s["started_at"] < sent_at + 0.25 for s in steps), (sent_at, steps)
    # The bind that was in flight is recorded as finished.
    (bind_op,) = query(db_path, "SELECT state, lease_owner FROM operations WHERE instance_id = ? AND type = 'bind'",
                       (ready,))
    assert bind_op == {"state": "succeeded", "lease_owner": None}

    # A restart resumes the operation at once (no lease to wait out) and finishes it.
    restarted = broker_factory(db_path, DRBROKER_SIM_STEP_SECONDS="0.05")
    osb = client_for(restarted)
    final = osb.wait(slow, timeout=30)
    assert final["state"] == "succeeded", final
    (op,) = query(db_path, "SELECT id, state, attempts, step_total FROM operations WHERE instance_id = ?", (slow,))
    assert op["id"] == operation and op["state"] == "succeeded" and op["attempts"] == 2, op
    steps = query(db_path, "SELECT idx, name, state, attempts FROM operation_steps WHERE operation_id = ? "
                           "ORDER BY idx", (operation,))
    assert [s["idx"] for s in steps] == list(range(op["step_total"])), steps
    assert all(s["state"] == "done" and s["attempts"] == 1 for s in steps), steps
