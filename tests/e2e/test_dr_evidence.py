"""Issue 16 end to end, through a real ``drbroker serve``: a *scheduled* rehearsal that fails leaves its events,
a line in the report, a signed webhook and an e-mail, and nothing of the rehearsal behind in the cloud."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.conftest import KSYS_PARAMS, KSYS_PLAN
from tests.e2e.conftest import (  # noqa: F401 - fixtures
    BrokerProcess,
    base_env,
    broker_factory,
    client_for,
    drbroker_command,
    query,
    sim_inventory,
    wait_until,
)
from tests.notifications.conftest import receiver, smtp, tls  # noqa: F401 - fixtures
from tests.notifications.helpers import SECRET, Receiver

IID = "e2e-evidence"
EMAIL = "sre-oncall@example.com"


def _cli(db: Path, cwd: Path, *args: str) -> str:
    out = subprocess.run([*drbroker_command(), *args], env=base_env(db), cwd=cwd, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_scheduled_rehearsal_that_fails_leaves_events_a_report_line_notifications_and_no_orphans(
        broker_factory, client_for, receiver: Receiver, smtp, tls, tmp_path: Path) -> None:  # noqa: F811
    controller, mailbox = smtp
    db = tmp_path / "state.db"
    broker: BrokerProcess = broker_factory(
        db, DRBROKER_SIM_FAULTS="verify_rehearsal=fail", DRBROKER_REHEARSAL_CHECK_SECONDS="0.5",
        DRBROKER_NOTIFY_INTERVAL_SECONDS="0.1", DRBROKER_WEBHOOK_CA_FILE=str(tls.ca_file),
        DRBROKER_WEBHOOK_ALLOW_PRIVATE="true", DRBROKER_SMTP_HOST="127.0.0.1", DRBROKER_SMTP_PORT=str(controller.port),
        DRBROKER_SMTP_STARTTLS="false", DRBROKER_SMTP_FROM="dr-broker@example.com")
    osb = client_for(broker)
    params = {**KSYS_PARAMS, "rehearsal": {"schedule": "0 3 * * 0"}, "notification_emails": [EMAIL],
              "webhooks": [{"url": receiver.url, "secret": SECRET, "event_types": ["rehearsal.*"]}]}
    r = osb.provision(IID, params, plan_id=KSYS_PLAN)
    assert r.status_code == 202, r.text
    assert osb.wait(IID)["state"] == "succeeded"
    (row,) = query(db, "SELECT next_due_at FROM rehearsal_schedules WHERE instance_id = ?", (IID,))
    assert row["next_due_at"] > time.time()  # next Sunday 03:00 UTC

    # Bring the slot to now rather than wait for Sunday: the scheduler of the serving process fires it.
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute("UPDATE rehearsal_schedules SET next_due_at = ? WHERE instance_id = ?", (time.time() - 1, IID))

    def types() -> list[str]:
        return [e["type"] for e in query(db, "SELECT type FROM dr_events WHERE instance_id = ? ORDER BY seq", (IID,))]

    wait_until(lambda: "rehearsal.failed" in types(), 30, "the scheduled rehearsal failed")
    events = json.loads(_cli(db, tmp_path, "events", "list", "--instance", IID, "--type", "rehearsal.*", "--json"))
    by_type = {e["type"]: e for e in events}
    assert [e["type"] for e in events] == ["rehearsal.started", "rehearsal.failed"]
    assert by_type["rehearsal.started"]["data"]["scheduled"] is True
    assert by_type["rehearsal.failed"]["data"]["scheduled"] is True
    assert "step.failed" in types()
    (schedule,) = query(db, "SELECT next_due_at, lease_owner FROM rehearsal_schedules WHERE instance_id = ?", (IID,))
    assert schedule["next_due_at"] > time.time() and schedule["lease_owner"] is None

    # no orphans: the compensation removed the rehearsal's clones and VMs
    left = [r for r in sim_inventory(db, tmp_path) if r["instance_id"] == IID and r["kind"].startswith("rehearsal")]
    assert left == []
    fetched = osb.get(f"/v2/service_instances/{IID}")
    assert fetched.status_code == 200, fetched.text
    attributes = fetched.json()["metadata"]["attributes"]
    assert attributes["test_failover_active"] is False
    assert "rehearsal.failed" in [e["type"] for e in attributes["recent_events"]]
    assert SECRET not in fetched.text

    # the signed webhook (rehearsal.* only) and the e-mail (warning and critical events by default)
    def delivered() -> list[str]:
        return [json.loads(d.body)["type"] for d in receiver.received if d.verdict == "ok"]

    wait_until(lambda: any(t.endswith(".rehearsal.failed") for t in delivered()), 20, "the webhook delivery")
    assert all(".rehearsal." in t for t in delivered())
    assert any(t.endswith(".rehearsal.started") for t in delivered())
    mails = wait_until(lambda: [m for m in mailbox.messages if "rehearsal.failed" in m["data"]], 20, "the e-mail")
    assert mails[0]["to"] == [EMAIL]
    for message in [*mailbox.messages, *(d.body.decode() for d in receiver.received)]:
        assert SECRET not in message and KSYS_PARAMS["orchestrator"]["password"] not in message

    # a line in the report, in JSON and CSV
    report = json.loads(_cli(db, tmp_path, "report", "--instance", IID, "--days", "1", "--format", "json"))
    (rehearsal,) = report["instances"][0]["rehearsals"]
    assert rehearsal["outcome"] == "failed" and rehearsal["scheduled"] is True
    (line,) = list(csv.DictReader(io.StringIO(_cli(db, tmp_path, "report", "--instance", IID, "--days", "1",
                                                   "--format", "csv"))))
    assert line["rehearsals_failed"] == "1" and line["rehearsals_passed"] == "0"
