"""bearer-CRN: IAM JWTs verified (RS256) against a JWKS served by a real loopback HTTP server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from broker.app import Runtime, build_runtime, create_app
from broker.security.bearer import JwksCache
from tests.conftest import auth_header, make_settings
from tests.security.conftest import BROKER_CRN, FakeIam

V = {"X-Broker-API-Version": "2.17"}


def _runtime(tmp_path: Path, iam: FakeIam, auth: tuple[str, ...]) -> Runtime:
    return build_runtime(make_settings(tmp_path, auth=auth, iam_url=iam.url, broker_crn=BROKER_CRN))


@pytest.fixture
def bearer_client(tmp_path: Path, iam: FakeIam) -> Iterator[FlaskClient]:
    rt = _runtime(tmp_path, iam, ("bearer-crn",))
    yield create_app(runtime=rt).test_client()
    rt.store.engine.dispose()


def catalog(client: FlaskClient, token: str | None = None, **headers: str) -> Any:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.get("/v2/catalog", headers={**V, **headers})


def test_valid_iam_token_for_this_broker_passes(bearer_client: FlaskClient, iam: FakeIam) -> None:
    r = catalog(bearer_client, iam.token())
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.json["services"]


def test_no_credentials_is_401_with_a_bearer_challenge(bearer_client: FlaskClient) -> None:
    r = catalog(bearer_client)
    assert r.status_code == 401
    assert r.json["error"] == "Unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_basic_credentials_when_only_bearer_is_enabled_is_401(bearer_client: FlaskClient) -> None:
    assert catalog(bearer_client, Authorization=auth_header()).status_code == 401


def _assert_403(response: Any) -> None:
    assert response.status_code == 403, response.get_data(as_text=True)
    assert response.json["error"] == "Forbidden"
    assert response.json["description"].startswith("bearer token")


def test_wrong_signature_is_403(bearer_client: FlaskClient, iam: FakeIam) -> None:
    # Signed by a key IAM never published, while naming IAM's key id.
    iam.add_key("impostor", publish=False)
    genuine_header = iam.token().split(".")[0]
    _h, payload, signature = iam.token("impostor").split(".")
    _assert_403(catalog(bearer_client, f"{genuine_header}.{payload}.{signature}"))
    # A genuine token whose payload was swapped after signing (another subject).
    h, _p, s = iam.token().split(".")
    other_payload = iam.token(sub="crn-someone-else").split(".")[1]
    _assert_403(catalog(bearer_client, f"{h}.{other_payload}.{s}"))
    # A genuine token with its signature truncated.
    token = iam.token()
    _assert_403(catalog(bearer_client, token[:-8]))


def test_token_for_another_broker_is_403(bearer_client: FlaskClient, iam: FakeIam) -> None:
    other = BROKER_CRN.replace("1f4a9711", "99999999")
    _assert_403(catalog(bearer_client, iam.token(id=f"crn-{other}", iam_id=f"crn-{other}")))
    _assert_403(catalog(bearer_client, iam.token(id=BROKER_CRN)))  # without the "crn-" prefix
    _assert_403(catalog(bearer_client, iam.token(id=None)))


def test_expired_token_is_403(bearer_client: FlaskClient, iam: FakeIam) -> None:
    now = int(time.time())
    _assert_403(catalog(bearer_client, iam.token(iat=now - 7200, exp=now - 120)))


def test_small_clock_skew_is_tolerated(bearer_client: FlaskClient, iam: FakeIam) -> None:
    now = int(time.time())
    assert catalog(bearer_client, iam.token(iat=now - 3600, exp=now - 5)).status_code == 200
    assert catalog(bearer_client, iam.token(iat=now + 5)).status_code == 200


def test_token_issued_in_the_future_is_403(bearer_client: FlaskClient, iam: FakeIam) -> None:
    _assert_403(catalog(bearer_client, iam.token(iat=int(time.time()) + 600)))


def test_token_from_another_issuer_is_403(bearer_client: FlaskClient, iam: FakeIam) -> None:
    _assert_403(catalog(bearer_client, iam.token(iss="https://iam.example.com/identity")))
    _assert_403(catalog(bearer_client, iam.token(iss=None)))


def test_alg_none_is_403(bearer_client: FlaskClient, iam: FakeIam) -> None:
    token = FakeIam.unsigned({"alg": "none", "typ": "JWT", "kid": "iam-key-1"}, iam.claims())
    _assert_403(catalog(bearer_client, token))
    _assert_403(catalog(bearer_client, FakeIam.unsigned({"alg": "None", "kid": "iam-key-1"}, iam.claims())))


def test_hs256_signed_with_the_public_key_is_403(bearer_client: FlaskClient, iam: FakeIam) -> None:
    # The classic confusion: HMAC "signed" with IAM's public key, which anyone can download.
    for secret in (iam.public_pem("iam-key-1"), iam.public_pem("iam-key-1").strip()):
        token = FakeIam.unsigned({"alg": "HS256", "typ": "JWT", "kid": "iam-key-1"}, iam.claims(), secret)
        _assert_403(catalog(bearer_client, token))


def test_garbage_bearer_token_is_403(bearer_client: FlaskClient) -> None:
    for token in ("not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30."):
        _assert_403(catalog(bearer_client, token))


def test_key_rotation_new_kid_is_fetched_and_unpublished_kid_is_refused(bearer_client: FlaskClient,
                                                                       iam: FakeIam) -> None:
    old_token = iam.token("iam-key-1")
    assert catalog(bearer_client, old_token).status_code == 200
    fetched = iam.requests
    # Cached: more requests do not fetch the key set again.
    assert catalog(bearer_client, old_token).status_code == 200
    assert iam.requests == fetched

    iam.rotate("iam-key-2")
    new_token = iam.token("iam-key-2")
    # Refetches on an unknown kid are rate-limited (see the next test); let that interval pass here.
    authenticator = bearer_client.application.extensions["drbroker"].authenticators[0]
    authenticator.jwks.refetch_interval = 0.0
    # An unknown kid makes the broker fetch the key set again, and the new key verifies.
    assert catalog(bearer_client, new_token).status_code == 200
    assert iam.requests == fetched + 1
    # The old key is no longer published: a token signed with it is refused, however valid it looks.
    _assert_403(catalog(bearer_client, old_token))


def test_made_up_kids_do_not_make_the_broker_hammer_iam(bearer_client: FlaskClient, iam: FakeIam) -> None:
    assert catalog(bearer_client, iam.token()).status_code == 200
    before = iam.requests
    iam.add_key("never-published", publish=False)
    for _ in range(20):
        _assert_403(catalog(bearer_client, iam.token("never-published")))
    assert iam.requests - before <= 1


def test_every_route_but_healthz_requires_authentication(bearer_client: FlaskClient, iam: FakeIam) -> None:
    app = bearer_client.application
    sample = {"instance_id": "i-1", "binding_id": "b-1"}
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.build(sample, append_unknown=False)[1] if rule.arguments else rule.rule
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            r = bearer_client.open(path, method=method, headers=V, data="{}", content_type="application/json")
            if rule.endpoint == "health.healthz":
                assert r.status_code == 200
            else:
                assert r.status_code == 401, (method, path, r.status_code)
                assert "WWW-Authenticate" in r.headers
                bad = bearer_client.open(path, method=method, data="{}", content_type="application/json",
                                         headers={**V, "Authorization": "Bearer forged.token.value"})
                assert bad.status_code == 403, (method, path, bad.status_code)
            checked += 1
    assert checked >= 12


def test_basic_and_bearer_together(tmp_path: Path, iam: FakeIam) -> None:
    rt = _runtime(tmp_path, iam, ("basic", "bearer-crn"))
    try:
        client = create_app(runtime=rt).test_client()
        assert catalog(client, iam.token()).status_code == 200
        assert catalog(client, Authorization=auth_header()).status_code == 200
        assert catalog(client, Authorization=auth_header(password="wrong")).status_code == 401
        _assert_403(catalog(client, iam.token(id="crn-someone-else")))
        r = catalog(client)
        assert r.status_code == 401
        assert "Basic" in r.headers["WWW-Authenticate"] and "Bearer" in r.headers["WWW-Authenticate"]
    finally:
        rt.store.engine.dispose()


def test_bearer_crn_without_a_broker_crn_does_not_start(tmp_path: Path, iam: FakeIam) -> None:
    with pytest.raises(SystemExit, match="DRBROKER_BROKER_CRN"):
        build_runtime(make_settings(tmp_path, auth=("bearer-crn",), iam_url=iam.url, broker_crn=None))


def test_unknown_scheme_does_not_start(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown scheme"):
        build_runtime(make_settings(tmp_path, auth=("basic", "kerberos")))


def test_iam_unreachable_is_403_not_500(tmp_path: Path) -> None:
    dead = FakeIam()
    dead.add_key("iam-key-1")
    url, token = dead.url, dead.token()
    dead.close()
    rt = build_runtime(make_settings(tmp_path, auth=("bearer-crn",), iam_url=url, broker_crn=BROKER_CRN))
    try:
        r = catalog(create_app(runtime=rt).test_client(), token)
        assert r.status_code == 403
        assert "unavailable" in r.json["description"]
    finally:
        rt.store.engine.dispose()


def _in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def _wait_for_requests(iam: FakeIam, count: int) -> None:
    deadline = time.monotonic() + 10
    while iam.requests < count:
        assert time.monotonic() < deadline, "the key set was not requested"
        time.sleep(0.01)


def test_a_known_kid_never_waits_on_a_refetch_for_an_unknown_kid(bearer_client: FlaskClient, iam: FakeIam) -> None:
    assert catalog(bearer_client, iam.token()).status_code == 200  # the key set is cached
    authenticator = bearer_client.application.extensions["drbroker"].authenticators[0]
    authenticator.jwks.refetch_interval = 0.0
    iam.add_key("not-yet-published", publish=False)
    before, iam.delay = iam.requests, 2.0  # IAM answers slowly from now on
    slow, statuses = _in_thread(lambda: catalog(bearer_client, iam.token("not-yet-published")).status_code)
    _wait_for_requests(iam, before + 1)  # the unknown kid's refetch is under way
    started = time.monotonic()
    assert catalog(bearer_client, iam.token()).status_code == 200
    assert time.monotonic() - started < 1.0  # answered from the cache, not behind the refetch
    slow.join(10)
    assert statuses == [403]


def test_a_known_kid_is_answered_from_a_stale_set_while_another_request_refreshes_it(iam: FakeIam) -> None:
    jwks = JwksCache(f"{iam.url}/identity/keys", ttl=0.2, refetch_interval=0.0)
    assert jwks.key("iam-key-1") is not None and jwks.fetches == 1
    time.sleep(0.3)  # the cached set is past its ttl
    before, iam.delay = iam.requests, 2.0
    slow, keys = _in_thread(lambda: jwks.key("unknown-kid"))
    _wait_for_requests(iam, before + 1)
    started = time.monotonic()
    assert jwks.key("iam-key-1") is not None
    assert time.monotonic() - started < 1.0
    slow.join(10)
    assert keys == [None] and jwks.fetches == 2
    iam.delay = 0.0
    assert jwks.key("iam-key-1") is not None and jwks.fetches == 2  # fresh again: no fetch


def test_a_failed_refresh_keeps_the_keys_fetched_before(iam: FakeIam) -> None:
    jwks = JwksCache(f"{iam.url}/identity/keys", ttl=0.2, refetch_interval=0.0)
    assert jwks.key("iam-key-1") is not None
    iam.close()
    time.sleep(0.3)
    assert jwks.key("iam-key-1") is not None  # IAM is gone: the stale key still verifies
    assert jwks.key("unknown-kid") is None
