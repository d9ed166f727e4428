"""Through real ``drbroker serve`` processes on one PostgreSQL: two replicas fire a ``* * * * *`` rehearsal
once in its minute slot; after both are stopped over missed slots and come back (together), the missed run
happens once, not once per slot and not once per replica. Each replica checks every second."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, text, update

from broker.store import db
from broker.store.tables import rehearsal_schedules
from tests.e2e.conftest import BrokerProcess, Client, base_env, dr_params, wait_until

IID = "rh-replicas"




class Db:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(db.normalise_url(url))

    def row(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return dict(conn.execute(text("SELECT * FROM rehearsal_schedules WHERE instance_id = :i"),
                                     {"i": IID}).one()._mapping)

    def skipped(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM dr_events WHERE instance_id = :i "
                                     "AND type = 'rehearsal.skipped'"), {"i": IID}).scalar_one()

    def rehearsals(self) -> list[dict[str, Any]]:
        """The scheduler's operations on the instance (payloads are sealed; the principal says who asked)."""
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(
                "SELECT id, state, created_at FROM operations WHERE instance_id = :i AND type = 'update' "
                "AND principal = 'drbroker:scheduler' ORDER BY created_at"), {"i": IID})]


def both(*calls: Callable[[], Any]) -> None:
    """Run the calls at the same time (stopping or starting both replicas together)."""
    threads = [threading.Thread(target=call) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


def test_two_replicas_fire_each_slot_once_and_a_missed_run_once_after_a_restart(
        broker_factory: Callable[..., BrokerProcess], client_for: Callable[..., Client], pg_url: str) -> None:
    env = {**base_env(None), "DRBROKER_DATABASE_URL": pg_url, "DRBROKER_REHEARSAL_CHECK_SECONDS": "1",
           "DRBROKER_SIM_STEP_SECONDS": "0"}
    store = Db(pg_url)
    try:
        first, second = broker_factory(None, env=env), broker_factory(None, env=env)
        osb = client_for(first)
        r = osb.provision(IID, {**dr_params("vol-bulk-091", "vol-bulk-092"), "rehearsal": {"schedule": "* * * * *"}})
        assert r.status_code == 202, r.text
        assert osb.wait(IID, timeout=30)["state"] == "succeeded"
        slot = store.row()["next_due_at"]
        assert slot - time.time() <= 60

        # 1. Both replicas run over the slot: one rehearsal, fired in the slot, run to the end.
        wait_until(lambda: time.time() > slot + 3, 70, "the minute slot did not pass")
        (fired,) = store.rehearsals()
        assert slot <= fired["created_at"] < slot + 3
        row = store.row()
        assert row["next_due_at"] == slot + 60 and row["lease_owner"] is None
        assert row["last_operation_id"] == fired["id"]
        wait_until(lambda: store.rehearsals()[0]["state"] == "succeeded", 30, "the rehearsal did not finish")
        assert store.row()["last_outcome"] == "passed"

        # 2. Both stop. While they are down the slots pass: the row is what five missed minutes leave behind
        # (next_due_at five slots ago; waiting them out in real time would show the same state, slower).
        both(first.stop, second.stop)
        with store.engine.begin() as conn:
            conn.execute(update(rehearsal_schedules).where(rehearsal_schedules.c.instance_id == IID)
                         .values(next_due_at=store.row()["next_due_at"] - 5 * 60))
        # ... and both come back at once, racing for the overdue row.
        both(first.start, second.start)
        assert first.alive() and second.alive()
        wait_until(lambda: len(store.rehearsals()) >= 2, 20, "the missed rehearsal was not fired after the restart")
        time.sleep(3)  # three more checks by each replica
        fired_again = store.rehearsals()
        assert len(fired_again) == 2, fired_again  # one catch-up for five missed slots, by one replica
        # moved past now at once: no replica found the row still due (it would have skipped: the instance busy)
        assert store.row()["next_due_at"] > time.time() and store.skipped() == 0
        wait_until(lambda: store.rehearsals()[1]["state"] == "succeeded", 30, "the catch-up did not finish")
        attrs = client_for(second).get(f"/v2/service_instances/{IID}").json()["metadata"]["attributes"]
        assert attrs["test_failover_active"] is False and attrs["last_rehearsal_rto_seconds"] is not None
    finally:
        store.engine.dispose()
