"""Several ``drbroker db upgrade`` at once on an empty database (replicas, platform start commands): all succeed,
one migrates and the others find the schema current."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from broker.store import db
from tests.conftest import postgres_url_or_skip

DRBROKER = str(Path(sys.executable).with_name("drbroker"))


def _upgrade_at_once(url: str, n: int, tmp_path: Path) -> list[subprocess.CompletedProcess[str]]:
    env = {**os.environ, "DRBROKER_DATABASE_URL": url, "DRBROKER_STATE_DIR": str(tmp_path / "state")}
    procs = [subprocess.Popen([DRBROKER, "db", "upgrade"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(n)]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout))
    return out


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_four_upgrades_at_once_all_succeed(backend: str, tmp_path: Path) -> None:
    url = postgres_url_or_skip() if backend == "postgresql" else f"sqlite:///{tmp_path / 'state' / 'state.db'}"
    results = _upgrade_at_once(url, 4, tmp_path)
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stdout[-600:] for r in results]
    engine = db.make_engine(url)
    try:
        assert not db.needs_upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()
