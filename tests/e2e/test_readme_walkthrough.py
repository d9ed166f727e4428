"""README.md's curl walk-through, run exactly as written (only the port may change) against a real
``drbroker serve`` that generated its own credentials."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import BrokerProcess, base_env, free_port

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BLOCK = re.compile(r"<!-- walkthrough:start -->\s*```bash\n(?P<script>.*?)```\s*<!-- walkthrough:end -->", re.S)
B_LINE = re.compile(r"^B=http://127\.0\.0\.1:8080$", re.M)


def walkthrough(port: int) -> str:
    match = BLOCK.search(README.read_text(encoding="utf-8"))
    assert match, "README.md has no walkthrough block"
    script, count = B_LINE.subn(f"B=http://127.0.0.1:{port}", match.group("script"))
    assert count == 1, "the walkthrough must set B=http://127.0.0.1:8080 exactly once"
    return script


def test_readme_walkthrough(broker_factory: Callable[..., BrokerProcess], tmp_path: Path) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    # No credentials and no database URL: the broker generates .drbroker/credentials.json and uses
    # ./.drbroker/state.db in its working directory, as after `make run`.
    env = base_env(None, DRBROKER_CATALOG=str(REPO / "catalog"), DRBROKER_SIM_STEP_SECONDS="0.1")
    del env["DRBROKER_USERNAME"], env["DRBROKER_PASSWORD"]
    port = free_port()
    broker = broker_factory(None, cwd=workdir, env=env, port=port)

    credentials = workdir / ".drbroker" / "credentials.json"
    assert credentials.is_file()
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert (workdir / ".drbroker" / "state.db").is_file()
    assert json.loads(credentials.read_text())["username"] == "broker"
    # The password is printed once, at creation; the file keeps only its scrypt hash.
    printed = re.search(r"^  password: (\S+)$", broker.log_tail(100_000), re.M)
    assert printed, "the generated password is printed at start"
    password = printed.group(1)
    assert password not in credentials.read_text()
    assert json.loads(credentials.read_text())["password_hash"].startswith("scrypt$")

    # As the README says: in the second terminal, BROKER_PASSWORD is set to the password make run printed.
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough(broker.port)], cwd=workdir,
                            env={**env, "BROKER_PASSWORD": password}, capture_output=True, text=True, timeout=120,
                            check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines[-1] == "410", output
    assert "grs-async" in lines, output  # the catalog listing
    responses = [json.loads(line) for line in lines if line.startswith("{")]
    provision, bind, unbind, deprovision = responses
    assert provision["operation"] and provision["dashboard_url"], output
    assert '"state":"succeeded"' in output and "succeeded: provisioned" in output, output
    assert "succeeded: deprovisioned" in output, output
    assert bind["credentials"]["iam"]["apikey"], output  # credentials were returned on bind
    assert unbind == {}, output
    assert deprovision["operation"] and deprovision["operation"] != provision["operation"], output
    assert broker.alive()



DR_BLOCK = re.compile(r"<!-- dr-walkthrough:start -->\s*```bash\n(?P<script>.*?)```\s*<!-- dr-walkthrough:end -->",
                      re.S)


def test_readme_dr_walkthrough(broker_factory: Callable[..., BrokerProcess], tmp_path: Path) -> None:
    """The DR walk-through (ksys-managed-byok: bind, rehearsal, achieved RPO, clean-up), after the first block's
    settings, in the same shell, from a folder where `.venv/bin/drbroker` exists as after `make run`."""
    import sys

    workdir = tmp_path / "cwd"
    workdir.mkdir()
    (workdir / ".venv").symlink_to(Path(sys.prefix))
    env = base_env(None, DRBROKER_CATALOG=str(REPO / "catalog"), DRBROKER_SIM_STEP_SECONDS="0.05")
    del env["DRBROKER_USERNAME"], env["DRBROKER_PASSWORD"]
    broker = broker_factory(None, cwd=workdir, env=env, port=free_port())
    password = re.search(r"^  password: (\S+)$", broker.log_tail(100_000), re.M).group(1)
    dr = DR_BLOCK.search(README.read_text(encoding="utf-8"))
    assert dr, "README.md has no DR walkthrough block"
    script = walkthrough(broker.port) + "\n" + dr.group("script")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=workdir,
                            env={**env, "BROKER_PASSWORD": password}, capture_output=True, text=True, timeout=180,
                            check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "succeeded: test_failover done" in output, output
    assert "replication_state: consistent_copying" in result.stdout, output
    assert "rpo_met: True" in result.stdout, output
    assert re.search(r"last_rehearsal_rto_seconds: \d", result.stdout), output
    assert "test_failover_active: True" in result.stdout, output
    assert '"wrapped_dek"' in result.stdout and '"plaintext"' not in result.stdout, output
    assert "succeeded: cleanup_test done" in output, output
    assert result.stdout.rstrip().endswith("no simulated resources"), output
