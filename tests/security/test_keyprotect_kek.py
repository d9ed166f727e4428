"""The Key Protect KEK against the fake IBM Cloud (a real HTTP server on loopback speaking Key Protect's
documented wrap/unwrap/rotate shapes and IAM's token endpoint): never against IBM Cloud itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from broker.app import build_runtime, create_app
from broker.cli import main
from broker.fakecloud.state import DEMO_KMS_INSTANCE_ID
from broker.security.envelope import Envelope, SecretsError
from broker.security.keyprotect import KeyProtectKEK
from broker.store import db as store_db
from broker.store.sealed import count_by_kek
from tests.conftest import KSYS_PARAMS, KSYS_PLAN, OSB, make_settings
from tests.ibmfake import FakeAdmin, create_root_key, fake_cloud


@pytest.fixture
def kp() -> Iterator[tuple[str, str]]:
    """(fake cloud URL, id of a root key created in it through the REST API)."""
    with fake_cloud() as server:
        yield server.url, create_root_key(server.url, "kek-test-apikey")


def kek(kp: tuple[str, str]) -> KeyProtectKEK:
    url, key_id = kp
    return KeyProtectKEK(url=url, instance_id=DEMO_KMS_INSTANCE_ID, root_key_id=key_id, apikey="kek-test-apikey",
                         iam_url=url)


def test_key_protect_wraps_and_unwraps_data_keys(kp: tuple[str, str]) -> None:
    env = Envelope(kek(kp))
    sealed = env.seal('{"password": "kp-sealed"}', "drbroker\x1finstances\x1fparameters\x1fi-1")
    assert Envelope.kek_id(sealed).startswith(f"kp:{kp[1]}:")
    assert env.unseal(sealed, "drbroker\x1finstances\x1fparameters\x1fi-1") == '{"password": "kp-sealed"}'
    with pytest.raises(SecretsError, match="HTTP 422"):  # Key Protect refuses the wrong AAD
        env.unseal(sealed, "drbroker\x1finstances\x1fparameters\x1fi-2")


def test_rotation_moves_data_keys_to_the_new_key_version(kp: tuple[str, str]) -> None:
    k = kek(kp)
    env = Envelope(k)
    before = env.seal("s", "r")
    old = Envelope.kek_id(before)
    new = k.begin_rotation()
    assert new != old and k.is_current(new) and not k.is_current(old)
    assert env.unseal(before, "r") == "s"  # older versions still unwrap
    rewrapped = env.rewrap(before, "r")
    assert rewrapped is not None and Envelope.kek_id(rewrapped) == new
    assert env.unseal(rewrapped, "r") == "s"
    assert k.finish_rotation() == []


def test_a_broker_with_a_key_protect_kek_seals_and_rotates(kp: tuple[str, str], tmp_path: Path,
                                                          monkeypatch: Any) -> None:
    url, key_id = kp
    settings = make_settings(tmp_path, kek="keyprotect", kek_keyprotect_url=url, kek_instance_id=DEMO_KMS_INSTANCE_ID,
                             kek_root_key_id=key_id, kek_apikey="kek-test-apikey", iam_url=url)
    rt = build_runtime(settings)
    rt.worker.start()
    try:
        osb = OSB(create_app(runtime=rt).test_client())
        osb.ready("kp-1", KSYS_PLAN, {**KSYS_PARAMS, "ibmcloud_api_key": "customer-key-in-kp-mode"})
        assert osb.get("/v2/service_instances/kp-1").status_code == 200
    finally:
        rt.worker.stop(timeout=10)
        rt.store.engine.dispose()
    assert not (tmp_path / "kek.json").exists()  # no local key file in this mode
    engine = store_db.make_engine(settings.database_url)
    (before,) = count_by_kek(engine, Envelope.kek_id)
    assert before.startswith(f"kp:{key_id}:")
    for name, value in {"DRBROKER_DATABASE_URL": settings.database_url, "DRBROKER_KEK": "keyprotect",
                        "DRBROKER_KEK_KEYPROTECT_URL": url, "DRBROKER_KEK_INSTANCE_ID": DEMO_KMS_INSTANCE_ID,
                        "DRBROKER_KEK_ROOT_KEY_ID": key_id, "DRBROKER_KEK_APIKEY": "kek-test-apikey",
                        "DRBROKER_IAM_URL": url}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["keys", "rotate", "--grace", "0"])
    assert result.exit_code == 0, result.output
    (after,) = count_by_kek(engine, Envelope.kek_id)
    assert after.startswith(f"kp:{key_id}:") and after != before
    engine.dispose()


def _hits(admin: FakeAdmin) -> list[tuple[int, int]]:
    """(requests a fault answered, answers it has left), per injected fault."""
    return [(f["hits"], f["count"]) for f in admin.faults()]


def test_a_transient_key_protect_failure_is_retried_and_the_operation_succeeds(kp: tuple[str, str]) -> None:
    admin = FakeAdmin(kp[0])
    k = kek(kp)
    admin.fault(service="kms", method="POST", path=r"/actions/wrap$", status=503, count=1)
    kek_id, wrapped = k.wrap(b"k" * 32, b"aad")
    admin.fault(service="kms", method="POST", path=r"/actions/unwrap$", status=429, retry_after=0.3, count=1)
    started = time.monotonic()
    assert k.unwrap(kek_id, wrapped, b"aad") == b"k" * 32
    assert time.monotonic() - started >= 0.3  # Retry-After honoured
    admin.fault(service="kms", method="POST", path=r"/actions/rotate$", status=502, count=2)
    assert k.begin_rotation() != kek_id
    assert _hits(admin) == [(1, 0), (1, 0), (2, 0)]  # each fault answered, then the real answer came


def test_a_permanent_key_protect_refusal_is_not_retried(kp: tuple[str, str]) -> None:
    admin = FakeAdmin(kp[0])
    admin.fault(service="kms", method="POST", path=r"/actions/wrap$", status=403, count=3)
    with pytest.raises(SecretsError, match=r"wrap on key .* failed: HTTP 403"):
        kek(kp).wrap(b"k" * 32, b"aad")
    assert _hits(admin) == [(1, 2)]  # one request: a 403 is an answer, not a hiccup


def test_retries_stop_after_the_last_attempt(kp: tuple[str, str]) -> None:
    admin = FakeAdmin(kp[0])
    admin.fault(service="kms", method="POST", path=r"/actions/wrap$", status=503, count=10)
    k = KeyProtectKEK(url=kp[0], instance_id=DEMO_KMS_INSTANCE_ID, root_key_id=kp[1], apikey="kek-test-apikey",
                      iam_url=kp[0], attempts=3, backoff=0.01)
    with pytest.raises(SecretsError, match="HTTP 503"):
        k.wrap(b"k" * 32, b"aad")
    assert _hits(admin) == [(3, 7)]
