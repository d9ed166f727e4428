"""Envelope encryption (AES-256-GCM, a data key per record) and ``drbroker keys rotate`` while a broker serves."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import select

from broker.cli import main
from broker.security.envelope import PREFIX, Envelope, LocalKeyFile, SecretsError
from broker.store import db as store_db
from broker.store.repository import Store
from broker.store.sealed import PlainText, aad, count_by_kek
from broker.store.tables import instances
from tests.conftest import GRS_PARAMS, ORCH_DEPLOY, PASSWORD, SERVICE_ID, USER, make_settings
from tests.e2e.conftest import base_env, drbroker_command
from tests.services.conftest import ENCRYPTION

BYOK_PLAN = "3d4e5f6a-7b8c-4d9e-9f0a-2b3c4d5e6f7a"


# --- the envelope ------------------------------------------------------------------------------------

def test_key_file_is_created_0600_and_refused_when_others_can_read_it(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    kek = LocalKeyFile(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kek.active_id().startswith("k-")
    os.chmod(path, 0o644)
    with pytest.raises(SecretsError, match="chmod 600"):
        LocalKeyFile(path)


def test_each_value_gets_its_own_data_key_and_nonce(tmp_path: Path) -> None:
    env = Envelope(LocalKeyFile(tmp_path / "kek.json"))
    a, b = env.seal("same text", "row-1"), env.seal("same text", "row-1")
    da, db_ = json.loads(a[len(PREFIX):]), json.loads(b[len(PREFIX):])
    assert da["w"] != db_["w"] and da["n"] != db_["n"] and da["c"] != db_["c"]
    assert env.unseal(a, "row-1") == env.unseal(b, "row-1") == "same text"
    assert "same text" not in a


def test_a_sealed_value_does_not_open_in_another_row_or_when_tampered(tmp_path: Path) -> None:
    env = Envelope(LocalKeyFile(tmp_path / "kek.json"))
    value = env.seal('{"password": "p"}', aad("instances", "parameters", ("i-1",)))
    with pytest.raises(SecretsError):
        env.unseal(value, aad("instances", "parameters", ("i-2",)))
    doc = json.loads(value[len(PREFIX):])
    flipped = doc["c"][:-4] + ("AAAA" if doc["c"][-4:] != "AAAA" else "BBBB")
    with pytest.raises(SecretsError):
        env.unseal(PREFIX + json.dumps({**doc, "c": flipped}), aad("instances", "parameters", ("i-1",)))
    with pytest.raises(SecretsError, match="not in"):
        env.unseal(PREFIX + json.dumps({**doc, "k": "k-unknown"}), aad("instances", "parameters", ("i-1",)))


def test_rotation_is_seen_by_another_process_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    rotator, server = LocalKeyFile(path), LocalKeyFile(path)
    server_env = Envelope(server)
    before = server_env.seal("s", "r")
    new = rotator.begin_rotation()
    # The server's next wrap uses the new key; what it sealed before still opens (old key still in the file).
    after = server_env.seal("t", "r")
    assert Envelope.kek_id(after) == new != Envelope.kek_id(before)
    assert server_env.unseal(before, "r") == "s"
    # Re-wrap under the new key keeps the body, then the old key can go.
    rewrapped = Envelope(rotator).rewrap(before, "r")
    assert rewrapped is not None and Envelope.kek_id(rewrapped) == new
    assert json.loads(rewrapped[len(PREFIX):])["c"] == json.loads(before[len(PREFIX):])["c"]
    assert rotator.finish_rotation() == [Envelope.kek_id(before)]
    assert server_env.unseal(rewrapped, "r") == "s"
    assert server.key_ids() == [new]



class CountingKek:
    """A key file that counts its unwraps: each one is a value opened rather than found in the cache."""

    def __init__(self, inner: LocalKeyFile) -> None:
        self.inner = inner
        self.name = inner.name
        self.unwraps = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        self.unwraps += 1
        return self.inner.unwrap(kek_id, wrapped, aad)


def _tampered(value: str) -> str:
    """The value with one character of its ciphertext changed (the first: it carries a whole byte's top bits,
    where a changed last character might only touch base64 padding bits)."""
    doc = json.loads(value[len(PREFIX):])
    c = doc["c"]
    return PREFIX + json.dumps({**doc, "c": ("B" if c[0] == "A" else "A") + c[1:]}, separators=(",", ":"))


def test_a_value_opened_once_opens_again_from_the_cache(tmp_path: Path) -> None:
    kek = CountingKek(LocalKeyFile(tmp_path / "kek.json"))
    env = Envelope(kek)
    row = aad("instances", "parameters", ("i-1",))
    value = env.seal('{"ibmcloud_api_key": "k-1"}', row)
    assert env.unseal(value, row) == '{"ibmcloud_api_key": "k-1"}'
    assert env.unseal(value, row) == '{"ibmcloud_api_key": "k-1"}'
    assert kek.unwraps == 1, "the second read should not unwrap the data key again"
    # Without a cache every read unwraps: the count above measures the cache, not the key file.
    uncached = Envelope(kek, cache_size=0)
    uncached.unseal(value, row)
    uncached.unseal(value, row)
    assert kek.unwraps == 3


def test_a_tampered_value_is_refused_after_the_original_was_opened_and_cached(tmp_path: Path) -> None:
    env = Envelope(LocalKeyFile(tmp_path / "kek.json"))
    row = aad("bindings", "credentials", ("i-1", "b-1"))
    value = env.seal('{"iam": {"apikey": "k-1"}}', row)
    assert env.unseal(value, row) == '{"iam": {"apikey": "k-1"}}'
    tampered = _tampered(value)
    assert tampered != value
    for _ in range(2):  # a refusal is not remembered as an answer either
        with pytest.raises(SecretsError, match="wrong record or tampered"):
            env.unseal(tampered, row)
    assert env.unseal(value, row) == '{"iam": {"apikey": "k-1"}}'


def test_a_cached_value_does_not_open_under_another_aad(tmp_path: Path) -> None:
    env = Envelope(LocalKeyFile(tmp_path / "kek.json"))
    mine, theirs = aad("instances", "parameters", ("i-1",)), aad("instances", "parameters", ("i-2",))
    value = env.seal('{"password": "p"}', mine)
    assert env.unseal(value, mine) == '{"password": "p"}'
    with pytest.raises(SecretsError):
        env.unseal(value, theirs)
    with pytest.raises(SecretsError):
        env.unseal(value, aad("instances", "context", ("i-1",)))
    assert env.unseal(value, mine) == '{"password": "p"}'


def test_a_value_rewrapped_after_its_original_was_cached_opens_under_the_new_key(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    rotator, server = LocalKeyFile(path), CountingKek(LocalKeyFile(path))
    server_env = Envelope(server)
    row = aad("instances", "parameters", ("i-1",))
    before = server_env.seal("secret", row)
    assert server_env.unseal(before, row) == "secret"
    new = rotator.begin_rotation()
    rewrapped = Envelope(rotator).rewrap(before, row)
    assert rewrapped is not None and rewrapped != before and Envelope.kek_id(rewrapped) == new
    assert rotator.finish_rotation() == [Envelope.kek_id(before)]
    unwraps = server.unwraps
    assert server_env.unseal(rewrapped, row) == "secret"
    assert server.unwraps == unwraps + 1, "the re-wrapped value is opened with the new key, not found cached"
    assert Envelope(LocalKeyFile(path)).unseal(rewrapped, row) == "secret"
    with pytest.raises(SecretsError):
        server_env.unseal(_tampered(rewrapped), row)

# --- drbroker keys rotate ----------------------------------------------------------------------------

def test_rotate_seals_values_written_before_encryption_existed(tmp_path: Path, monkeypatch: Any) -> None:
    settings = make_settings(tmp_path)
    engine = store_db.make_engine(settings.database_url)
    store_db.upgrade(engine)
    legacy = Store(engine, PlainText())
    from broker.domain.models import Instance, InstanceState

    with legacy.write() as tx:
        tx.insert_instance(Instance(
            id="old-1", service_id=SERVICE_ID, plan_id="p", state=InstanceState.READY,
            parameters={"ibmcloud_api_key": "legacy-plaintext-key"}, context={}, organization_guid=None,
            space_guid=None, maintenance_version=None, dashboard_url=None, request_hash="h", enabled=True,
            last_active=None, created_at=1.0, updated_at=1.0))
    monkeypatch.setenv("DRBROKER_DATABASE_URL", settings.database_url)
    result = CliRunner().invoke(main, ["keys", "rotate", "--grace", "0"])
    assert result.exit_code == 0, result.output
    assert "2 plaintext value(s) sealed" in result.output  # the parameters and the request digest
    with engine.connect() as conn:
        value, digest = conn.execute(select(instances.c.parameters, instances.c.request_hash)).one()
    assert value.startswith(PREFIX) and "legacy-plaintext-key" not in value
    env = Envelope(LocalKeyFile(settings.kek_path))
    assert json.loads(env.unseal(value, aad("instances", "parameters", ("old-1",)))) == \
        {"ibmcloud_api_key": "legacy-plaintext-key"}
    assert digest.startswith(PREFIX) and env.unseal(digest, aad("instances", "request_hash", ("old-1",))) == "h"
    engine.dispose()


def test_keys_rotate_rewraps_every_record_while_the_broker_serves(tmp_path: Path, serve: Any) -> None:
    db = tmp_path / "state.db"
    server = serve(db, DRBROKER_SIM_STEP_SECONDS="0")
    s = requests.Session()
    s.auth = (USER, PASSWORD)
    s.headers["X-Broker-API-Version"] = "2.17"

    def provision(iid: str, volumes: list[str]) -> None:
        r = s.put(f"{server.url}/v2/service_instances/{iid}?accepts_incomplete=true", timeout=10, json={
            "service_id": SERVICE_ID, "plan_id": BYOK_PLAN, "organization_guid": "o", "space_guid": "s",
            "parameters": {**GRS_PARAMS, "protected_volumes": volumes, "ibmcloud_api_key": f"key-of-{iid}",
                           "orchestrator": {**ORCH_DEPLOY, "name": "ksys", "password": "Rotate-pass-1"},
                           "encryption": dict(ENCRYPTION)}})
        assert r.status_code == 202, r.text
        for _ in range(600):
            if s.get(f"{server.url}/v2/service_instances/{iid}/last_operation", timeout=10).json()["state"] \
                    != "in progress":
                return
        raise AssertionError(f"{iid} did not finish")

    for n in range(3):
        provision(f"rot-{n}", [f"vol-bulk-{n * 2 + 1:03d}", f"vol-bulk-{n * 2 + 2:03d}"])
        r = s.put(f"{server.url}/v2/service_instances/rot-{n}/service_bindings/b-{n}", timeout=30,
                  json={"service_id": SERVICE_ID, "plan_id": BYOK_PLAN})
        assert r.status_code == 201, r.text
    kek_path = tmp_path / "kek.json"
    old_kid = json.loads(kek_path.read_text())["active"]

    # Requests keep coming (reads and writes) during the rotation; none may fail.
    failures: list[str] = []
    stop = threading.Event()
    counts = {"requests": 0}

    def traffic() -> None:
        c = requests.Session()
        c.auth, c.headers["X-Broker-API-Version"] = (USER, PASSWORD), "2.17"
        i = 0
        while not stop.is_set():
            i += 1
            for method, path, body, ok in (
                    ("GET", "/v2/service_instances/rot-0", None, {200}),
                    ("GET", "/v2/service_instances/rot-1/service_bindings/b-1", None, {200}),
                    ("PUT", f"/v2/service_instances/rot-2/service_bindings/t-{i}",
                     {"service_id": SERVICE_ID, "plan_id": BYOK_PLAN}, {201})):
                r = c.request(method, server.url + path, json=body, timeout=30)
                counts["requests"] += 1
                if r.status_code not in ok:
                    failures.append(f"{method} {path}: {r.status_code} {r.text[:200]}")

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        result = subprocess.run([*drbroker_command(), "keys", "rotate", "--batch", "5", "--grace", "0.5"],
                                env=base_env(db), cwd=tmp_path, capture_output=True, text=True, timeout=120,
                                check=False)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not failures, failures
    assert counts["requests"] >= 6

    doc = json.loads(kek_path.read_text())
    new_kid = doc["active"]
    assert new_kid != old_kid and list(doc["keys"]) == [new_kid], "the old key is gone once nothing uses it"
    assert stat.S_IMODE(kek_path.stat().st_mode) == 0o600
    engine = store_db.make_engine(f"sqlite:///{db}")
    counts_by_kek = count_by_kek(engine, Envelope.kek_id)
    engine.dispose()
    assert set(counts_by_kek) == {new_kid}, counts_by_kek
    assert "re-wrapped" in result.stdout

    # The running broker opens the re-wrapped records and seals new ones under the new key.
    fetched = s.get(f"{server.url}/v2/service_instances/rot-1", timeout=10)
    assert fetched.status_code == 200 and "ibmcloud_api_key" not in fetched.json()["parameters"]
    creds = s.get(f"{server.url}/v2/service_instances/rot-1/service_bindings/b-1", timeout=10).json()
    assert creds["credentials"]["iam"]["apikey"]
    provision("rot-9", ["vol-bulk-101"])
    engine = store_db.make_engine(f"sqlite:///{db}")
    assert set(count_by_kek(engine, Envelope.kek_id)) == {new_kid}
    engine.dispose()

    audit = subprocess.run([*drbroker_command(), "audit", "export"], env=base_env(db), cwd=tmp_path,
                           capture_output=True, text=True, timeout=60, check=True).stdout
    rotations = [json.loads(line) for line in audit.splitlines() if '"keys:rotate"' in line]
    assert len(rotations) == 1 and rotations[0]["principal"].startswith("cli")


def test_rewrap_pass_on_both_stores(db_url: str, tmp_path: Path) -> None:
    """The online re-wrap (keyset pages, guarded updates) on SQLite and PostgreSQL."""
    from broker.domain.models import Instance, InstanceState
    from broker.store.sealed import rewrap_all

    engine = store_db.make_engine(db_url)
    store_db.upgrade(engine)
    kek = LocalKeyFile(tmp_path / "kek.json")
    store = Store(engine, Envelope(kek))
    for n in range(7):
        with store.write() as tx:
            tx.insert_instance(Instance(
                id=f"rw-{n}", service_id=SERVICE_ID, plan_id="p", state=InstanceState.READY,
                parameters={"ibmcloud_api_key": f"key-{n}"}, context={}, organization_guid=None, space_guid=None,
                maintenance_version=None, dashboard_url=None, request_hash="h", enabled=True, last_active=None,
                created_at=1.0, updated_at=1.0))
    old = kek.active_id()
    new = kek.begin_rotation()
    first = rewrap_all(engine, store.sealer, batch=3)
    assert first.rewrapped == 14 and first.transactions >= 3  # parameters and request digest of each
    assert rewrap_all(engine, store.sealer).rewrapped == 0
    assert kek.finish_rotation() == [old]
    assert count_by_kek(engine, Envelope.kek_id) == {new: 14}
    with store.read() as tx:
        opened = {i.id: i.parameters["ibmcloud_api_key"] for i in tx.list_instances()}
    assert opened == {f"rw-{n}": f"key-{n}" for n in range(7)}
    engine.dispose()
