"""``drbroker keys init FILE``: the one KEK file replicas share, written private, never over an existing one."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from broker.security.envelope import LocalKeyFile

DRBROKER = str(Path(sys.executable).with_name("drbroker"))


def _init(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DRBROKER, "keys", "init", str(path)], capture_output=True, text=True, timeout=60)


def test_keys_init_writes_a_private_key_file_the_broker_opens(tmp_path: Path) -> None:
    path = tmp_path / "drbroker-kek" / "kek.json"
    run = _init(path)
    assert run.returncode == 0, run.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    active = json.loads(path.read_text())["active"]
    assert f"active key {active}" in run.stdout
    assert LocalKeyFile(path, create=False).active_id() == active


def test_keys_init_never_replaces_an_existing_key_file(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    assert _init(path).returncode == 0
    before = path.read_bytes()
    again = _init(path)
    assert again.returncode == 1 and "exists" in again.stderr
    assert path.read_bytes() == before
