"""The keyed audit chain: each record's link is an HMAC-SHA256 under a MAC key sealed by the KEK.

Someone with write access to the database but not the KEK rewrites records directly in SQLite, recomputing
every later link (plain SHA-256, or an HMAC under a key of their own): ``drbroker audit verify`` names the first
rewritten record. Records from before the upgrade still verify with the old rule; replicas sharing the KEK (two
processes starting at once on one PostgreSQL, two Key Protect brokers) derive one and the same MAC key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from broker.app import Runtime, build_runtime
from broker.cli import main
from broker.fakecloud.state import DEMO_KMS_INSTANCE_ID
from broker.security.audit import AuditEvent
from broker.store import db as store_db
from tests.conftest import make_settings
from tests.security.test_keyprotect_kek import kp  # noqa: F401 - the fake Key Protect fixture

GENESIS = "0" * 64
# The rule of the unkeyed chain (docs/security.md before the upgrade), written out here so that these tests
# forge links the way someone holding only the database would.
FIELDS = ("id", "at", "principal", "originating_identity", "request_identity", "action", "instance_id",
          "binding_id", "operation_id", "status", "outcome", "detail", "prev_hash")


def canonical(record: dict[str, Any], fields: tuple[str, ...]) -> bytes:
    return json.dumps({k: record.get(k) for k in fields}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode("ascii")


def plain_hash(prev: str, record: dict[str, Any]) -> str:
    return hashlib.sha256(prev.encode() + canonical(record, FIELDS)).hexdigest()


def forged_mac(key: bytes) -> Any:
    def link(prev: str, record: dict[str, Any]) -> str:
        return hmac.new(key, prev.encode() + canonical(record, (*FIELDS, "chain")), hashlib.sha256).hexdigest()
    return link


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = build_runtime(make_settings(tmp_path))
    yield runtime
    runtime.store.engine.dispose()


def db_file(rt: Runtime) -> Path:
    return Path(rt.settings.database_url[len("sqlite:///"):])


def append(rt: Runtime, n: int) -> None:
    assert rt.audit is not None
    for i in range(n):
        rt.audit.append(AuditEvent(action="update", principal="basic:platform", instance_id=f"k-{i}", status=202,
                                   outcome="accepted"))


def rows(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM audit_events ORDER BY id")]
    finally:
        conn.close()


def rewrite(db: Path, rid: int, link: Any, **changes: Any) -> None:
    """Change record ``rid`` directly in the SQLite file and recompute its link and every later one (and their
    prev_hash) with ``link``, as someone holding the database file would."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        records = [dict(r) for r in conn.execute("SELECT * FROM audit_events WHERE id >= ? ORDER BY id", (rid,))]
        prev = records[0]["prev_hash"]
        for record in records:
            if record["id"] == rid:
                record.update(changes)
            record["prev_hash"] = prev
            record["hash"] = link(prev, record)
            conn.execute("UPDATE audit_events SET principal = ?, chain = ?, prev_hash = ?, hash = ? WHERE id = ?",
                         (record["principal"], record.get("chain", "sha256"), record["prev_hash"], record["hash"],
                          record["id"]))
            prev = record["hash"]
        conn.commit()
    finally:
        conn.close()


def verify(rt: Runtime, monkeypatch: Any, *args: str) -> Result:
    monkeypatch.setenv("DRBROKER_DATABASE_URL", rt.settings.database_url)
    return CliRunner().invoke(main, ["audit", "verify", *args])


def test_records_are_linked_by_an_hmac_not_a_plain_hash(rt: Runtime, monkeypatch: Any) -> None:
    append(rt, 3)
    got = rows(db_file(rt))
    assert [r["chain"] for r in got] == ["hmac-sha256"] * 3
    assert all(r["hash"] != plain_hash(r["prev_hash"], r) for r in got)
    ok = verify(rt, monkeypatch)
    assert ok.exit_code == 0 and "intact: 3 record(s) (3 keyed, 0 unkeyed" in ok.output, ok.output


@pytest.mark.parametrize("relabel", [False, True], ids=["keeps-chain-marker", "relabelled-sha256"])
def test_a_rewrite_with_every_later_plain_hash_recomputed_names_the_first_rewritten_record(
        rt: Runtime, monkeypatch: Any, relabel: bool) -> None:
    append(rt, 6)
    assert rows(db_file(rt))[0]["chain"] == "hmac-sha256"
    changes: dict[str, Any] = {"principal": "basic:mallory"}
    if relabel:  # and claim the records were written before the chain was keyed
        changes["chain"] = "sha256"
    rewrite(db_file(rt), 3, plain_hash, **changes)
    if relabel:
        rewrite(db_file(rt), 4, plain_hash, chain="sha256")
    result = verify(rt, monkeypatch)
    assert result.exit_code == 1, result.output
    assert "audit trail BROKEN: record #3:" in result.output


def test_a_rewrite_with_macs_under_another_key_names_the_first_rewritten_record(
        rt: Runtime, monkeypatch: Any) -> None:
    append(rt, 6)
    assert rows(db_file(rt))[0]["chain"] == "hmac-sha256"
    rewrite(db_file(rt), 4, forged_mac(os.urandom(32)), principal="basic:mallory")
    result = verify(rt, monkeypatch)
    assert result.exit_code == 1
    assert "record #4: its content does not match its MAC" in result.output


def test_the_mac_key_is_sealed_under_the_kek_and_only_that_kek_opens_it(rt: Runtime, tmp_path: Path,
                                                                       monkeypatch: Any) -> None:
    append(rt, 2)
    conn = sqlite3.connect(db_file(rt))
    try:
        ((kid, sealed),) = conn.execute("SELECT id, sealed FROM audit_keys").fetchall()
    finally:
        conn.close()
    assert kid == "audit-mac" and sealed.startswith("enc:v1:") and '"key"' not in sealed
    # A replica given another kek.json stops at start, naming the audit trail...
    other = make_settings(tmp_path, kek_file=str(tmp_path / "other-kek.json"))
    with pytest.raises(SystemExit) as stop:
        build_runtime(other)
    assert "audit trail: the audit MAC key does not open with the configured KEK" in str(stop.value)
    # ... and verify with it reports instead of trusting anything.
    monkeypatch.setenv("DRBROKER_KEK_FILE", str(tmp_path / "other-kek.json"))
    result = verify(rt, monkeypatch)
    assert result.exit_code == 1 and "does not open with the configured KEK" in result.output


def test_a_key_of_ones_own_stored_unsealed_is_refused(rt: Runtime, monkeypatch: Any) -> None:
    append(rt, 4)
    mine = os.urandom(32)
    doc = {"format": "drbroker-audit-key/1", "key": base64.b64encode(mine).decode(), "legacy_head_id": 0,
           "legacy_head_hash": GENESIS}
    conn = sqlite3.connect(db_file(rt))
    conn.execute("UPDATE audit_keys SET sealed = ?", (json.dumps(doc),))
    conn.commit()
    conn.close()
    rewrite(db_file(rt), 1, forged_mac(mine), principal="basic:mallory")
    result = verify(rt, monkeypatch)
    assert result.exit_code == 1 and "not sealed under the KEK" in result.output


def test_deleting_the_mac_key_is_reported_and_a_broker_will_not_start_without_it(
        rt: Runtime, tmp_path: Path, monkeypatch: Any) -> None:
    append(rt, 3)
    conn = sqlite3.connect(db_file(rt))
    conn.execute("DELETE FROM audit_keys")
    conn.commit()
    conn.close()
    result = verify(rt, monkeypatch)
    assert result.exit_code == 1 and "record #1: it claims a keyed link but audit_keys holds no MAC key" \
        in result.output
    with pytest.raises(SystemExit, match="audit_keys holds no MAC key"):
        build_runtime(make_settings(tmp_path))


def test_a_broker_that_predates_the_keyed_chain_cannot_append_after_the_upgrade(rt: Runtime) -> None:
    append(rt, 1)
    last = rows(db_file(rt))[-1]
    old_style = {**last, "id": 2, "prev_hash": last["hash"]}
    old_style["hash"] = plain_hash(last["hash"], old_style)
    # The columns an old broker's insert names: every one but ``chain``, which has no default.
    columns = (*FIELDS, "hash")
    with pytest.raises(IntegrityError), rt.store.engine.begin() as conn:
        conn.execute(text(f"INSERT INTO audit_events ({', '.join(columns)}) "
                          f"VALUES ({', '.join(':' + c for c in columns)})"), {c: old_style[c] for c in columns})
    assert len(rows(db_file(rt))) == 1


def _legacy_database(tmp_path: Path, n: int) -> Path:
    """A database as the broker before the keyed chain left it: schema 0006, ``n`` records linked by the
    unkeyed rule."""
    db = tmp_path / "state.db"
    engine = store_db.make_engine(f"sqlite:///{db}")
    store_db.upgrade(engine, "0006")
    prev = GENESIS
    with engine.begin() as conn:
        for i in range(1, n + 1):
            record = {"id": i, "at": 1_700_000_000.0 + i, "principal": "basic:platform", "originating_identity": None,
                      "request_identity": f"req-{i}", "action": "provision", "instance_id": f"old-{i}",
                      "binding_id": None, "operation_id": f"op-{i}", "status": 202, "outcome": "accepted",
                      "detail": json.dumps({"method": "PUT"}), "prev_hash": prev}
            record["hash"] = plain_hash(prev, record)
            conn.execute(text("INSERT INTO audit_events (id, at, principal, originating_identity, request_identity, "
                              "action, instance_id, binding_id, operation_id, status, outcome, detail, prev_hash, "
                              "hash) VALUES (:id, :at, :principal, :originating_identity, :request_identity, "
                              ":action, :instance_id, :binding_id, :operation_id, :status, :outcome, :detail, "
                              ":prev_hash, :hash)"), record)
            prev = record["hash"]
    engine.dispose()
    return db


def test_records_from_before_the_upgrade_verify_and_the_keyed_chain_continues_from_them(
        tmp_path: Path, monkeypatch: Any) -> None:
    _legacy_database(tmp_path, 4)
    rt = build_runtime(make_settings(tmp_path))  # upgrades to the keyed chain and makes its key
    try:
        append(rt, 3)
        got = rows(db_file(rt))
        assert [r["chain"] for r in got] == ["sha256"] * 4 + ["hmac-sha256"] * 3
        assert got[4]["prev_hash"] == got[3]["hash"]  # the first keyed record links to the last unkeyed one
        ok = verify(rt, monkeypatch)
        assert ok.exit_code == 0 and "7 record(s) (3 keyed, 4 unkeyed from before the upgrade)" in ok.output, \
            ok.output

        # Rewriting an old record and recomputing the old rule's hashes up to the last unkeyed record is found:
        # the sealed key remembers that record's hash (which of #1..#4 changed the old rule cannot say).
        rewrite(db_file(rt), 2, plain_hash, principal="basic:mallory")
        broken = verify(rt, monkeypatch)
        assert broken.exit_code == 1
        assert "record #4, the last unkeyed record, is not the one there was" in broken.output, broken.output
    finally:
        rt.store.engine.dispose()


def test_keyed_records_relabelled_as_pre_upgrade_ones_are_found(tmp_path: Path, monkeypatch: Any) -> None:
    _legacy_database(tmp_path, 2)
    rt = build_runtime(make_settings(tmp_path))
    try:
        append(rt, 4)
        rewrite(db_file(rt), 3, plain_hash, chain="sha256", principal="basic:mallory")
        for rid in (4, 5, 6):
            rewrite(db_file(rt), rid, plain_hash, chain="sha256")
        result = verify(rt, monkeypatch)
        assert result.exit_code == 1
        assert "record #3: it is unkeyed (sha256), but every record after #2 is keyed" in result.output
    finally:
        rt.store.engine.dispose()


def test_keys_rotate_rewraps_the_mac_key_so_the_chain_still_verifies(rt: Runtime, monkeypatch: Any) -> None:
    append(rt, 3)
    old_kid = json.loads(_sealed(rt)[len("enc:v1:"):])["k"]
    monkeypatch.setenv("DRBROKER_DATABASE_URL", rt.settings.database_url)
    rotated = CliRunner().invoke(main, ["keys", "rotate", "--grace", "0"])
    assert rotated.exit_code == 0, rotated.output
    assert f"retired {old_kid}" in rotated.output
    assert json.loads(_sealed(rt)[len("enc:v1:"):])["k"] != old_kid
    result = verify(rt, monkeypatch)
    assert result.exit_code == 0 and "4 record(s)" in result.output, result.output  # keys:rotate was appended


def _sealed(rt: Runtime) -> str:
    conn = sqlite3.connect(db_file(rt))
    try:
        return conn.execute("SELECT sealed FROM audit_keys").fetchone()[0]
    finally:
        conn.close()


_REPLICA = """
import hashlib, sys, time
from broker.security.audit import AuditEvent, AuditTrail
from broker.security.envelope import Envelope, LocalKeyFile
from broker.store import db
from broker.store.repository import Store
url, kek, name, go = sys.argv[1:5]
trail = AuditTrail(Store(db.make_engine(url), Envelope(LocalKeyFile(kek))))
while time.time() < float(go):  # both replicas start their first append at the same moment
    time.sleep(0.001)
trail.ensure_key()
for i in range(20):
    trail.append(AuditEvent(action="update", principal=name, status=202))
print(hashlib.sha256(trail._mac.key).hexdigest())
"""


def test_two_replicas_starting_at_once_make_one_key_and_derive_the_same(db_url: str, tmp_path: Path) -> None:
    """Two processes with the same kek.json, on one fresh database (SQLite file; PostgreSQL schema), create the
    key at the same moment: one key row, the same key in both, one chain that verifies."""
    import time

    from broker.security import audit_key
    from broker.security.audit import AuditTrail
    from broker.security.envelope import Envelope, LocalKeyFile
    from broker.store.repository import Store

    engine = store_db.make_engine(db_url)
    store_db.upgrade(engine)
    kek = tmp_path / "shared-kek.json"
    LocalKeyFile(kek)
    go = str(time.time() + 1.5)
    procs = [subprocess.Popen([sys.executable, "-c", _REPLICA, db_url, str(kek), f"replica-{n}", go],
                              stdout=subprocess.PIPE, text=True) for n in range(2)]
    fingerprints = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        fingerprints.append(out.strip())
    assert fingerprints[0] == fingerprints[1] and len(fingerprints[0]) == 64
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM audit_keys")).scalar_one() == 1
    # Two Store objects here, each opening the row with the shared KEK, hold that key too.
    keys = []
    for _ in range(2):
        store = Store(store_db.make_engine(db_url), Envelope(LocalKeyFile(kek)))
        with store.read() as tx:
            mac = audit_key.read(tx.conn, store.sealer)
        assert mac is not None
        keys.append(hashlib.sha256(mac.key).hexdigest())
        store.engine.dispose()
    assert keys == fingerprints
    result = AuditTrail(Store(engine, Envelope(LocalKeyFile(kek)))).verify()
    assert result.ok and result.records == 40 and result.legacy == 0, result
    engine.dispose()


def test_replicas_with_a_key_protect_kek_derive_the_same_mac_key(kp: tuple[str, str], tmp_path: Path) -> None:  # noqa: F811
    url, key_id = kp
    settings = make_settings(tmp_path, kek="keyprotect", kek_keyprotect_url=url, kek_instance_id=DEMO_KMS_INSTANCE_ID,
                             kek_root_key_id=key_id, kek_apikey="kek-test-apikey", iam_url=url)
    first, second = build_runtime(settings), build_runtime(settings)
    try:
        append(first, 2)
        append(second, 2)
        assert first.audit is not None and second.audit is not None
        assert first.audit._mac == second.audit._mac
        assert json.loads(_sealed(first)[len("enc:v1:"):])["k"].startswith(f"kp:{key_id}:")
        result = first.audit.verify()
        assert result.ok and result.records == 4
    finally:
        first.store.engine.dispose()
        second.store.engine.dispose()


def test_the_0007_migration_marks_existing_records_unkeyed_on_both_stores(db_url: str, tmp_path: Path) -> None:
    """SQLite and PostgreSQL: records written at 0006 survive the upgrade marked ``sha256`` and verify with the
    old rule; the keyed chain continues from them; the downgrade drops what 0007 added."""
    from alembic import command

    from broker.security.audit import AuditTrail
    from broker.security.envelope import Envelope, LocalKeyFile
    from broker.store.repository import Store

    engine = store_db.make_engine(db_url)
    if store_db.current_revision(engine) is None:
        store_db.upgrade(engine, "0006")
    else:
        with engine.begin() as conn:
            cfg = store_db.alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0006")
    prev = GENESIS
    with engine.begin() as conn:
        for i in (1, 2):
            record = {k: None for k in FIELDS}
            record.update(id=i, at=1_700_000_000.0 + i, action="provision", detail="{}", prev_hash=prev)
            record["hash"] = plain_hash(prev, record)
            conn.execute(text(f"INSERT INTO audit_events ({', '.join(record)}) "
                              f"VALUES ({', '.join(':' + k for k in record)})"), record)
            prev = record["hash"]
    store_db.upgrade(engine)
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(text("SELECT chain FROM audit_events ORDER BY id"))] == ["sha256"] * 2
    trail = AuditTrail(Store(engine, Envelope(LocalKeyFile(tmp_path / "kek.json"))))
    trail.ensure_key()
    trail.append(AuditEvent(action="update", status=202))
    result = trail.verify()
    assert result.ok and result.records == 3 and result.legacy == 2, result
    with engine.begin() as conn:
        cfg = store_db.alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")
    inspector = inspect(engine)
    assert "audit_keys" not in inspector.get_table_names()
    assert "chain" not in {c["name"] for c in inspector.get_columns("audit_events")}
    engine.dispose()
