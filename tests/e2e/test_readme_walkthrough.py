"""README.md's walk-throughs (curl, the DR one, ``drbroker client``), run exactly as written (only the port may
change) against a real ``drbroker serve`` that generated its own credentials, from a folder where
``.venv/bin/drbroker`` exists as after ``make run``; and with a wrong password, where each must stop at once
with a message saying so (never a Python traceback, never a poll that spins on 401)."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.conftest import BrokerProcess, base_env, free_port, query

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
CLIENT_DOC = REPO / "docs" / "client.md"  # the drbroker client walk-through, linked from the README
LOCAL = "http://127.0.0.1:8080"
PASTE_TIMEOUT = 60  # a block that loops (the old poll on a 401) is killed here and the test fails


def block(name: str) -> str:
    """The bash between ``<!-- name:start -->`` and ``<!-- name:end -->`` (README.md; the client's in its doc)."""
    doc = CLIENT_DOC if name == "client-walkthrough" else README
    pattern = re.compile(rf"<!-- {name}:start -->\s*```bash\n(?P<script>.*?)```\s*<!-- {name}:end -->", re.S)
    match = pattern.search(doc.read_text(encoding="utf-8"))
    assert match, f"{doc.name} has no {name} block"
    return match.group("script")


def on_port(script: str, port: int) -> str:
    """The block aimed at the test's broker: the README's one address, on the test's port."""
    assert script.count(LOCAL) == 1, f"the block must name {LOCAL} exactly once"
    return script.replace(LOCAL, f"http://127.0.0.1:{port}")


def setup(port: int) -> str:
    """The curl walk-through's first paragraph: its settings and ``poll``, which the DR walk-through uses."""
    first = on_port(block("walkthrough"), port).split("\n\n", 1)[0]
    assert "poll()" in first and "AUTH=" in first, first
    return first


@dataclass
class Readme:
    broker: BrokerProcess
    workdir: Path
    env: dict[str, str]
    password: str

    def run(self, script: str, *, password: str | None = None, strict: bool = True,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """``strict``: as a script (``bash -euo pipefail``, the first failure ends it); otherwise as pasted into
        a terminal (plain ``bash``: every line runs, whatever the one before did)."""
        shell = ["bash", "-euo", "pipefail", "-c"] if strict else ["bash", "-c"]
        return subprocess.run([*shell, script], cwd=self.workdir, capture_output=True, text=True, timeout=timeout,
                              env={**self.env, "BROKER_PASSWORD": password or self.password}, check=False)


def _readme_broker(broker_factory: Callable[..., BrokerProcess], tmp_path: Path, step: str = "0.1") -> Readme:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    (workdir / ".venv").symlink_to(Path(sys.prefix))
    # No credentials and no database URL: the broker generates .drbroker/credentials.json and uses
    # ./.drbroker/state.db in its working directory, as after `make run`.
    env = base_env(None, DRBROKER_CATALOG=str(REPO / "catalog"), DRBROKER_SIM_STEP_SECONDS=step)
    del env["DRBROKER_USERNAME"], env["DRBROKER_PASSWORD"]
    # The second terminal's home: the client's record of what it created lands there, not in the tester's.
    env.update(HOME=str(tmp_path / "home"), XDG_STATE_HOME=str(tmp_path / "home" / "state"))
    broker = broker_factory(None, cwd=workdir, env=env, port=free_port())
    printed = re.search(r"^  password: (\S+)$", broker.log_tail(100_000), re.M)
    assert printed, "the generated password is printed at start"
    return Readme(broker, workdir, env, printed.group(1))


def test_readme_walkthrough(broker_factory: Callable[..., BrokerProcess], tmp_path: Path) -> None:
    readme = _readme_broker(broker_factory, tmp_path)
    workdir, password = readme.workdir, readme.password
    credentials = workdir / ".drbroker" / "credentials.json"
    assert credentials.is_file()
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert (workdir / ".drbroker" / "state.db").is_file()
    assert json.loads(credentials.read_text())["username"] == "broker"
    # The password is printed once, at creation; the file keeps only its scrypt hash.
    assert password not in credentials.read_text()
    assert json.loads(credentials.read_text())["password_hash"].startswith("scrypt$")

    # As the README says: in the second terminal, BROKER_PASSWORD is set to the password make run printed.
    result = readme.run(on_port(block("walkthrough"), readme.broker.port), timeout=120)
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
    assert readme.broker.alive()


def test_readme_dr_walkthrough(broker_factory: Callable[..., BrokerProcess], tmp_path: Path) -> None:
    """The DR walk-through (ksys-managed-byok: bind, rehearsal, achieved RPO, clean-up), after the first block's
    settings, in the same shell."""
    readme = _readme_broker(broker_factory, tmp_path, step="0.05")
    script = on_port(block("walkthrough"), readme.broker.port) + "\n" + block("dr-walkthrough")
    result = readme.run(script)
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


def test_readme_client_walkthrough(broker_factory: Callable[..., BrokerProcess], tmp_path: Path) -> None:
    """The `drbroker client` section, in the second terminal (BROKER_PASSWORD set), after the curl walk-through
    (whose volumes it uses once they are free again)."""
    # Steps of 0.3 s: a provision lasts well past the client's first poll (Retry-After 1 s while queued), so a
    # poll lands on a running step however fast or loaded the machine is.
    readme = _readme_broker(broker_factory, tmp_path, step="0.3")
    curl = readme.run(on_port(block("walkthrough"), readme.broker.port), timeout=120)
    assert curl.returncode == 0, curl.stdout + curl.stderr
    result = readme.run(on_port(block("client-walkthrough"), readme.broker.port))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    out = result.stdout.splitlines()
    assert "grs-async" in result.stdout and "powervs-dr" in result.stdout, output  # the catalog
    assert any(line.startswith("provision: succeeded (replication consistent_copying") for line in out), output
    assert re.search(r"^provision: in progress \(step \d/7: ", result.stderr, re.M), output  # a line per step
    assert re.search(r"^dr-2 +powervs-dr +grs-async +provision: succeeded", result.stdout, re.M), output  # list
    assert "service: powervs-dr" in out and "plan: grs-async" in out, output  # names, not ids
    assert any(line.startswith("test_failover: succeeded") for line in out), output
    assert any(line.startswith("cleanup_test: succeeded") for line in out), output
    assert '"apikey"' in result.stdout and "unbind: succeeded" in out, output
    assert '"action": "cleanup_test"' in result.stdout, output  # last-operation --json names the DR action
    assert out[-1] == "deprovision: succeeded", output
    assert "succeeded: succeeded" not in output and "update:" not in output, output
    assert not (readme.workdir / "params.json").exists()  # the block cleans up what it wrote


def test_every_readme_walkthrough_stops_at_once_on_a_wrong_password(broker_factory: Callable[..., BrokerProcess],
                                                                   tmp_path: Path) -> None:
    readme = _readme_broker(broker_factory, tmp_path)
    port = readme.broker.port
    wrong = "not-" + readme.password
    curl, dr = on_port(block("walkthrough"), port), block("dr-walkthrough")
    client = on_port(block("client-walkthrough"), port)

    # As a script: the first refusal ends it, non-zero, saying why.
    first = readme.run(curl, password=wrong, timeout=PASTE_TIMEOUT)
    assert first.returncode != 0, first
    assert "the broker refused" in first.stderr and "BROKER_PASSWORD" in first.stderr, first.stderr
    assert '"operation"' not in first.stdout  # it stopped before provisioning

    second = readme.run(setup(port) + "\n" + dr, password=wrong, timeout=PASTE_TIMEOUT)
    assert second.returncode != 0, second
    assert "poll dr-1: 401: BROKER_PASSWORD is not the password make run printed" in second.stderr, second.stderr

    third = readme.run(client, password=wrong, timeout=PASTE_TIMEOUT)
    assert third.returncode == 3, third
    assert third.stderr.startswith("error: authentication failed: check --user/--password"), third.stderr
    assert "provision:" not in third.stdout + third.stderr

    # As pasted into a terminal: every line runs, each says it was refused, and the paste ends (no endless poll).
    for script in (curl + "\n" + dr, client):
        pasted = readme.run(script, password=wrong, strict=False, timeout=PASTE_TIMEOUT)
        text = pasted.stdout + pasted.stderr
        assert "Traceback" not in text and "KeyError" not in text, text
        assert "BROKER_PASSWORD" in text or "authentication failed" in text, text
    assert wrong not in text and readme.password not in text  # no password echoed back
    # and nothing was asked of the broker but refused (read from its database: after this many failures it
    # refuses this address for a while, whatever the password)
    assert query(readme.workdir / ".drbroker" / "state.db", "SELECT id FROM instances") == []
