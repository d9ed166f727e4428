"""Signed dashboard links (itsdangerous ``Signer``): a link opens its own instance until it expires; a tampered,
expired or malformed one is refused with 403 (an expired one with a page that says so), never a 500, and never
with the basic-auth challenge a customer could not answer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
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
def test_the_dashboard_answers_a_malformed_or_forged_link_with_403(app: Flask, query: str) -> None:
    r = app.test_client().get(f"/dashboard/instances/dash-1?{query}", headers={"Accept": "application/json"})
    assert r.status_code == 403, r.get_data(as_text=True)
    assert r.json["error"] == "LinkInvalid" and "WWW-Authenticate" not in r.headers


def test_the_dashboard_opens_with_a_valid_link(app: Flask) -> None:
    client = app.test_client()
    secret = app.extensions["drbroker"].service.dashboard_links.secret()
    query = links.signed_query(secret, "no-such-instance", 600)
    assert client.get(f"/dashboard/instances/no-such-instance?{query}").status_code == 404  # past the auth
    expired = links.signed_query(secret, "no-such-instance", -10, now=time.time())
    r = client.get(f"/dashboard/instances/no-such-instance?{expired}", headers={"Accept": "text/html"})
    assert r.status_code == 403 and "This link has expired" in r.get_data(as_text=True)
    assert "WWW-Authenticate" not in r.headers


# --- check: expired versus invalid, and the lifetime cap ---------------------------------------------------------

def _q(instance_id: str, ttl: int, now: float, secret: bytes = SECRET) -> tuple[str, str]:
    q = parse_qs(links.signed_query(secret, instance_id, ttl, now=now))
    return q["exp"][0], q["sig"][0]


def test_only_a_link_this_broker_signed_can_be_expired() -> None:
    exp, sig = _q("dash-1", 600, 1000.0)
    assert links.check(SECRET, "dash-1", exp, sig, now=1599.0) is links.LinkCheck.VALID
    assert links.check(SECRET, "dash-1", exp, sig, now=1601.0) is links.LinkCheck.EXPIRED
    assert links.check(b"another secret", "dash-1", exp, sig, now=1601.0) is links.LinkCheck.INVALID
    assert links.check(SECRET, "dash-2", exp, sig, now=1601.0) is links.LinkCheck.INVALID
    assert links.check(SECRET, "dash-1", "1599", sig, now=1601.0) is links.LinkCheck.INVALID


def test_a_link_longer_than_the_maximum_does_not_open() -> None:
    exp, sig = _q("dash-1", 10 * 86400, 1000.0)
    assert links.check(SECRET, "dash-1", exp, sig, now=1000.0) is links.LinkCheck.VALID  # no cap given
    assert links.check(SECRET, "dash-1", exp, sig, now=1000.0, max_seconds=86400) is links.LinkCheck.INVALID
    # another replica's clock may be a little behind the one that signed a full-length link
    exp, sig = _q("dash-1", 86400, 1000.0 + links.CLOCK_SKEW_SECONDS)
    assert links.check(SECRET, "dash-1", exp, sig, now=1000.0, max_seconds=86400) is links.LinkCheck.VALID


def test_dashboard_links_sign_with_the_maximum_and_refuse_more(tmp_path: Path) -> None:
    issuer = links.DashboardLinks(tmp_path, "configured-secret", max_seconds=600)
    link = issuer.sign("https://dr.example.com/dashboard/instances/dash-1", "dash-1", now=1000.0)
    q = parse_qs(link.split("?", 1)[1])
    assert q["exp"] == ["1600"]  # no lifetime asked: the maximum
    assert issuer.check("dash-1", q["exp"][0], q["sig"][0], now=1500.0) is links.LinkCheck.VALID
    assert issuer.lifetime(60) == 60
    with pytest.raises(links.LinkLifetimeError, match=r"at most 600 s \(DRBROKER_DASHBOARD_LINK_MAX_SECONDS\)"):
        issuer.lifetime(601)
    with pytest.raises(links.LinkLifetimeError, match="must be a positive"):
        links.DashboardLinks(tmp_path, "configured-secret", max_seconds=0)
    assert not (tmp_path / links.KEY_FILE).exists()  # a configured secret writes no key file


def test_a_group_readable_dashboard_key_stops_start_up(tmp_path: Path) -> None:
    from broker.app import build_runtime, create_app
    from tests.conftest import make_settings

    runtime = build_runtime(make_settings(tmp_path))
    key = runtime.settings.state_dir / links.KEY_FILE
    key.write_text("a-key")
    key.chmod(0o644)
    with pytest.raises(SystemExit, match="chmod"):  # one line at start, not a 500 on every provision
        create_app(runtime=runtime)
    key.chmod(0o600)
    assert create_app(runtime=runtime).extensions["drbroker"].service.dashboard_links.secret() == b"a-key"
