"""E-mail through a real SMTP server on loopback (aiosmtpd): plain and over STARTTLS with login."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from email import message_from_string
from email.policy import default as default_policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.conftest import GRS_PARAMS, OSB
from tests.notifications.conftest import Clock, job_for, record_event
from tests.notifications.helpers import SECRET, Mailbox, free_port

RECIPIENTS = ["sre@example.com", "dr-team@example.com"]


def _instance(osb: OSB, iid: str, **extra: object) -> None:
    osb.ready(iid, params={**GRS_PARAMS, "notification_emails": RECIPIENTS,
                           "webhooks": [{"url": "https://hooks.example.com/x", "secret": SECRET,
                                         "event_types": ["key.rotated"]}], **extra})


def _smtp_env(port: int, **extra: str) -> dict[str, str]:
    return {"DRBROKER_SMTP_HOST": "127.0.0.1", "DRBROKER_SMTP_PORT": str(port),
            "DRBROKER_SMTP_FROM": "dr-broker@broker.example.com", "DRBROKER_SMTP_STARTTLS": "false", **extra}


def test_a_critical_event_is_mailed_to_each_address_without_any_secret(osb: OSB, worker, smtp) -> None:
    controller, box = smtp
    clock = Clock(time.time())
    _instance(osb, "i-mail")
    event = record_event(worker.store, "rehearsal.failed", "i-mail", at=clock.now,
                         summary="rehearsal failed: step 3/5 (verifying VMs) failed", data={"rto_met": False})
    record_event(worker.store, "rehearsal.passed", "i-mail", at=clock.now)  # info: not selected by default
    job = job_for(worker, clock, **_smtp_env(controller.port))
    result = job.run_once()
    assert result["sent"] == 2
    assert sorted(m["to"][0] for m in box.messages) == sorted(RECIPIENTS)
    for m in box.messages:
        assert m["from"] == "dr-broker@broker.example.com" and len(m["to"]) == 1
        msg = message_from_string(m["data"], policy=default_policy)
        assert msg["Subject"] == "[powervs-dr] critical: rehearsal.failed on instance i-mail"
        assert msg["To"] == m["to"][0] and msg["X-DR-Event-Id"] == event["id"]
        text = msg.get_content()
        assert "rehearsal failed: step 3/5 (verifying VMs) failed" in text
        assert '"rto_met": false' in text and event["id"] in text
        assert SECRET not in m["data"]


def test_notify_event_types_chooses_what_is_mailed(osb: OSB, worker, smtp) -> None:
    controller, box = smtp
    clock = Clock(time.time())
    _instance(osb, "i-choose", notify_event_types=["rehearsal.passed"])
    record_event(worker.store, "rehearsal.failed", "i-choose", at=clock.now)
    record_event(worker.store, "rehearsal.passed", "i-choose", at=clock.now)
    job_for(worker, clock, **_smtp_env(controller.port)).run_once()
    subjects = {message_from_string(m["data"], policy=default_policy)["Subject"] for m in box.messages}
    assert subjects == {"[powervs-dr] info: rehearsal.passed on instance i-choose"}


@pytest.fixture
def tls_smtp(tls) -> Iterator[tuple[Controller, Mailbox]]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)

    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = auth_data.login == b"mailer" and auth_data.password == b"mail-pass-123"
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port(), tls_context=context, require_starttls=True,
                            authenticator=authenticate, auth_require_tls=True)
    controller.start()
    yield controller, box
    controller.stop()


def test_starttls_with_a_private_ca_and_login(osb: OSB, worker, tls_smtp, tls) -> None:
    controller, box = tls_smtp
    clock = Clock(time.time())
    _instance(osb, "i-tls", notification_emails=["sre@example.com"])
    record_event(worker.store, "instance.not_protected", "i-tls", at=clock.now)
    env = _smtp_env(controller.port, DRBROKER_SMTP_STARTTLS="true", DRBROKER_SMTP_USERNAME="mailer",
                    DRBROKER_SMTP_PASSWORD="mail-pass-123")
    refused = job_for(worker, clock, **env).run_once()  # the system CAs do not know the private CA
    assert refused.get("retrying") == 1 and box.messages == []
    clock.now += 7200
    sent = job_for(worker, clock, **env, DRBROKER_SMTP_CA_FILE=str(tls.ca_file)).run_once()
    assert sent.get("sent") == 1 and [m["to"] for m in box.messages] == [["sre@example.com"]]
    assert "mail-pass-123" not in box.messages[0]["data"]


def test_a_wrong_smtp_password_is_recorded_without_the_password(osb: OSB, worker, tls_smtp, tls) -> None:
    controller, box = tls_smtp
    clock = Clock(time.time())
    _instance(osb, "i-badauth", notification_emails=["sre@example.com"])
    record_event(worker.store, "instance.not_protected", "i-badauth", at=clock.now)
    env = _smtp_env(controller.port, DRBROKER_SMTP_STARTTLS="true", DRBROKER_SMTP_USERNAME="mailer",
                    DRBROKER_SMTP_PASSWORD="wrong-pass-456", DRBROKER_SMTP_CA_FILE=str(tls.ca_file))
    job_for(worker, clock, **env).run_once()
    from broker.notifications.outbox import list_rows

    with worker.store.engine.connect() as conn:
        (row,) = [r for r in list_rows(conn) if r["channel"] == "email"]
    assert row["last_error"] == "SMTP authentication failed (DRBROKER_SMTP_USERNAME/PASSWORD)"
    assert box.messages == []
