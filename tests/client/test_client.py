"""``drbroker client`` against a real ``drbroker serve``: every command, --wait through a slow provision,
--json, profiles, and the exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import requests

from broker.client.osb import OSBClient
from tests.conftest import GRS_PARAMS, PASSWORD, USER
from tests.e2e.conftest import drbroker_command

PARAMS = json.dumps(GRS_PARAMS)


def run(url: str, *args: str, profile: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    auth = ["--profile", str(profile)] if profile else ["--url", url, "--user", USER, "--password", PASSWORD]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRBROKER_CLIENT_")}
    return subprocess.run([*drbroker_command(), "client", *auth, *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=env)


def _broker_get(url: str, path: str) -> requests.Response:
    """Ask the broker itself (not through the client under test)."""
    return requests.get(url + path, auth=(USER, PASSWORD), headers={"X-Broker-API-Version": "2.17"}, timeout=30)


@pytest.fixture(autouse=True)
def _own_home(tmp_path, monkeypatch) -> None:
    """The client keeps a record of what it created under $XDG_STATE_HOME: never the real one."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "home" / "state"))


@pytest.fixture
def slow_broker(broker_factory, db_path):
    return broker_factory(db_path, DRBROKER_SIM_STEP_SECONDS="0.3")


def test_provision_wait_follows_progress_to_success_then_every_command_works(slow_broker, tmp_path) -> None:
    url = slow_broker.url
    out = run(url, "catalog")
    assert out.returncode == 0 and "grs-async" in out.stdout and "powervs-dr" in out.stdout

    out = run(url, "provision", "cli-1", "--service", "powervs-dr", "--plan", "grs-async", "-c", PARAMS, "--wait")
    assert out.returncode == 0, out.stderr
    assert "succeeded" in out.stdout
    numbers = [int(m.group(1)) for m in re.finditer(r"step (\d+)/7", out.stderr)]
    assert len(numbers) >= 2 and numbers == sorted(numbers), out.stderr  # progress was followed, step by step

    out = run(url, "--json", "instance", "cli-1")
    assert out.returncode == 0
    body = json.loads(out.stdout)
    assert body["metadata"]["attributes"]["replication_state"] == "consistent_copying"

    out = run(url, "last-operation", "cli-1")
    assert out.returncode == 0 and out.stdout.startswith("provision: succeeded"), out.stdout

    params_file = tmp_path / "p.json"
    params_file.write_text(json.dumps({"rpo_target_minutes": 30}))
    out = run(url, "update", "cli-1", "-c", f"@{params_file}", "--wait")
    assert out.returncode == 0, out.stderr
    assert json.loads(run(url, "--json", "instance", "cli-1").stdout)["parameters"]["rpo_target_minutes"] == 30

    out = run(url, "--json", "dr-action", "cli-1", "--type", "test_failover", "--wait")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"] == "succeeded"

    out = run(url, "--json", "bind", "cli-1", "app-1")
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)["credentials"]
    stored = _broker_get(url, "/v2/service_instances/cli-1/service_bindings/app-1")
    assert stored.status_code == 200 and stored.json()["credentials"] == printed  # what the broker issued
    assert printed["replication"]["primary"]["volume_group_id"].startswith("volume_g-")
    assert run(url, "unbind", "cli-1", "app-1").returncode == 0
    assert _broker_get(url, "/v2/service_instances/cli-1/service_bindings/app-1").status_code == 404

    out = run(url, "deprovision", "cli-1", "--wait")
    assert out.returncode == 0, out.stderr
    assert run(url, "instance", "cli-1").returncode == 3  # 404: gone


def test_wait_honours_retry_after(slow_broker) -> None:
    client = OSBClient(slow_broker.url, user=USER, password=PASSWORD)
    sid, pid = client.resolve("powervs-dr", "grs-async")
    resp = client.provision("ra-1", sid, pid, GRS_PARAMS)
    assert resp.status == 202
    slept: list[float] = []
    hints: list[str] = []
    original = client.last_operation

    def spy(*a, **kw):
        r = original(*a, **kw)
        hints.append(r.headers.get("Retry-After", ""))
        return r

    client.last_operation = spy  # type: ignore[method-assign]
    import time

    final = client.wait("ra-1", operation=resp.body["operation"], sleep=lambda s: (slept.append(s), time.sleep(s)))
    assert final["state"] == "succeeded"
    assert slept and all(hints[i] and abs(slept[i] - float(hints[i])) < 0.5 for i in range(len(slept)))


def test_exit_codes_say_what_happened(broker_factory, db_path, tmp_path) -> None:
    broker = broker_factory(db_path, DRBROKER_SIM_STEP_SECONDS="0.3",
                            DRBROKER_SIM_FAULTS="onboard_auxiliary_volumes=fail")
    url = broker.url
    # 1: the operation failed
    out = run(url, "provision", "ec-1", "--service", "powervs-dr", "--plan", "grs-async", "-c", PARAMS, "--wait")
    assert out.returncode == 1, out
    assert "failed" in out.stdout
    # 3: the broker refused (a typo in a parameter)
    out = run(url, "provision", "ec-2", "--service", "powervs-dr", "--plan", "grs-async",
              "-c", json.dumps({**GRS_PARAMS, "rpo_target_minuts": 5}))
    assert out.returncode == 3 and "rpo_target_minuts" in out.stderr
    # 2: bad usage (unknown plan name, malformed JSON)
    assert run(url, "provision", "ec-3", "--service", "powervs-dr", "--plan", "nope", "-c", PARAMS).returncode == 2
    assert run(url, "provision", "ec-3", "--service", "powervs-dr", "--plan", "grs-async", "-c", "{").returncode == 2
    # 5: --wait ran out of time
    out = run(url, "provision", "ec-4", "--service", "powervs-dr", "--plan", "grs-async",
              "-c", json.dumps({**GRS_PARAMS, "protected_volumes": ["vol-db-1"]}), "--wait", "--timeout", "0.5")
    assert out.returncode == 5, out
    # 4: nothing listens there
    out = subprocess.run([*drbroker_command(), "client", "--url", "http://127.0.0.1:9", "catalog"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 4 and "cannot reach" in out.stderr
    # 3: wrong credentials are a refusal
    out = subprocess.run([*drbroker_command(), "client", "--url", url, "--user", "x", "--password", "y", "catalog"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and "401" in out.stderr


def test_profile_file_supplies_url_and_credentials(slow_broker, tmp_path) -> None:
    profile = tmp_path / "client.yaml"
    profile.write_text(f"url: {slow_broker.url}\nuser: {USER}\npassword: {PASSWORD}\n")
    out = run("", "--json", "catalog", profile=profile)
    assert out.returncode == 0
    assert json.loads(out.stdout)["services"][0]["name"] == "powervs-dr"


def test_client_module_runs_without_a_tty_and_prints_no_secret(slow_broker) -> None:
    url = slow_broker.url
    # stdin, stdout and stderr are pipes here: --wait must print plain progress lines, no terminal codes
    out = run(url, "provision", "tty-1", "--service", "powervs-dr", "--plan", "grs-async", "-c", PARAMS, "--wait")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("provision: succeeded (")
    progress = out.stderr.splitlines()
    assert progress and all(line.startswith("provision: in progress") for line in progress), out.stderr
    assert any(re.match(r"provision: in progress \(step \d+/7: ", line) for line in progress), out.stderr
    assert "\x1b" not in out.stdout + out.stderr and "\r" not in out.stderr
    # the client really provisioned: the broker has the instance, with the parameters sent
    body = _broker_get(url, "/v2/service_instances/tty-1").json()
    assert body["parameters"]["protected_volumes"] == GRS_PARAMS["protected_volumes"]
    # no secret on the way, neither when it works nor when the broker refuses the password
    wrong = "Wrong-Secret-Pass-0451"
    refused = subprocess.run([*drbroker_command(), "client", "--url", url, "--user", USER, "--password", wrong,
                              "catalog"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert refused.returncode == 3 and "401" in refused.stderr
    for result in (out, run(url, "catalog"), refused):
        text = result.stdout + result.stderr
        assert PASSWORD not in text and wrong not in text
