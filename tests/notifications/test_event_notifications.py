"""IBM Cloud Event Notifications as a destination, through IBM's SDK, against the fake (a real HTTP server on
loopback whose shapes come from that SDK's models). Every exchange is held to the definition."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from broker.fakecloud.contracts import load
from broker.fakecloud.server import FakeCloudServer
from broker.notifications.outbox import list_rows
from tests.conftest import GRS_PARAMS, OSB
from tests.ibmfake import start_fake
from tests.notifications.conftest import Clock, job_for, record_event

EN_INSTANCE = "9d3c1f6e-2b7a-4c5d-8e9f-0a1b2c3d4e5f"


@pytest.fixture
def fake() -> Iterator[FakeCloudServer]:
    server = start_fake()
    yield server
    server.stop()


def _env(fake: FakeCloudServer, **extra: str) -> dict[str, str]:
    return {"DRBROKER_EVENT_NOTIFICATIONS_URL": fake.url, "DRBROKER_EVENT_NOTIFICATIONS_IAM_URL": fake.url,
            "DRBROKER_EVENT_NOTIFICATIONS_INSTANCE_ID": EN_INSTANCE,
            "DRBROKER_EVENT_NOTIFICATIONS_APIKEY": "en-sender-apikey",
            "DRBROKER_EVENT_NOTIFICATIONS_SOURCE_ID": "powervs-dr-broker:api-source", **extra}


def _en_exchanges(fake: FakeCloudServer) -> list[dict]:
    return [e for e in fake.state.recorder.exchanges if e["service"] == "event_notifications"]


def _assert_contract_kept(fake: FakeCloudServer) -> None:
    exchanges = _en_exchanges(fake)
    assert exchanges
    contract = load()
    for e in exchanges:
        op, violations = contract.check(e["method"], e["path"], e["request"], e["status"], e["response"])
        assert op is not None and op.id == "send_notifications", e
        assert violations == [], [str(v) for v in violations]
    assert [v for v in fake.state.recorder.summary()["violations"] if v["service"] == "event_notifications"] == []


def test_an_event_reaches_event_notifications_as_a_notification(worker, fake: FakeCloudServer) -> None:
    clock = Clock(time.time())
    event = record_event(worker.store, "rehearsal.failed", "i-en", at=clock.now, summary="rehearsal failed: x",
                         data={"rto_met": False})
    result = job_for(worker, clock, **_env(fake)).run_once()
    assert result["sent"] >= 1 and not result.get("retrying")
    (sent,) = [n for n in fake.state.event_notifications if n["body"]["id"] == event["id"]]
    body = sent["body"]
    assert sent["instance_id"] == EN_INSTANCE
    assert body["specversion"] == "1.0" and body["type"] == "com.ibm.powervs-dr.rehearsal.failed"
    assert body["ibmensourceid"] == "powervs-dr-broker:api-source" and body["ibmenseverity"] == "CRITICAL"
    assert body["ibmendefaultshort"] == "[powervs-dr] critical: rehearsal.failed on instance i-en"
    assert "rehearsal failed: x" in body["ibmendefaultlong"]
    assert body["data"]["details"] == {"rto_met": False} and body["subject"] == "i-en"
    assert "ibmenmailto" not in body
    rows = [r for r in list_rows(worker.store.engine.connect()) if r["event_seq"] == event["seq"]]
    assert [(r["channel"], r["target"], r["state"]) for r in rows] == [("event_notifications", EN_INSTANCE, "sent")]
    _assert_contract_kept(fake)


def test_email_through_event_notifications_names_the_recipient(osb: OSB, worker, fake: FakeCloudServer) -> None:
    clock = Clock(time.time())
    osb.ready("i-en-mail", params={**GRS_PARAMS, "notification_emails": ["sre@example.com"]})
    event = record_event(worker.store, "failover.started", "i-en-mail", at=clock.now)
    env = _env(fake, DRBROKER_NOTIFY_EMAIL_VIA="event_notifications",
               DRBROKER_EVENT_NOTIFICATIONS_EVENT_TYPES="key.rotated")  # the broker-wide copy: not this event
    job_for(worker, clock, **env).run_once()
    (sent,) = [n["body"] for n in fake.state.event_notifications if n["body"]["id"] == event["id"]]
    assert json.loads(sent["ibmenmailto"]) == ["sre@example.com"]
    assert sent["ibmensubject"] == "[powervs-dr] warning: failover.started on instance i-en-mail"
    _assert_contract_kept(fake)


def test_an_unavailable_event_notifications_is_retried(worker, fake: FakeCloudServer) -> None:
    clock = Clock(time.time())
    requests.post(f"{fake.url}/_fake/faults", json={"status": 503, "count": 1, "service": "event_notifications"},
                  timeout=5).raise_for_status()
    event = record_event(worker.store, "rehearsal.failed", None, at=clock.now)
    job = job_for(worker, clock, **_env(fake))
    assert job.run_once().get("retrying") == 1
    (row,) = [r for r in list_rows(worker.store.engine.connect()) if r["event_seq"] == event["seq"]]
    assert row["state"] == "pending" and row["last_error"] == "Event Notifications HTTP 503"
    clock.now = row["next_attempt_at"]
    assert job.run_once().get("sent") == 1


def _token(fake: FakeCloudServer) -> dict[str, str]:
    r = requests.post(f"{fake.url}/identity/token", timeout=10, data={
        "grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": "contract-test"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_the_fake_refuses_what_the_definition_refuses_and_records_unknown_fields(fake: FakeCloudServer) -> None:
    url = f"{fake.url}/v1/instances/{EN_INSTANCE}/notifications"
    good = {"specversion": "1.0", "id": "n-1", "source": "s", "type": "t", "ibmensourceid": "src",
            "ibmendefaultshort": "short", "ibmendefaultlong": "long"}
    assert requests.post(url, json=good, headers=_token(fake), timeout=5).status_code == 202
    assert requests.post(url, json=good, timeout=5).status_code == 401  # no IAM token
    missing = {k: v for k, v in good.items() if k != "ibmensourceid"}
    r = requests.post(url, json=missing, headers=_token(fake), timeout=5)
    assert r.status_code == 400 and "ibmensourceid" in r.text
    assert requests.post(url, json={**good, "ibmenmailto": "sre@example.com"}, headers=_token(fake),
                         timeout=5).status_code == 400  # not a stringified JSON array
    assert requests.post(url, json={**good, "ibmenmialto": "[]"}, headers=_token(fake), timeout=5).status_code == 202
    found = [v["text"] for v in fake.state.recorder.summary()["violations"] if v["service"] == "event_notifications"]
    assert len(found) == 1 and "ibmenmialto" in found[0]
