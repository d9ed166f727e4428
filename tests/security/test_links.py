"""Signed dashboard links (itsdangerous ``Signer``): a link opens its own instance until it expires; a tampered,
expired or malformed one is refused with 401, never a 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import parse_qs

import pytest
from flask import Flask

from broker.security import links

SECRET = b"a-dashboard-secret-shared-by-replicas"


def test_a_link_verifies_for_its_instance_until_it_expires() -> None:
    q = parse_qs(links.signed_query(SECRET, "dash-1", 600, now=1000.0))
    exp, sig = q["exp"][0], q["sig"][0]
    assert exp == "1600"
    assert links.verify(SECRET, "dash-1", exp, sig, now=1599.0)
    assert not links.verify(SECRET, "dash-1", exp, sig, now=1601.0)  # expired
    assert not links.verify(SECRET, "dash-2", exp, sig, now=1000.0)  # another instance
    assert not links.verify(SECRET, "dash-1", "1700", sig, now=1000.0)  # expiry moved
    assert not links.verify(b"another secret", "dash-1", exp, sig, now=1000.0)
    assert not links.verify(SECRET, "dash-1", exp, "x" + sig, now=1000.0)


def test_links_issued_before_itsdangerous_still_open() -> None:
    # The signature is HMAC-SHA256(secret, "<instance id>\n<exp>"), URL-safe base64 without padding.
    mac = hmac.new(SECRET, b"dash-1\n4000000000", hashlib.sha256).digest()
    assert links.verify(SECRET, "dash-1", "4000000000", base64.urlsafe_b64encode(mac).decode().rstrip("="))


@pytest.mark.parametrize(("exp", "sig"), [
    ("²", "AAAA"), ("4000000000", "é"), ("-1", "AAAA"), ("1e10", "AAAA"), ("9" * 400, "AAAA"),
    ("4000000000", "!!!"), ("4000000000", "A"), ("", "AAAA"), ("4000000000", ""), (None, None),
])
def test_malformed_values_are_refused_without_an_exception(exp: str | None, sig: str | None) -> None:
    assert links.verify(SECRET, "dash-1", exp, sig) is False


@pytest.mark.parametrize("query", ["exp=%C2%B2&sig=AAAA", "exp=4000000000&sig=%C3%A9", "exp=%FF&sig=%FF",
                                   "exp=4000000000&sig=", "sig=AAAA", "exp=12&sig=AAAA"])
def test_the_dashboard_answers_a_malformed_or_forged_link_with_401(app: Flask, query: str) -> None:
    r = app.test_client().get(f"/dashboard/instances/dash-1?{query}")
    assert r.status_code == 401, r.get_data(as_text=True)


def test_the_dashboard_opens_with_a_valid_link(app: Flask) -> None:
    client = app.test_client()
    with app.app_context():
        from broker.api.dashboard import _secret

        secret = _secret()
    query = links.signed_query(secret, "no-such-instance", 600)
    assert client.get(f"/dashboard/instances/no-such-instance?{query}").status_code == 404  # past the auth
    expired = links.signed_query(secret, "no-such-instance", -10, now=time.time())
    assert client.get(f"/dashboard/instances/no-such-instance?{expired}").status_code == 401
