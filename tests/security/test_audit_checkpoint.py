"""The audit chain's head checkpointed outside the database (DRBROKER_AUDIT_CHECKPOINT): written atomically
(0600, temp + rename), at most once per interval and at exit, only forward; ``drbroker audit verify`` uses it by
default and reports a truncation, a head that was replaced, and a missing checkpoint (exit 1)."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result

from broker.app import Runtime, build_runtime
from broker.cli import main
from broker.security.audit import AuditEvent
from broker.security.audit_checkpoint import Checkpoint, CheckpointWriter
from tests.conftest import make_settings
from tests.e2e.conftest import base_env, drbroker_command
from tests.security.conftest import Server


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "head.json"


@pytest.fixture
def rt(tmp_path: Path, checkpoint: Path) -> Iterator[Runtime]:
    runtime = build_runtime(make_settings(tmp_path, audit_checkpoint=str(checkpoint)))
    yield runtime
    runtime.store.engine.dispose()


def append(rt: Runtime, n: int) -> list[dict[str, Any]]:
    assert rt.audit is not None
    return [rt.audit.append(AuditEvent(action="update", principal="basic:platform", instance_id=f"c-{i}",
                                       status=202, outcome="accepted")) for i in range(n)]


def sql(rt: Runtime, statement: str) -> None:
    conn = sqlite3.connect(rt.settings.database_url[len("sqlite:///"):])
    conn.execute(statement)
    conn.commit()
    conn.close()


def verify(rt: Runtime, monkeypatch: Any, *args: str, checkpoint: Path | None = None) -> Result:
    monkeypatch.setenv("DRBROKER_DATABASE_URL", rt.settings.database_url)
    if checkpoint is not None:
        monkeypatch.setenv("DRBROKER_AUDIT_CHECKPOINT", str(checkpoint))
    return CliRunner().invoke(main, ["audit", "verify", *args])


def test_the_checkpoint_holds_the_head_written_atomically_and_privately(rt: Runtime, checkpoint: Path) -> None:
    assert json.loads(checkpoint.read_text())["id"] == 0  # started when the broker started
    records = append(rt, 3)
    assert rt.audit is not None
    rt.audit.flush()
    doc = json.loads(checkpoint.read_text())
    assert doc["format"] == "drbroker-audit-checkpoint/1"
    assert (doc["id"], doc["mac"], doc["chain"]) == (3, records[-1]["hash"], "hmac-sha256")
    assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o600
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["head.json", "head.json.lock"]  # no temp left


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_writes_are_throttled_to_one_per_interval_and_never_go_backwards(tmp_path: Path) -> None:
    path = tmp_path / "head.json"
    clock = Clock()
    writer = CheckpointWriter(path, lambda _c: True, interval=3600, clock=clock)
    mac = "a" * 64
    writer.note(Checkpoint(1, mac, "hmac-sha256"))
    assert json.loads(path.read_text())["id"] == 1  # the first is written at once
    writer.note(Checkpoint(2, mac, "hmac-sha256"))
    writer.note(Checkpoint(3, mac, "hmac-sha256"))
    assert json.loads(path.read_text())["id"] == 1  # within the interval: pending
    clock.now += 3600
    writer.note(Checkpoint(4, mac, "hmac-sha256"))
    assert json.loads(path.read_text())["id"] == 4
    # Another process of the host, behind this one, never moves the file back.
    CheckpointWriter(path, lambda _c: True, interval=0, clock=clock).note(Checkpoint(2, mac, "hmac-sha256"))
    assert json.loads(path.read_text())["id"] == 4


def test_verify_reports_a_truncation_through_the_checkpoint(rt: Runtime, checkpoint: Path, monkeypatch: Any) -> None:
    append(rt, 5)
    assert rt.audit is not None
    rt.audit.flush()
    ok = verify(rt, monkeypatch, checkpoint=checkpoint)
    assert ok.exit_code == 0 and "checkpoint record #5 matches" in ok.output, ok.output
    sql(rt, "DELETE FROM audit_events WHERE id >= 4")
    # The shorter chain is a valid chain; only the checkpoint knows it was longer.
    assert rt.audit.verify().ok
    result = verify(rt, monkeypatch, checkpoint=checkpoint)
    assert result.exit_code == 1
    assert "names record #5" in result.output and "records #4..#5 were removed (truncation)" in result.output
    assert verify(rt, monkeypatch, "--checkpoint", str(checkpoint)).exit_code == 1  # the option, without the env


def test_a_truncation_refilled_by_the_broker_stays_visible(rt: Runtime, checkpoint: Path, monkeypatch: Any) -> None:
    append(rt, 5)
    assert rt.audit is not None
    rt.audit.flush()
    sql(rt, "DELETE FROM audit_events WHERE id >= 4")
    append(rt, 3)  # the broker goes on: new records #4..#6 with valid MACs
    rt.audit.flush()
    assert json.loads(checkpoint.read_text())["id"] == 5  # the evidence is kept, not overwritten
    result = verify(rt, monkeypatch, checkpoint=checkpoint)
    assert result.exit_code == 1 and "record #5 does not match the checkpoint" in result.output, result.output


def test_a_missing_checkpoint_is_a_problem_and_head_still_works(rt: Runtime, checkpoint: Path,
                                                                monkeypatch: Any) -> None:
    append(rt, 2)
    assert rt.audit is not None
    head = rt.audit.verify().head
    checkpoint.unlink()
    result = verify(rt, monkeypatch, checkpoint=checkpoint)
    assert result.exit_code == 1 and "is missing" in result.output
    monkeypatch.delenv("DRBROKER_AUDIT_CHECKPOINT")
    assert verify(rt, monkeypatch, "--head", head).exit_code == 0
    sql(rt, "DELETE FROM audit_events WHERE id = 2")
    truncated = verify(rt, monkeypatch, "--head", head)
    assert truncated.exit_code == 1 and "does not contain the head" in truncated.output


def test_a_real_server_checkpoints_its_head_at_exit_and_verify_finds_the_truncation(
        serve: Callable[..., Server], tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    checkpoint = tmp_path / "ckpt" / "audit-head.json"
    server = serve(db, DRBROKER_AUDIT_CHECKPOINT=str(checkpoint))
    for i in range(4):
        r = requests.put(f"{server.url}/v2/service_instances/srv-{i}", json={},
                         headers={"X-Broker-API-Version": "2.17"}, timeout=30)
        assert r.status_code == 401
    server.stop()
    conn = sqlite3.connect(db)
    last_id, last_hash = conn.execute("SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1").fetchone()
    doc = json.loads(checkpoint.read_text())
    assert (doc["id"], doc["mac"]) == (last_id, last_hash) and last_id == 4
    assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o600
    env = base_env(db, DRBROKER_AUDIT_CHECKPOINT=str(checkpoint))
    intact = subprocess.run([*drbroker_command(), "audit", "verify"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert intact.returncode == 0, intact.stderr
    conn.execute("DELETE FROM audit_events WHERE id = 4")
    conn.commit()
    conn.close()
    broken = subprocess.run([*drbroker_command(), "audit", "verify"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert broken.returncode == 1 and "record #4" in broken.stderr and "truncation" in broken.stderr, broken.stderr


def test_with_a_checkpoint_a_deleted_key_and_relabelled_records_cannot_be_blessed_by_a_restart(
        rt: Runtime, tmp_path: Path, checkpoint: Path, monkeypatch: Any) -> None:
    """Delete the key row and turn every keyed record into a pre-upgrade one (plain SHA-256 recomputed): the
    table alone then looks like an old trail. The checkpoint still names a keyed head: verify reports it, and a
    restart refuses to make a new key that would accept the forged prefix."""
    from tests.security.test_audit_keyed import plain_hash, rewrite

    append(rt, 3)
    assert rt.audit is not None
    rt.audit.flush()
    db = Path(rt.settings.database_url[len("sqlite:///"):])
    sql(rt, "DELETE FROM audit_keys")
    for rid in (1, 2, 3):
        rewrite(db, rid, plain_hash, chain="sha256")
    result = verify(rt, monkeypatch, checkpoint=checkpoint)
    assert result.exit_code == 1 and "record #3 does not match the checkpoint" in result.output, result.output
    with pytest.raises(SystemExit, match="names keyed record #3, but audit_keys holds no MAC key"):
        build_runtime(make_settings(tmp_path, audit_checkpoint=str(checkpoint)))
