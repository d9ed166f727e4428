"""File modes of the broker's state, through real ``drbroker serve`` processes and the ``drbroker`` command.

A fresh broker makes its state directory 0700 and its SQLite database (and WAL) 0600; a key file that the group
or others can read is refused, with one line naming the file and the chmod to run, every time it is read,
not only at the first start.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.security.envelope import LocalKeyFile, SecretsError
from tests.e2e.conftest import base_env, broker_factory, drbroker_command
from tests.security.test_hard_edges import _cert

__all__ = ["broker_factory"]  # the real-server fixture, from the e2e conftest


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The usual 022 umask, so that a file the broker does not make private on purpose would be 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def run_cli(cwd: Path, env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``drbroker ...`` in its own process group, killed as a whole if it outlives ``timeout`` (a ``serve``
    that was not refused would keep running)."""
    proc = subprocess.Popen([*drbroker_command(), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"drbroker {' '.join(args)} was not refused within {timeout}s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def refused_once(result: subprocess.CompletedProcess[str], path: Path) -> None:
    """Exit status 1 and exactly one line about ``path``, naming the chmod (no traceback)."""
    assert result.returncode != 0, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if str(path) in line]
    assert len(lines) == 1, result.stderr
    assert f"run: chmod 600 {path}" in lines[0] and "(mode 0644)" in lines[0], lines[0]
    assert "Traceback" not in result.stderr, result.stderr


def test_fresh_serve_makes_the_state_dir_0700_and_the_database_and_wal_0600(
        tmp_path: Path, broker_factory: Any, loose_umask: None) -> None:
    # The default state directory (./.drbroker, beside which nothing exists yet).
    server = broker_factory(None, cwd=tmp_path, env=base_env(None))
    state = tmp_path / ".drbroker"
    assert mode(state) == 0o700
    assert mode(state / "state.db") == 0o600
    wal = state / "state.db-wal"
    assert wal.exists()  # WAL mode: the migrations and the worker have written through it
    assert mode(wal) == 0o600
    assert mode(state / "kek.json") == 0o600
    server.stop()


def test_an_existing_loose_database_is_tightened(tmp_path: Path, broker_factory: Any, loose_umask: None) -> None:
    server = broker_factory(tmp_path / "state.db")
    server.stop()
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        if (tmp_path / name).exists():
            (tmp_path / name).chmod(0o644)
    broker_factory(tmp_path / "state.db").stop()
    assert mode(tmp_path / "state.db") == 0o600
    assert "was accessible by group or others (mode 0644): made it 0600" in server.log_path.read_text() + \
        (tmp_path / "broker-2.log").read_text()


def test_kek_json_made_readable_after_start_is_refused_at_its_next_read(tmp_path: Path, broker_factory: Any) -> None:
    env = base_env(tmp_path / "state.db")
    server = broker_factory(tmp_path / "state.db", env=env)
    kek = tmp_path / "kek.json"
    assert mode(kek) == 0o600
    kek.chmod(0o644)
    # The running broker's key file object: its next wrap stats the file and refuses (it used to carry on).
    running = LocalKeyFile(kek.with_name("other-kek.json"))
    Path(running.path).chmod(0o644)
    with pytest.raises(SecretsError, match=r"other-kek\.json is readable by group or others \(mode 0644\); "
                                           r"run: chmod 600 .*other-kek\.json$"):
        running.wrap(b"\0" * 32, b"aad")
    # ``drbroker keys status`` and a restart read it again, and refuse with one line.
    refused_once(run_cli(tmp_path, env, "keys", "status"), kek)
    server.stop()
    refused_once(run_cli(tmp_path, env, "serve", "--host", "127.0.0.1", "--port", "0"), kek)
    kek.chmod(0o600)
    assert run_cli(tmp_path, env, "keys", "status").returncode == 0


def test_dashboard_key_made_readable_is_refused(tmp_path: Path) -> None:
    env = base_env(tmp_path / "state.db")
    args = ("dashboard", "link", "3f9c1e2a-0000-4000-8000-000000000001", "--base-url", "http://broker.example")
    first = run_cli(tmp_path, env, *args)
    assert first.returncode == 0, first.stderr
    key = tmp_path / "dashboard.key"
    assert mode(key) == 0o600
    key.chmod(0o644)
    refused_once(run_cli(tmp_path, env, *args), key)


def test_generated_credentials_made_readable_are_refused_at_restart(tmp_path: Path, broker_factory: Any) -> None:
    env = {k: v for k, v in base_env(tmp_path / "state.db").items()
           if k not in ("DRBROKER_USERNAME", "DRBROKER_PASSWORD")}
    broker_factory(tmp_path / "state.db", env=env).stop()
    creds = tmp_path / "credentials.json"
    assert mode(creds) == 0o600
    creds.chmod(0o644)
    refused_once(run_cli(tmp_path, env, "serve", "--host", "127.0.0.1", "--port", "0"), creds)


def test_a_readable_tls_key_is_refused(tmp_path: Path) -> None:
    cert, key = _cert(tmp_path)
    key.chmod(0o644)
    env = base_env(tmp_path / "state.db")
    refused_once(run_cli(tmp_path, env, "serve", "--host", "127.0.0.1", "--port", "0",
                         "--certfile", str(cert), "--keyfile", str(key)), key)
