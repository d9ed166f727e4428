"""Start-up refusals of the shipped commands: a replica whose KEK cannot open the database's data keys, an
unreachable database, a Global Catalog export without the broker's guid. Each is one clear line and a non-zero
exit, never a traceback or a server that starts and then fails every request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from broker.cli import main
from tests.e2e.conftest import BrokerProcess, Client, base_env, drbroker_command, free_port

EXIT_TIMEOUT = 20.0


def run_until_exit(args: list[str], env: dict[str, str], cwd: Path, timeout: float = EXIT_TIMEOUT):
    """Run a ``drbroker`` command in its own process group; fail (after killing the group) if it keeps running."""
    proc = subprocess.Popen([*drbroker_command(), *args], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    started = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"drbroker {' '.join(args)} was still running after {timeout}s:\n{err[-3000:]}") from None
    return proc.returncode, out, err, time.monotonic() - started


def stderr_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_replica_with_another_kek_refuses_to_start(broker_factory: Callable[..., BrokerProcess],
                                                   client_for: Callable[..., Client], db_path: Path,
                                                   tmp_path: Path) -> None:
    first = broker_factory(db_path)
    client = client_for(first)
    r = client.provision("kek-inst-1")
    assert r.status_code == 202, r.text
    assert client.wait("kek-inst-1")["state"] == "succeeded"
    kek_a = json.loads((db_path.parent / "kek.json").read_text())

    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    env = base_env(db_path, DRBROKER_KEK_FILE=str(other / "kek.json"))
    code, _out, err, took = run_until_exit(["serve", "--host", "127.0.0.1", "--port", str(free_port())], env,
                                           other)
    assert code != 0
    assert took < EXIT_TIMEOUT
    assert "Traceback" not in err
    lines = stderr_lines(err)
    assert len(lines) == 1, err
    assert kek_a["active"] in lines[0]
    assert "kek.json" in lines[0] and "DRBROKER_KEK_FILE" in lines[0]
    # The first replica is untouched and still serves.
    assert client.last_operation("kek-inst-1").status_code == 200


def test_unreachable_database_is_one_line_naming_the_url_without_password(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    env = base_env(None, DRBROKER_DATABASE_URL=f"postgresql://user:s3cretpw@127.0.0.1:{port}/db")
    for args in (["serve", "--host", "127.0.0.1", "--port", str(free_port())], ["db", "upgrade"]):
        code, _out, err, _took = run_until_exit(args, env, tmp_path)
        assert code != 0, args
        assert "Traceback" not in err, err
        assert "s3cretpw" not in err
        lines = stderr_lines(err)
        assert len(lines) == 1, (args, err)
        assert f"postgresql://user@127.0.0.1:{port}/db" in lines[0], lines[0]


def test_global_catalog_export_needs_the_broker_guid(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("DRBROKER_BROKER_CRN", raising=False)
    args = ["catalog", "export", "--format", "ibm-global-catalog", "--locations", "us-south"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "--broker-guid" in result.output
    assert '"guid"' not in result.output

    # The OSB format needs no guid.
    assert CliRunner().invoke(main, ["catalog", "export"]).exit_code == 0

    crn = "crn:v1:bluemix:public:globalcatalog::a/acct::broker:1234"
    result = CliRunner(env={"DRBROKER_BROKER_CRN": crn}).invoke(main, args)
    assert result.exit_code == 0, result.output
    (service,) = json.loads(result.output)
    broker = service["children"][0]["children"][0]["metadata"]["deployment"]["broker"]
    assert broker["guid"] == urllib.parse.quote(crn, safe="") and broker["guid"].startswith("crn%3Av1%3A")

    # An explicit --broker-guid wins over the environment.
    result = CliRunner(env={"DRBROKER_BROKER_CRN": crn}).invoke(main, [*args, "--broker-guid", "crn%3Ax"])
    broker = json.loads(result.output)[0]["children"][0]["children"][0]["metadata"]["deployment"]["broker"]
    assert broker["guid"] == "crn%3Ax"
