"""Bringing a real broker (``drbroker serve``, simulated backend) into the states the metrics and alerts name.

Only what a platform or the clock would do: OSB requests, and where waiting would take hours or days, the
record the broker keeps (its store) or the simulated storage's record moved back in time.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import requests

from broker.app import make_envelope
from broker.config import Settings
from broker.orchestrators.simulated.cloud import SimulatedCloud
from broker.store import db
from broker.store.repository import Store
from tests.conftest import GRS_PLAN, PASSWORD, SERVICE_ID, USER, grs_params
from tests.e2e.conftest import BrokerProcess, Client, base_env


def scrape(broker: BrokerProcess) -> str:
    r = requests.get(f"{broker.url}/metrics", auth=(USER, PASSWORD), timeout=30, headers={"Connection": "close"})
    assert r.status_code == 200, r.text
    return r.text


def dr_action(c: Client, iid: str, kind: str, **extra: Any) -> None:
    r = c.request("PATCH", f"/v2/service_instances/{iid}?accepts_incomplete=true",
                  json={"service_id": SERVICE_ID, "parameters": {"dr_action": {"type": kind, **extra}}})
    assert r.status_code == 202, r.text
    assert c.wait(iid)["state"] == "succeeded", kind


def provision(c: Client, iid: str, n: int, **params: Any) -> None:
    r = c.provision(iid, {**grs_params(n), "dr_test_schedule": "weekly", **params})
    assert r.status_code == 202, r.text
    assert c.wait(iid)["state"] == "succeeded"


def healthy(c: Client, iid: str = "healthy-1", n: int = 0) -> None:
    """Provisioned, replicating within its target, rehearsed (test failover, then its clean-up)."""
    provision(c, iid, n)
    dr_action(c, iid, "test_failover")
    dr_action(c, iid, "cleanup_test")


def bind(c: Client, iid: str, bid: str) -> requests.Response:
    return c.put(f"/v2/service_instances/{iid}/service_bindings/{bid}?accepts_incomplete=true",
                 {"service_id": SERVICE_ID, "plan_id": GRS_PLAN})


def store_of(db_path: Path) -> Store:
    """The broker's own store over its database, with its key (the file beside the database)."""
    settings = Settings.from_env(env=base_env(db_path))
    return Store(db.make_engine(settings.database_url), sealer=make_envelope(settings))


def backdate_rehearsal(db_path: Path, iid: str, seconds: float) -> None:
    store = store_of(db_path)
    with store.write() as tx:
        inst = tx.get_instance(iid)
        assert inst is not None and inst.dr_state.get("last_rehearsal_at")
        tx.update_instance(iid, dr_state={**inst.dr_state,
                                          "last_rehearsal_at": inst.dr_state["last_rehearsal_at"] - seconds})
    store.engine.dispose()


def backdate_instance(db_path: Path, iid: str, seconds: float) -> None:
    store = store_of(db_path)
    with store.write() as tx:
        inst = tx.get_instance(iid)
        assert inst is not None
        tx.update_instance(iid, created_at=inst.created_at - seconds)
    store.engine.dispose()


def in_progress(db_path: Path, iid: str) -> int:
    store = store_of(db_path)
    with store.read() as tx:
        count = len(tx.list_operations(instance_id=iid, state="in_progress"))
    store.engine.dispose()
    return count


def backdate_operations_in_progress(db_path: Path, iid: str, seconds: float) -> int:
    store = store_of(db_path)
    with store.write() as tx:
        ops = tx.list_operations(instance_id=iid, state="in_progress")
        for op in ops:
            tx.update_operation(op.id, created_at=op.created_at - seconds,
                                started_at=(op.started_at or op.created_at) - seconds)
    store.engine.dispose()
    return len(ops)


def lag_replication(db_path: Path, iid: str, seconds: float) -> None:
    """The simulated storage of ``iid`` copying, with its last consistent freeze ``seconds`` ago (a slow link:
    the cycle has not completed since)."""
    engine = db.make_engine(f"sqlite:///{db_path}")
    cloud = SimulatedCloud(engine)
    group = cloud.get("volume_group", iid)
    assert group is not None and group.state == "consistent_copying", group
    since = time.time() - seconds
    cloud.update(group, data={"consistent_since": since, "cycle_period_seconds": int(seconds * 10)})
    engine.dispose()


def outbox_states(db_path: Path) -> dict[str, int]:
    """Notification deliveries by state."""
    with sqlite3.connect(db_path, timeout=30) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())


def backdate_events(db_path: Path, seconds: float) -> None:
    """Every DR event written ``seconds`` earlier than it was."""
    with sqlite3.connect(db_path, timeout=30) as conn:
        conn.execute("UPDATE dr_events SET at = at - ?", (seconds,))
