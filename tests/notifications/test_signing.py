"""Webhook signatures: what verifies, and every way a delivery is refused."""

from __future__ import annotations

import base64

import pytest
from standardwebhooks import Webhook

from broker.notifications import signing

SECRET = "a-receivers-secret-of-32-characters!"
BODY = b'{"specversion":"1.0","id":"e-1"}'
NOW = 1_800_000_000


def test_a_signed_delivery_verifies_and_returns_its_id() -> None:
    headers = signing.sign(SECRET, "e-1", BODY, now=NOW)
    assert headers["webhook-signature"].startswith("v1,")
    assert signing.verify(headers, BODY, SECRET, now=NOW + 10) == "e-1"


def test_header_names_are_case_insensitive() -> None:
    headers = {k.title(): v for k, v in signing.sign(SECRET, "e-1", BODY, now=NOW).items()}
    assert signing.verify(headers, BODY, SECRET, now=NOW) == "e-1"


@pytest.mark.parametrize("tamper", ["body", "id", "timestamp", "secret", "signature"])
def test_a_tampered_delivery_is_refused(tamper: str) -> None:
    headers = signing.sign(SECRET, "e-1", BODY, now=NOW)
    body, secret = BODY, SECRET
    if tamper == "body":
        body = BODY.replace(b"e-1", b"e-2")
    elif tamper == "id":
        headers["webhook-id"] = "e-2"
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(NOW + 1)
    elif tamper == "secret":
        secret = SECRET + "x"
    else:
        headers["webhook-signature"] = "v1," + base64.b64encode(b"0" * 32).decode()
    with pytest.raises(signing.VerificationError, match="no valid signature"):
        signing.verify(headers, body, secret, now=NOW)


@pytest.mark.parametrize("drop", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_delivery_without_a_header_is_refused(drop: str) -> None:
    headers = signing.sign(SECRET, "e-1", BODY, now=NOW)
    del headers[drop]
    with pytest.raises(signing.VerificationError, match="missing"):
        signing.verify(headers, BODY, SECRET, now=NOW)


@pytest.mark.parametrize("skew", [301, -301])
def test_a_timestamp_outside_the_window_is_refused(skew: int) -> None:
    headers = signing.sign(SECRET, "e-1", BODY, now=NOW)
    with pytest.raises(signing.VerificationError, match="more than 300 s"):
        signing.verify(headers, BODY, SECRET, now=NOW + skew)
    assert signing.verify(headers, BODY, SECRET, now=NOW + skew - (1 if skew > 0 else -1)) == "e-1"


def test_a_replayed_delivery_is_refused_and_a_new_one_is_not() -> None:
    seen: dict[str, float] = {}
    first = signing.sign(SECRET, "e-1", BODY, now=NOW)
    assert signing.verify(first, BODY, SECRET, now=NOW, seen=seen) == "e-1"
    with pytest.raises(signing.VerificationError, match="replay"):
        signing.verify(first, BODY, SECRET, now=NOW + 5, seen=seen)
    # a re-signed copy (a retry with a fresh timestamp) carries the same id: refused too
    again = signing.sign(SECRET, "e-1", BODY, now=NOW + 60)
    with pytest.raises(signing.VerificationError, match="replay"):
        signing.verify(again, BODY, SECRET, now=NOW + 60, seen=seen)
    other = signing.sign(SECRET, "e-2", BODY, now=NOW + 60)
    assert signing.verify(other, BODY, SECRET, now=NOW + 60, seen=seen) == "e-2"


def test_the_replay_memory_forgets_ids_older_than_the_window() -> None:
    seen: dict[str, float] = {}
    signing.verify(signing.sign(SECRET, "old", BODY, now=NOW), BODY, SECRET, now=NOW, seen=seen)
    signing.verify(signing.sign(SECRET, "new", BODY, now=NOW + 700), BODY, SECRET, now=NOW + 700, seen=seen)
    assert set(seen) == {"new"}


def test_a_signature_among_several_is_accepted_during_a_secret_rotation() -> None:
    headers = signing.sign(SECRET, "e-1", BODY, now=NOW)
    old = signing.signature("the-previous-secret-of-32-characters", "e-1", NOW, BODY)
    headers["webhook-signature"] = f"{old} {headers['webhook-signature']}"
    assert signing.verify(headers, BODY, SECRET, now=NOW) == "e-1"


def test_standard_webhooks_own_library_verifies_our_signature() -> None:
    """With a ``whsec_`` secret the deliveries are Standard Webhooks deliveries, checked by its reference
    implementation (which uses the wall clock, so the delivery is signed now)."""
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    headers = signing.sign(secret, "msg-1", BODY)
    assert Webhook(secret).verify(BODY, headers) == {"specversion": "1.0", "id": "e-1"}
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(secret).verify(BODY + b" ", headers)
