"""Basic authentication: several credential pairs, stored as scrypt hashes, compared in constant time."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import broker.security.basic as basic
from broker.app import build_runtime, create_app
from broker.cli import main
from broker.domain.errors import Unauthorized
from broker.security.basic import BasicAuthenticator, BasicCredentials, PasswordHash, hash_password
from tests.conftest import auth_header, make_settings

V = {"X-Broker-API-Version": "2.17"}


def status(client: Any, user: str, password: str) -> int:
    return client.get("/v2/catalog", headers={**V, "Authorization": auth_header(user, password)}).status_code


def test_password_hash_format_and_check() -> None:
    encoded = hash_password("correct horse battery staple")
    assert encoded.startswith("scrypt$16384$8$1$")
    assert "correct horse" not in encoded
    parsed = PasswordHash.parse(encoded)
    assert parsed.matches("correct horse battery staple")
    assert not parsed.matches("correct horse battery stapl")
    assert hash_password("same") != hash_password("same")  # random salt


def test_authenticator_keeps_no_plaintext_and_compares_in_constant_time(monkeypatch: Any) -> None:
    auth = BasicAuthenticator(BasicCredentials.from_plaintext("alice", "alice-password-1"))
    assert "alice-password-1" not in repr(vars(auth))
    calls: list[int] = []
    real = basic.hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(basic.hmac, "compare_digest", counting)
    with pytest.raises(Unauthorized):
        auth.authenticate(auth_header("alice", "wrong-password"))
    with pytest.raises(Unauthorized):
        auth.authenticate(auth_header("mallory", "alice-password-1"))
    assert auth.authenticate(auth_header("alice", "alice-password-1")) == "basic:alice"
    assert len(calls) >= 5  # usernames and derived keys go through compare_digest, never ==


def test_several_credential_pairs_from_a_file_with_hashes(tmp_path: Path) -> None:
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps([
        {"username": "cf", "password_hash": hash_password("cf-platform-password")},
        {"username": "k8s", "password_hash": hash_password("k8s-platform-password")},
        {"username": "legacy", "password": "plaintext-entry-still-read"},
    ]))
    rt = build_runtime(make_settings(tmp_path, username=None, password=None, credentials_file=str(creds)))
    try:
        client = create_app(runtime=rt).test_client()
        assert status(client, "cf", "cf-platform-password") == 200
        assert status(client, "k8s", "k8s-platform-password") == 200
        assert status(client, "legacy", "plaintext-entry-still-read") == 200
        assert status(client, "cf", "k8s-platform-password") == 401
        assert status(client, "nobody", "cf-platform-password") == 401
        assert not (tmp_path / "credentials.json").exists()  # configured credentials: nothing generated
    finally:
        rt.store.engine.dispose()


def test_environment_pair_and_file_pairs_work_together(tmp_path: Path) -> None:
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"username": "second", "password_hash": hash_password("second-password-x")}))
    rt = build_runtime(make_settings(tmp_path, credentials_file=str(creds)))
    try:
        client = create_app(runtime=rt).test_client()
        assert status(client, "platform", "s3cret-platform-pass") == 200
        assert status(client, "second", "second-password-x") == 200
    finally:
        rt.store.engine.dispose()


@pytest.mark.parametrize("content", ["not json", "[]", '[{"username": "x"}]', '[{"password_hash": "scrypt$1"}]',
                                     '{"username": "x", "password_hash": "md5$abc"}'])
def test_a_broken_credentials_file_stops_start_up(tmp_path: Path, content: str) -> None:
    creds = tmp_path / "creds.json"
    creds.write_text(content)
    with pytest.raises(SystemExit, match="DRBROKER_CREDENTIALS_FILE"):
        build_runtime(make_settings(tmp_path, username=None, password=None, credentials_file=str(creds)))


def test_generated_credentials_file_holds_only_a_hash_and_the_password_is_given_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, username=None, password=None)
    rt = build_runtime(settings)
    try:
        password = rt.generated_password
        assert password and rt.generated_username == "broker"
        path = tmp_path / "credentials.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        doc = json.loads(path.read_text())
        assert set(doc) == {"username", "password_hash"} and password not in path.read_text()
        assert status(create_app(runtime=rt).test_client(), "broker", password) == 200
    finally:
        rt.store.engine.dispose()
    again = build_runtime(settings)
    try:
        assert again.generated_password is None  # not shown a second time
        assert status(create_app(runtime=again).test_client(), "broker", password) == 200
    finally:
        again.store.engine.dispose()


def test_credentials_hash_command_makes_a_usable_entry(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["credentials", "hash", "--username", "cf"], input="a-long-platform-pass\n")
    assert out.exit_code == 0, out.output
    entry = json.loads(out.output)
    assert entry["username"] == "cf" and "a-long-platform-pass" not in out.output
    (tmp_path / "c.json").write_text(json.dumps([entry]))
    rt = build_runtime(make_settings(tmp_path, username=None, password=None,
                                     credentials_file=str(tmp_path / "c.json")))
    try:
        assert status(create_app(runtime=rt).test_client(), "cf", "a-long-platform-pass") == 200
    finally:
        rt.store.engine.dispose()
    short = CliRunner().invoke(main, ["credentials", "hash"], input="short\n")
    assert short.exit_code != 0


def test_a_success_is_remembered_for_five_minutes_failures_never_and_the_cache_is_bounded(monkeypatch: Any) -> None:
    from cachetools import TTLCache

    assert (basic._VERIFIED.maxsize, basic._VERIFIED.ttl) == (1024, 300.0)
    now = [1000.0]
    monkeypatch.setattr(basic, "_VERIFIED", TTLCache(maxsize=2, ttl=basic._VERIFIED_SECONDS, timer=lambda: now[0]))
    derived: list[str] = []
    real = basic.PasswordHash.derive
    monkeypatch.setattr(basic.PasswordHash, "derive", lambda self, pw: derived.append(pw) or real(self, pw))
    auth = BasicAuthenticator(*(BasicCredentials.from_plaintext(u, f"{u}-password") for u in ("al", "bo", "cy")))

    def ok(user: str) -> None:
        assert auth.authenticate(auth_header(user, f"{user}-password")) == f"basic:{user}"

    ok("al")
    ok("al")
    assert derived == ["al-password"]  # the second check hit the cache: no scrypt
    for _ in range(2):
        with pytest.raises(Unauthorized):
            auth.authenticate(auth_header("al", "wrong"))
    assert derived.count("wrong") == 2  # failures are never remembered
    now[0] += basic._VERIFIED_SECONDS + 1
    ok("al")
    assert derived.count("al-password") == 2  # expired: checked again
    ok("bo")
    ok("cy")  # the cache holds two: "al", the least recently used, is evicted
    ok("al")
    assert derived.count("al-password") == 3
