"""Production hardening through the real app: the dashboard's security headers, and a request's ``Host`` that
becomes a ``dashboard_url`` only when trusted (DRBROKER_PUBLIC_URL, DRBROKER_ALLOWED_HOSTS, or loopback)."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from broker.api import dashboard
from broker.api.hosts import host_allowed
from broker.config import Settings
from broker.security.links import load_or_create_secret, signed_query
from tests.api.conftest import page_of
from tests.conftest import GRS_PARAMS, GRS_PLAN, PASSWORD, SERVICE_ID, USER

EXPECTED = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


def _link(b: Any, iid: str = "i-1", ttl: int = 600) -> str:
    settings = b.runtime.settings
    secret = load_or_create_secret(settings.state_dir, settings.dashboard_secret)
    return f"/dashboard/instances/{iid}?{signed_query(secret, iid, ttl)}"


def _assert_hardened(response: Any) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (name, dict(response.headers))
    csp = response.headers.get("Content-Security-Policy") or ""
    directives = {d.split()[0]: d.split()[1:] for d in (x.strip() for x in csp.split(";")) if d}
    assert directives.get("frame-ancestors") == ["'none'"], csp
    assert directives.get("default-src") == ["'none'"], csp
    assert "script-src" not in directives, csp  # no script at all: default-src 'none' forbids it
    assert "'unsafe-inline'" not in csp, csp


def test_a_signed_dashboard_page_carries_the_security_headers(broker) -> None:
    b = broker(ready=True)
    r = b.osb.client.get(_link(b))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.mimetype == "text/html"
    _assert_hardened(r)


@pytest.mark.parametrize("case", ["no-auth", "bad-signature", "expired", "other-instance", "missing-instance"])
def test_a_refused_or_failed_dashboard_answer_carries_them_too(broker, case: str) -> None:
    b = broker(ready=True)
    client = b.osb.client
    if case == "no-auth":
        r = client.get("/dashboard/instances/i-1")
        assert r.status_code == 401
    elif case == "bad-signature":
        # a bad link is refused without the basic-auth challenge a customer could not answer
        r = client.get(_link(b).replace("sig=", "sig=x"))
        assert r.status_code == 403 and "WWW-Authenticate" not in r.headers
    elif case == "expired":
        r = client.get(_link(b, ttl=-1))
        assert r.status_code == 403 and "WWW-Authenticate" not in r.headers
    elif case == "other-instance":
        r = client.get(_link(b).replace("/i-1?", "/i-2?"))
        assert r.status_code == 403
    else:
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        r = client.get("/dashboard/instances/nope", headers={"Authorization": f"Basic {auth}"})
        assert r.status_code == 404
    _assert_hardened(r)


def test_the_csp_admits_exactly_the_pages_inline_style_by_hash(broker) -> None:
    b = broker(ready=True)
    r = b.osb.client.get(_link(b))
    html = r.get_data(as_text=True)
    assert "<script" not in html.lower()
    assert not re.search(r"\son[a-z]+=", html), "an inline event handler would need script-src"
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert len(styles) == 1
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in r.headers["Content-Security-Policy"]
    assert r.headers["Content-Security-Policy"] == dashboard.CONTENT_SECURITY_POLICY


# Host -> dashboard_url ----------------------------------------------------------------------------------------
def _as(host: str) -> dict[str, Any]:
    """The request's Host header (the test client takes it from base_url)."""
    return {"base_url": f"http://{host}/"}


def _put(b: Any, iid: str, host: str) -> Any:
    body = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "parameters": GRS_PARAMS,
            "organization_guid": "org-1", "space_guid": "space-1"}
    return b.osb.put(f"/v2/service_instances/{iid}?accepts_incomplete=true", body, **_as(host))


def _provision(b: Any, iid: str, host: str) -> Any:
    r = _put(b, iid, host)
    assert r.status_code == 202, r.get_data(as_text=True)
    assert b.osb.wait(iid)["state"] == "succeeded"
    return r


def _stored_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.glob("state.db*")))


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8443", "localhost.evil.example"])
def test_an_untrusted_host_never_becomes_a_dashboard_url(broker, caplog: pytest.LogCaptureFixture,
                                                         host: str) -> None:
    b = broker()
    with caplog.at_level(logging.WARNING, logger="broker.api.hosts"):
        r = _provision(b, "evil-1", host)
        # A repeated provision (200 for the existing instance) does not carry it either.
        again = _put(b, "evil-1", host)
    assert again.status_code == 200, again.get_data(as_text=True)
    for answer in (r, again):
        assert "evil.example" not in answer.get_data(as_text=True)
        assert "dashboard_url" not in answer.json
    fetched = b.osb.get("/v2/service_instances/evil-1", **_as(host))
    assert fetched.status_code == 200
    assert "evil.example" not in fetched.get_data(as_text=True)
    assert "dashboard_url" not in fetched.json
    with b.runtime.store.read() as tx:
        inst = tx.get_instance("evil-1")
    assert inst is not None and inst.dashboard_url is None
    warnings = [rec for rec in caplog.records if "DRBROKER_ALLOWED_HOSTS" in rec.getMessage()]
    assert len(warnings) == 1, "warned once, not per request"
    b.runtime.worker.stop(timeout=10)
    assert b"evil.example" not in _stored_bytes(Path(b.runtime.settings.state_dir))


@pytest.mark.parametrize(("host", "url"), [("localhost:8080", "http://localhost:8080"),
                                           ("127.0.0.1:8080", "http://127.0.0.1:8080"),
                                           ("[::1]:8080", "http://[::1]:8080")])
def test_a_loopback_host_is_used_without_configuration(broker, host: str, url: str) -> None:
    b = broker()
    r = _provision(b, "local-1", host)
    assert page_of(r.json["dashboard_url"]) == f"{url}/dashboard/instances/local-1"


def test_an_allowed_host_is_used(broker) -> None:
    b = broker(allowed_hosts=("broker.example",))
    r = _provision(b, "ok-1", "broker.example")
    assert page_of(r.json["dashboard_url"]) == "http://broker.example/dashboard/instances/ok-1"
    fetched = b.osb.get("/v2/service_instances/ok-1")
    assert page_of(fetched.json["dashboard_url"]) == "http://broker.example/dashboard/instances/ok-1"


@pytest.mark.parametrize("host", ["localhost", "broker.example.evil.example", "evil.example"])
def test_with_an_allow_list_other_hosts_are_not_used(broker, host: str) -> None:
    # With an allow-list, loopback is not implied, and a look-alike is refused.
    b = broker(allowed_hosts=("broker.example",))
    r = _provision(b, "no-1", host)
    assert "dashboard_url" not in r.json, (host, r.json)


def test_a_public_url_wins_over_any_host(broker) -> None:
    b = broker(public_url="https://dr.example.com/")
    r = _provision(b, "pub-1", "evil.example")
    assert page_of(r.json["dashboard_url"]) == "https://dr.example.com/dashboard/instances/pub-1"


@pytest.mark.parametrize(("host", "allowed", "ok"), [
    ("localhost", (), True), ("LOCALHOST:5000", (), True), ("127.0.0.1:8080", (), True), ("[::1]:8080", (), True),
    ("[::1]", (), True), ("evil.example", (), False), ("localhost.evil.example", (), False), ("", (), False),
    ("broker.example:8443", ("broker.example",), True), ("broker.example:8443", ("broker.example:443",), False),
    ("broker.example:443", ("broker.example:443",), True), ("localhost", ("broker.example",), False),
])
def test_host_matching(host: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert host_allowed(host, allowed) is ok


def test_the_allow_list_is_read_from_the_environment() -> None:
    s = Settings.from_env(env={"DRBROKER_ALLOWED_HOSTS": " Broker.example , dr.example:8443,,"})
    assert s.allowed_hosts == ("broker.example", "dr.example:8443")
    assert Settings.from_env(env={}).allowed_hosts == ()
