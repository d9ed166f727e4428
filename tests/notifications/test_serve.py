"""Through a real ``drbroker serve`` process: a rehearsal that fails reaches the instance's HTTPS webhook as a
signed CloudEvent, which the receiver verifies with ``signing.verify``; a replay of that delivery, and a
tampered copy, are refused by it. ``drbroker notifications list`` shows the delivery."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import requests

from tests.conftest import GRS_PLAN, SERVICE_ID
from tests.e2e.conftest import (  # noqa: F401 - fixtures
    BrokerProcess,
    base_env,
    broker_factory,
    client_for,
    dr_params,
    drbroker_command,
    query,
    wait_until,
)
from tests.notifications.helpers import SECRET, Receiver


def test_a_failed_rehearsal_is_a_verified_webhook_and_its_replay_is_refused(
        broker_factory, client_for, receiver: Receiver, tls, tmp_path: Path) -> None:  # noqa: F811
    db = tmp_path / "state.db"
    broker: BrokerProcess = broker_factory(
        db, DRBROKER_WEBHOOK_CA_FILE=str(tls.ca_file), DRBROKER_NOTIFY_INTERVAL_SECONDS="0.1",
        DRBROKER_WEBHOOK_ALLOW_PRIVATE="true",
        DRBROKER_SIM_FAULTS="verify_rehearsal=fail", DRBROKER_PUBLIC_URL="https://dr-broker.example.com")
    osb = client_for(broker)
    r = osb.provision("i-serve", dr_params("vol-app-data-1"))
    assert r.status_code == 202, r.text
    assert osb.wait("i-serve")["state"] == "succeeded"
    r = osb.request("PATCH", "/v2/service_instances/i-serve?accepts_incomplete=true",
                    json={"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "parameters": {
                        "webhooks": [{"url": receiver.url, "secret": SECRET}]}})
    assert r.status_code == 202, r.text
    assert osb.wait("i-serve")["state"] == "succeeded"
    r = osb.request("PATCH", "/v2/service_instances/i-serve?accepts_incomplete=true",
                    json={"service_id": SERVICE_ID, "plan_id": GRS_PLAN,
                          "parameters": {"dr_action": {"type": "test_failover"}}})
    assert r.status_code == 202, r.text
    assert osb.wait("i-serve")["state"] == "failed"

    def delivered():
        return [d for d in receiver.received if json.loads(d.body)["type"].endswith(".rehearsal.failed")]

    (got,) = wait_until(delivered, 20, "the failed rehearsal delivered to the webhook")
    wait_until(lambda: {r["state"] for r in query(db, "SELECT state FROM outbox")} == {"sent"}, 20,
               "every delivery sent")
    assert got.verdict == "ok"
    event = json.loads(got.body)
    assert event["source"] == "https://dr-broker.example.com/v2/service_instances/i-serve"
    assert event["subject"] == "i-serve" and event["data"]["severity"] == "critical"
    assert SECRET not in got.body.decode()

    sent = {k: v for k, v in got.headers.items() if k.startswith("webhook-") or k == "content-type"}
    replay = requests.post(receiver.url, data=got.body, headers=sent, verify=str(tls.ca_file), timeout=10)
    assert replay.status_code == 400 and "replay" in receiver.received[-1].verdict
    forged = requests.post(receiver.url, data=got.body.replace(b"critical", b"info"),
                           headers={**sent, "webhook-id": "forged-1"}, verify=str(tls.ca_file), timeout=10)
    assert forged.status_code == 400 and receiver.received[-1].verdict == "no valid signature"

    out = subprocess.run([*drbroker_command(), "notifications", "list", "--json", "--instance", "i-serve"],
                         env=base_env(db), cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    # the rehearsal.failed and step.failed events (the default: warning and critical), both delivered
    assert len(rows) == len(receiver.received) - 2 >= 1
    assert {(r["channel"], r["target"], r["state"], r["attempts"]) for r in rows} == {
        ("webhook", receiver.url, "sent", 1)}
