"""``drbroker audit verify --against-cos`` (a real process) catches what the chain alone cannot: a rewrite by
someone holding the KEK (every MAC recomputed) and the deletion of the newest records."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from broker.security import audit_key
from broker.security.audit import chain_mac
from broker.store.tables import audit_events
from tests.conftest import make_settings
from tests.e2e.conftest import base_env, drbroker_command
from tests.evidence.conftest import cos_env
from tests.evidence.test_export import add_audit, job_of, store_runtime


@pytest.fixture
def exported(tmp_path: Path, moto_url: str, bucket: str) -> Any:
    env = cos_env(moto_url, bucket, DRBROKER_COS_BATCH_RECORDS="4")
    rt = store_runtime(make_settings(tmp_path, evidence_env=env))
    add_audit(rt, 9)
    job_of(rt).run_once()
    add_audit(rt, 2)  # newer than the anchor, not exported yet: not held to COS
    yield rt, base_env(tmp_path / "state.db", **env)
    rt.store.engine.dispose()


def verify(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*drbroker_command(), "audit", "verify", *extra], env=env, capture_output=True, text=True,
                          timeout=60)


def rewrite_with_the_key(rt: Any, rid: int) -> None:
    """What an insider with the database and the KEK can do: change a record, recompute every later MAC."""
    with rt.store.write() as tx:
        mac = audit_key.read(tx.conn, rt.store.sealer)
        rows = [dict(r._mapping) for r in tx.conn.execute(select(audit_events).order_by(audit_events.c.id))]
        prev = next(r["hash"] for r in rows if r["id"] == rid - 1)
        for row in (r for r in rows if r["id"] >= rid):
            if row["id"] == rid:
                row["detail"] = '{"i": "rewritten"}'
            row["prev_hash"] = prev
            row["hash"] = prev = chain_mac(mac.key, prev, row)
            tx.conn.execute(update(audit_events).where(audit_events.c.id == row["id"]).values(
                detail=row["detail"], prev_hash=row["prev_hash"], hash=row["hash"]))


def test_an_intact_trail_matches_cos(exported: Any) -> None:
    _, env = exported
    out = verify(env, "--against-cos")
    assert out.returncode == 0, out.stderr
    assert "match their exported copies" in out.stdout


def test_a_rewrite_with_recomputed_macs_is_caught_against_cos(exported: Any) -> None:
    rt, env = exported
    rewrite_with_the_key(rt, 3)
    assert verify(env).returncode == 0  # the chain alone cannot tell: every MAC was recomputed with the key
    out = verify(env, "--against-cos")
    assert out.returncode == 1
    assert "record #3 differs from its copy in COS" in out.stderr and "detail" in out.stderr
    assert "Traceback" not in out.stderr


def test_deleting_the_newest_records_is_caught_against_cos(exported: Any) -> None:
    rt, env = exported
    with rt.store.write() as tx:
        tx.conn.execute(delete(audit_events).where(audit_events.c.id >= 8))
    assert verify(env).returncode == 0  # a shorter chain is a valid chain (no checkpoint file here)
    out = verify(env, "--against-cos")
    assert out.returncode == 1
    assert "record #8 is exported to COS" in out.stderr and "missing from the database" in out.stderr
