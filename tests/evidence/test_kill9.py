"""``kill -9`` of a real exporter process (``drbroker jobs run-due --only cos-export``) in the middle of an upload,
held there by a TCP proxy in front of moto; the next run leaves every record in COS exactly once, in objects
that are each written once (every object version is counted)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from broker.evidence.streams import EVENTS
from tests.conftest import make_settings
from tests.e2e.conftest import base_env, drbroker_command, query
from tests.evidence.conftest import StallingProxy, cos_env, read_lines, versions
from tests.evidence.test_export import add_events, store_runtime


@pytest.mark.parametrize("stall", ["request", "response"])
def test_kill9_mid_upload_leaves_no_gap_and_no_duplicate_object(tmp_path: Path, moto_url: str, bucket: str,
                                                                 proxy: StallingProxy, stall: str) -> None:
    db_path = tmp_path / "state.db"
    rt = store_runtime(make_settings(tmp_path))
    add_events(rt, 8)
    rt.store.engine.dispose()
    env = base_env(db_path, **cos_env(proxy.url, bucket, DRBROKER_COS_BATCH_RECORDS="3"))
    command = [*drbroker_command(), "jobs", "run-due", "--only", "cos-export", "--json"]
    second = EVENTS.key("drb", 4, 6)
    # "request": the PUT of the second batch sends its head, never its body; "response": moto stores it and
    # the exporter never hears so.
    proxy.stall(stall, f"PUT /{bucket}/{second} ".encode())
    log = (tmp_path / "run-1.log").open("wb")
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        assert proxy.stalled.wait(60), (tmp_path / "run-1.log").read_text()
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
        log.close()
    assert proc.returncode == -signal.SIGKILL
    cursor = query(db_path, "SELECT * FROM export_cursors WHERE name = 'cos:events'")[0]
    assert (cursor["last_seq"], cursor["pending_key"]) == (3, second)  # died between naming and finishing
    stored = [v["Key"] for v in versions(moto_url, bucket, "drb/events/")]
    assert (second in stored) == (stall == "response")

    proxy.stall(None)
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

    every = versions(moto_url, bucket, "drb/events/")
    per_key = Counter(v["Key"] for v in every)
    assert all(n == 1 for n in per_key.values()), per_key  # no object written twice, not even as a version
    assert sorted(per_key) == [EVENTS.key("drb", a, b) for a, b in ((1, 3), (4, 6), (7, 8))]
    seqs = [line["seq"] for v in every for line in read_lines(moto_url, bucket, v["Key"], v["VersionId"])]
    assert sorted(seqs) == list(range(1, 9)) and len(seqs) == 8  # every event exactly once
    cursor = query(db_path, "SELECT * FROM export_cursors WHERE name = 'cos:events'")[0]
    assert (cursor["last_seq"], cursor["pending_key"], cursor["lease_owner"]) == (8, None, None)
