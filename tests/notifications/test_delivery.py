"""Webhook delivery against a real HTTPS receiver on loopback: signed CloudEvents, retries with back-off kept
in the outbox row, dead-lettering, TLS verification, no redirects, no response body kept."""

from __future__ import annotations

import json
import socket
import time

from sqlalchemy import select

from broker.notifications import outbox
from broker.notifications.job import NotificationJob
from broker.store.tables import outbox as outbox_table
from tests.conftest import GRS_PARAMS, OSB
from tests.notifications.conftest import Clock, job_for, record_event
from tests.notifications.helpers import SECRET, Receiver


def _rows(store) -> list[dict]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(outbox_table).order_by(outbox_table.c.event_seq))]


def _setup(osb: OSB, receiver: Receiver, iid: str, types: list[str] | None = None) -> None:
    hook = {"url": receiver.url, "secret": SECRET, **({"event_types": types} if types else {})}
    osb.ready(iid, params={**GRS_PARAMS, "webhooks": [hook]})


def _job(runtime, clock: Clock, tls, **env: str) -> NotificationJob:
    return job_for(runtime, clock, DRBROKER_WEBHOOK_CA_FILE=str(tls.ca_file), **env)


def test_a_delivery_is_a_signed_cloudevent_the_receiver_verifies(osb: OSB, worker, receiver: Receiver, tls) -> None:
    clock = Clock(time.time())
    _setup(osb, receiver, "i-ce")
    event = record_event(worker.store, "rehearsal.failed", "i-ce", at=clock.now, summary="rehearsal failed: boom",
                         data={"reason": "boom"})
    result = _job(worker, clock, tls).run_once()
    assert result["sent"] == 1
    (got,) = receiver.received
    assert got.verdict == "ok"
    assert got.headers["content-type"] == "application/cloudevents+json"
    assert got.headers["webhook-id"] == event["id"]
    ce = json.loads(got.body)
    assert ce["specversion"] == "1.0" and ce["id"] == event["id"]
    assert ce["type"] == "com.ibm.powervs-dr.rehearsal.failed" and ce["subject"] == "i-ce"
    assert ce["source"] == "urn:powervs-dr-broker/v2/service_instances/i-ce"
    assert ce["data"]["summary"] == "rehearsal failed: boom" and ce["data"]["details"] == {"reason": "boom"}
    assert ce["time"].endswith("Z")
    assert SECRET not in got.body.decode()
    (row,) = _rows(worker.store)
    assert row["state"] == "sent" and row["attempts"] == 1 and row["lease_owner"] is None


def test_a_failing_receiver_is_retried_with_growing_back_off_until_it_answers(osb: OSB, worker, tls,
                                                                              receiver: Receiver) -> None:
    clock = Clock(time.time())
    receiver.fail_first, receiver.now = 3, clock
    _setup(osb, receiver, "i-retry")
    record_event(worker.store, "failover.started", "i-retry", at=clock.now)
    job = _job(worker, clock, tls, DRBROKER_NOTIFY_BACKOFF_SECONDS="10", DRBROKER_NOTIFY_MAX_ATTEMPTS="5")
    waits = []
    for attempt in (1, 2, 3):
        assert _outcome(job.run_once()) == {"retrying": 1}
        (row,) = _rows(worker.store)
        assert row["state"] == "pending" and row["attempts"] == attempt and row["last_error"] == "HTTP 503"
        waits.append(row["next_attempt_at"] - clock.now)
        assert _outcome(job.run_once()) == {}  # not due yet: nothing is sent early
        clock.now = row["next_attempt_at"]
    # 10 s doubling, plus up to 10 s of jitter
    assert 10 <= waits[0] <= 20 and 20 <= waits[1] <= 30 and 40 <= waits[2] <= 50
    assert _outcome(job.run_once()) == {"sent": 1}
    (row,) = _rows(worker.store)
    assert row["state"] == "sent" and row["attempts"] == 4 and row["last_error"] is None
    # every attempt carried the same webhook-id, re-signed with its own timestamp
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert len({r.headers["webhook-timestamp"] for r in receiver.received}) == 4
    assert receiver.received[-1].verdict == "ok"


def test_after_the_last_attempt_the_delivery_is_dead_and_retry_revives_it(osb: OSB, worker, tls, client,
                                                                          receiver: Receiver) -> None:
    clock = Clock(time.time())
    receiver.fail_first, receiver.fail_body, receiver.now = 3, b"internal detail SECRET-BODY", clock
    receiver.fail_status = 500
    _setup(osb, receiver, "i-dead")
    record_event(worker.store, "rehearsal.failed", "i-dead", at=clock.now)
    job = _job(worker, clock, tls, DRBROKER_NOTIFY_MAX_ATTEMPTS="3", DRBROKER_NOTIFY_BACKOFF_SECONDS="1")
    outcomes = []
    for _ in range(3):
        outcomes.append(job.run_once())
        clock.now += 3600
    assert [o.get("retrying", 0) + o.get("dead", 0) for o in outcomes] == [1, 1, 1] and outcomes[-1]["dead"] == 1
    (row,) = _rows(worker.store)
    assert row["state"] == "dead" and row["attempts"] == 3
    assert row["last_error"] == "HTTP 500 (gave up after 3 attempts)"  # the answer's body is never kept
    assert _outcome(job.run_once()) == {}
    metrics = client.get("/metrics", headers={"Authorization": _auth()}).get_data(as_text=True)
    assert 'drbroker_notifications_outbox{state="dead"} 1.0' in metrics
    assert outbox.retry(worker.store, row["id"], now=clock.now)
    assert not outbox.retry(worker.store, row["id"], now=clock.now)  # only a dead row
    assert _outcome(job.run_once()) == {"sent": 1}
    assert _rows(worker.store)[0]["state"] == "sent"


def test_a_receiver_whose_certificate_does_not_verify_gets_nothing(osb: OSB, worker, receiver: Receiver) -> None:
    clock = Clock(time.time())
    _setup(osb, receiver, "i-tls")
    record_event(worker.store, "rehearsal.failed", "i-tls", at=clock.now)
    assert _outcome(job_for(worker, clock).run_once()) == {"retrying": 1}  # the system CAs only
    assert receiver.received == []
    assert _rows(worker.store)[0]["last_error"] == "TLS: the receiver's certificate did not verify"


def test_a_redirect_is_not_followed(osb: OSB, worker, receiver: Receiver, tls) -> None:
    clock = Clock(time.time())
    receiver.redirect_to = "https://elsewhere.example.com/steal"
    _setup(osb, receiver, "i-redirect")
    record_event(worker.store, "rehearsal.failed", "i-redirect", at=clock.now)
    assert _outcome(_job(worker, clock, tls).run_once()) == {"retrying": 1}
    assert len(receiver.received) == 1
    assert _rows(worker.store)[0]["last_error"] == "HTTP 302: redirects are not followed"


def test_a_delivery_whose_subscription_was_removed_is_dropped(osb: OSB, worker, receiver: Receiver, tls) -> None:
    from tests.conftest import GRS_PLAN, SERVICE_ID

    clock = Clock(time.time())
    _setup(osb, receiver, "i-gone")
    record_event(worker.store, "rehearsal.failed", "i-gone", at=clock.now)
    job = _job(worker, clock, tls)
    from broker.notifications import fanout

    fanout.fan_out(worker.store, job.config, now=clock.now)
    r = osb.patch("/v2/service_instances/i-gone?accepts_incomplete=true",
                  {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "parameters": {"webhooks": []}})
    assert r.status_code == 202 and osb.wait("i-gone")["state"] == "succeeded"
    assert job.run_once()["dead"] == 1
    assert receiver.received == []
    assert _rows(worker.store)[0]["last_error"] == "the instance no longer subscribes this URL"


def test_a_name_that_resolves_to_an_internal_address_is_not_called(osb: OSB, worker, receiver: Receiver,
                                                                   tls) -> None:
    """Checked at every delivery: the name was accepted, then it (or the broker's policy) points inward."""
    clock = Clock(time.time())
    host = socket.gethostname()  # a name (in /etc/hosts) for this machine's own address, not a literal
    named = receiver.url.replace("127.0.0.1", host)
    osb.ready("i-rebind", params={**GRS_PARAMS, "webhooks": [{"url": named, "secret": SECRET}]})
    record_event(worker.store, "rehearsal.failed", "i-rebind", at=clock.now)
    assert _job(worker, clock, tls, DRBROKER_WEBHOOK_ALLOW_PRIVATE="false").run_once()["dead"] == 1
    assert receiver.received == []
    assert _rows(worker.store)[0]["last_error"].startswith(f"{host} is an internal address (")


def test_a_lease_that_ran_out_mid_send_is_taken_over(osb: OSB, worker, receiver: Receiver, tls) -> None:
    clock = Clock(time.time())
    receiver.now = clock
    _setup(osb, receiver, "i-lease")
    record_event(worker.store, "rehearsal.failed", "i-lease", at=clock.now)
    crashed, survivor = _job(worker, clock, tls), _job(worker, clock, tls)
    from broker.notifications import fanout

    fanout.fan_out(worker.store, crashed.config, now=clock.now)
    (taken,) = outbox.claim(worker.store, crashed.owner, now=clock.now, lease=60, limit=10)  # then it dies
    assert _outcome(survivor.run_once()) == {}  # leased: not due
    clock.now += 61
    assert _outcome(survivor.run_once()) == {"sent": 1}
    assert not outbox.mark_sent(worker.store, taken, now=clock.now)  # the dead holder's late write is refused
    (row,) = _rows(worker.store)
    assert row["state"] == "sent" and row["attempts"] == 2


def _outcome(result: dict) -> dict:
    """The job's summary without its count of events fanned out (the provision records events of its own)."""
    return {k: v for k, v in result.items() if k != "events"}


def _auth() -> str:
    from tests.conftest import auth_header

    return auth_header()
