"""Two ``drbroker serve`` processes on one SQLite file: one truth, leases between them.

- a provision accepted by the first is reported by the second; the first is killed with ``kill -9`` in the
  middle of a step, the second takes the operation over at once (the holder is a dead local process) and
  finishes it; no step was done twice and the simulated cloud holds exactly one of everything;
- both alive, they share a burst of provisions, each operation claimed once, each step run once;
- a server that stops heart-beating (SIGSTOP) loses its lease after ``DRBROKER_LEASE_SECONDS``; when it
  wakes up, its late writes are refused.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.conftest import BrokerProcess, Client, dr_params, query, sim_inventory, wait_until

HOLD = "onboard_auxiliary_volumes=latency:60"  # the first server sits in step 6/7 until it is killed


def _operation(db: Path, iid: str) -> dict[str, Any]:
    (op,) = query(db, "SELECT * FROM operations WHERE instance_id = ? AND type = 'provision'", (iid,))
    return op


def _steps(db: Path, op_id: str) -> list[dict[str, Any]]:
    return query(db, "SELECT idx, name, state, attempts FROM operation_steps WHERE operation_id = ? ORDER BY idx",
                 (op_id,))


def _holder_group(owner: str | None) -> int | None:
    """The process group (= the ``drbroker serve`` master's pid) of a lease owner ``host:pid:nonce``."""
    if not owner:
        return None
    try:
        return os.getpgid(int(owner.split(":")[1]))
    except ProcessLookupError:
        return None


def _kinds(inventory: list[dict[str, Any]], iid: str) -> Counter[str]:
    return Counter(r["kind"] for r in inventory if r["instance_id"] == iid)


CREATED = re.compile(r"simulated cloud: created (\S+) (\S+) ")


def _no_duplicate_creates(*servers: BrokerProcess) -> Counter[tuple[str, str]]:
    """What the simulated cloud logged as created, across the servers: nothing twice, nothing refused."""
    created: Counter[tuple[str, str]] = Counter()
    for server in servers:
        text = server.log_path.read_text(errors="replace")
        assert "duplicate create" not in text, server.log_tail()
        created.update(CREATED.findall(text))
    assert created and max(created.values()) == 1, [k for k, n in created.items() if n > 1]
    return created


def test_kill_9_of_one_server_and_the_other_finishes_its_operation(
        broker_factory: Callable[..., BrokerProcess], client_for: Callable[..., Client], db_path: Path,
        tmp_path: Path) -> None:
    iid, control = "e2e-two-killed", "e2e-two-control"
    first = broker_factory(db_path, DRBROKER_SIM_FAULTS=HOLD)
    r = client_for(first).provision(iid, dr_params("vol-bulk-021", "vol-bulk-022"))
    assert r.status_code == 202, r.text
    operation = r.json()["operation"]
    owner = wait_until(lambda: _operation(db_path, iid)["lease_owner"], 10, "the first server did not claim it")
    assert _holder_group(owner) == first.pid

    second = broker_factory(db_path)
    osb2 = client_for(second)
    # The second server reports the first one's progress from the shared database, and leaves its live
    # lease alone while the first works (and heart-beats) on step 6.
    wait_until(lambda: osb2.last_operation(iid).json()["description"].startswith("step 6/7: onboarding"), 30,
          "the second server did not report step 6/7")
    time.sleep(1.0)
    assert _operation(db_path, iid)["lease_owner"] == owner

    first.kill9()
    final = osb2.wait(iid, timeout=30)
    assert final["state"] == "succeeded", final
    assert osb2.last_operation(iid, operation).json()["state"] == "succeeded"
    r = osb2.provision(iid, dr_params("vol-bulk-021", "vol-bulk-022"))
    assert r.status_code == 200, r.text

    op = _operation(db_path, iid)
    assert op["id"] == operation and op["state"] == "succeeded" and op["lease_owner"] is None
    assert op["attempts"] == 2, op  # claimed by the first, then once by the second
    steps = _steps(db_path, operation)
    assert [s["state"] for s in steps] == ["done"] * op["step_total"], steps
    # Only the step the first server was killed in ran twice; nothing else ran again.
    assert {s["name"]: s["attempts"] for s in steps if s["attempts"] != 1} == {"onboard_auxiliary_volumes": 2}

    assert osb2.provision(control, dr_params("vol-bulk-023", "vol-bulk-024")).status_code == 202
    assert osb2.wait(control, timeout=30)["state"] == "succeeded"
    inventory = sim_inventory(db_path, tmp_path)
    assert _kinds(inventory, iid) == _kinds(inventory, control)
    names = [(r["kind"], r["name"]) for r in inventory]
    assert len(names) == len(set(names))
    # The step the first server was killed in had not acted yet (it waited on its latency): its resources were
    # created once, by the second server.
    _no_duplicate_creates(first, second)
    first_log = first.log_path.read_text(errors="replace")
    assert "created auxiliary_volume_group" not in first_log
    assert "created auxiliary_volume_group" in second.log_path.read_text(errors="replace")


def test_two_live_servers_share_the_work_and_run_every_step_once(
        broker_factory: Callable[..., BrokerProcess], client_for: Callable[..., Client], db_path: Path,
        tmp_path: Path) -> None:
    servers = [broker_factory(db_path, DRBROKER_SIM_STEP_SECONDS="0.1") for _ in range(2)]
    clients = [client_for(s) for s in servers]
    iids = [f"e2e-shared-{n}" for n in range(6)]
    for n, iid in enumerate(iids):
        volumes = (f"vol-bulk-{31 + 2 * n:03d}", f"vol-bulk-{32 + 2 * n:03d}")
        assert clients[n % 2].provision(iid, dr_params(*volumes)).status_code == 202
    for n, iid in enumerate(iids):
        assert clients[(n + 1) % 2].wait(iid, timeout=60)["state"] == "succeeded"  # polled through the other

    ops = query(db_path, "SELECT id, attempts, state FROM operations WHERE instance_id LIKE 'e2e-shared-%'")
    assert len(ops) == 6 and all(o["attempts"] == 1 and o["state"] == "succeeded" for o in ops), ops
    rows = query(db_path, "SELECT attempts, state FROM operation_steps WHERE operation_id IN "
                          f"({','.join('?' * len(ops))})", tuple(o["id"] for o in ops))
    assert rows and all(r["attempts"] == 1 and r["state"] == "done" for r in rows)
    # Each server ran some of them (a server runs two at a time; six arrived at once).
    for server in servers:
        assert "succeeded" in server.log_path.read_text(errors="replace"), server.log_tail()
    inventory = sim_inventory(db_path, tmp_path)
    assert all(_kinds(inventory, iid) == _kinds(inventory, iids[0]) for iid in iids)
    _no_duplicate_creates(*servers)


def _stop_outside_a_transaction(server: BrokerProcess, db: Path) -> None:
    """SIGSTOP the server, but never while it holds SQLite's write lock (the other server would wait)."""
    for _ in range(50):
        os.killpg(server.pid, signal.SIGSTOP)
        conn = sqlite3.connect(str(db), timeout=0.3, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            os.killpg(server.pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            conn.close()
    raise AssertionError("could not stop the server outside a write transaction")


def test_a_server_that_stops_heartbeating_loses_its_lease_and_its_late_writes_are_refused(
        broker_factory: Callable[..., BrokerProcess], client_for: Callable[..., Client], db_path: Path,
        tmp_path: Path) -> None:
    iid = "e2e-two-paused"
    lease = {"DRBROKER_LEASE_SECONDS": "2"}
    first = broker_factory(db_path, DRBROKER_SIM_FAULTS="create_replication_group=latency:4", **lease)
    second = broker_factory(db_path, **lease)
    osb1, osb2 = client_for(first), client_for(second)
    r = osb1.provision(iid, dr_params("vol-bulk-045", "vol-bulk-046"))
    assert r.status_code == 202, r.text
    operation = r.json()["operation"]
    wait_until(lambda: osb2.last_operation(iid).json()["description"].startswith("step 4/7"), 30, "no step 4/7")
    owner = _operation(db_path, iid)["lease_owner"]
    if _holder_group(owner) != first.pid:  # the second server was quicker to claim: swap the roles
        first, second, osb1, osb2 = second, first, osb2, osb1
    paused_at = time.monotonic()
    _stop_outside_a_transaction(first, db_path)
    try:
        final = osb2.wait(iid, timeout=30)
        took = time.monotonic() - paused_at
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert final["state"] == "succeeded", final
    assert took >= 1.0, "taken over before the lease could have lapsed"
    op = _operation(db_path, iid)
    assert op["attempts"] == 2 and op["lease_owner"] is None

    # Awake again, the first server finishes its backend call (idempotent), then finds the lease gone.
    wait_until(lambda: "lease lost to another worker" in first.log_path.read_text(errors="replace"), 30,
          "the paused server did not notice it lost the lease")
    after = _operation(db_path, iid)
    assert after == op, "a late write of the paused server was applied"
    assert {s["name"]: s["attempts"] for s in _steps(db_path, operation) if s["attempts"] != 1} == \
        {"create_replication_group": 2}
    assert osb1.get("/healthz").status_code == 200
    inventory = sim_inventory(db_path, tmp_path)
    assert _kinds(inventory, iid)["volume_group"] == 1
    names = [(r["kind"], r["name"]) for r in inventory]
    assert len(names) == len(set(names))
    _no_duplicate_creates(first, second)
