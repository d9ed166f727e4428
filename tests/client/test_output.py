"""What the client prints (issue 15): names, not ids; one status line per change of state while waiting and the
result once, on a terminal or not; no doubled words; the DR action named; ``list``."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import threading

from tests.client.cli import client, drbroker, one_json, params
from tests.client.conftest import client_env
from tests.conftest import GRS_PLAN, PASSWORD, SERVICE_ID, USER
from tests.e2e.conftest import drbroker_command

DOUBLED = re.compile(r"\b(\w+)\W+\1\b")  # "succeeded: succeeded", "test_failover: test_failover done"


def _undoubled(text: str) -> None:
    assert not DOUBLED.search(text.replace("step ", "")), text


def test_provision_wait_prints_one_line_per_change_then_the_result_once(shared_broker, home) -> None:
    out = client(shared_broker.url, "provision", "out-1", "--plan", "grs-async", "-c", params(1), "--wait",
                 env=client_env(home))
    assert out.returncode == 0, out.stderr
    # stdout (a pipe here): the result, once
    assert re.fullmatch(r"provision: succeeded \(replication consistent_copying, achieved RPO \d+ s "
                        r"\(target 15 min\)\)\n", out.stdout), out.stdout
    # stderr: one line per change of state while it ran, never the result again
    progress = out.stderr.splitlines()
    assert progress and all(line.startswith("provision: in progress") for line in progress), out.stderr
    assert all(a != b for a, b in itertools.pairwise(progress)), out.stderr
    steps = [int(m.group(1)) for line in progress if (m := re.fullmatch(r"provision: in progress \(step (\d)/7: "
                                                                         r"[a-z][a-z_ ]+[a-z]\)", line))]
    # how many steps a poll catches depends on the machine's load; that each line is a change, in order, does not
    assert len(progress) >= 2 and steps and steps == sorted(steps), out.stderr
    _undoubled(out.stdout + out.stderr)
    assert "\x1b" not in out.stdout + out.stderr


def test_on_a_terminal_the_result_is_shown_once(shared_broker, home) -> None:
    """stdout and stderr on one pseudo-terminal, as in an SRE's shell."""
    import pty

    primary, secondary = pty.openpty()
    command = [*drbroker_command(), "client", "provision", "out-2", "--plan", "grs-async", "-c", params(2),
               "--wait", "--url", shared_broker.url, "--user", USER, "--password", PASSWORD]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary,
                            env=client_env(home, COLUMNS="200"))
    os.close(secondary)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(primary, 4096)
            except OSError:  # EIO: the terminal's other side is closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert proc.wait(timeout=120) == 0
    reader.join(10)
    os.close(primary)
    screen = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    lines = [line for line in screen.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("provision: succeeded")] == [lines[-1]], screen
    assert any(line.startswith("provision: in progress (step ") for line in lines), screen
    _undoubled(screen)


def test_a_dr_action_is_named_by_its_type_while_waiting_and_afterwards(shared_broker, home) -> None:
    env = client_env(home)
    url = shared_broker.url
    assert client(url, "provision", "out-3", "--plan", "grs-async", "-c", params(3), "--wait", env=env).returncode == 0
    out = client(url, "dr-action", "out-3", "--type", "test_failover", "--wait", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("test_failover: succeeded"), out.stdout
    assert out.stderr and all(line.startswith("test_failover: in progress") for line in out.stderr.splitlines())
    assert "update" not in out.stdout + out.stderr
    _undoubled(out.stdout + out.stderr)

    out = client(url, "dr-action", "out-3", "--type", "cleanup_test", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("cleanup_test: accepted"), out.stdout
    out = client(url, "last-operation", "out-3", env=env)
    assert out.returncode == 0 and re.match(r"cleanup_test: (in progress|succeeded)", out.stdout), out.stdout
    assert "update" not in out.stdout
    doc = one_json(client(url, "last-operation", "out-3", "--json", env=env))
    assert doc["action"] == "cleanup_test" and doc["state"] in ("in progress", "succeeded"), doc
    # another machine (no record of what this client started) still names it, from the broker's description
    assert client(url, "dr-action", "out-3", "--type", "resync", "--wait", env=env).returncode == 0
    out = client(url, "last-operation", "out-3", env=client_env(home / "elsewhere"))
    assert out.stdout.startswith("resync: succeeded"), out.stdout


def test_instance_shows_service_and_plan_names(shared_broker, home) -> None:
    env = client_env(home)
    url = shared_broker.url
    # a plan and a service are accepted by id as well as by name
    out = client(url, "provision", "out-4", "--service", SERVICE_ID, "--plan", GRS_PLAN, "-c", params(4), "--wait",
                 env=env)
    assert out.returncode == 0, out.stderr
    out = client(url, "instance", "out-4", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "service: powervs-dr" in lines and "plan: grs-async" in lines, out.stdout
    assert GRS_PLAN not in out.stdout and SERVICE_ID not in out.stdout
    assert "replication_state: consistent_copying" in lines
    # the protection status straight after the names, not somewhere in the alphabet of attributes
    assert lines[3].startswith("protection: protected"), out.stdout
    out = client(url, "dr-action", "out-4", "--type", "failover", "--mode", "unplanned", "--wait", env=env)
    assert out.returncode == 0, out.stderr
    lines = client(url, "instance", "out-4", env=env).stdout.splitlines()
    assert lines[3].startswith("protection: not protected ("), lines
    assert lines[4].startswith("next step: ") and "failback" in lines[4], lines
    doc = one_json(client(url, "instance", "out-4", "--json", env=env))
    assert (doc["plan_id"], doc["plan_name"], doc["service_name"]) == (GRS_PLAN, "grs-async", "powervs-dr")


def test_list_shows_what_this_client_created_on_this_broker(shared_broker, home, tmp_path) -> None:
    env = client_env(home)
    url = shared_broker.url
    out = client(url, "list", env=env)
    assert out.returncode == 0, out.stderr
    assert "no instances" in out.stdout and "drbroker instances list" in out.stderr  # where the full list is
    assert client(url, "provision", "out-5", "--plan", "grs-async", "-c", params(5), env=env).returncode == 0
    assert client(url, "provision", "out-6", "--plan", "grs-async", "-c", params(6), "--wait",
                  env=env).returncode == 0
    out = client(url, "list", env=env)
    assert out.returncode == 0, out.stderr
    rows = [line.split(None, 3) for line in out.stdout.splitlines()]
    assert rows[0] == ["INSTANCE", "SERVICE", "PLAN", "LAST OPERATION"], out.stdout
    by_id = {row[0]: row for row in rows[1:]}
    assert by_id["out-6"][1:3] == ["powervs-dr", "grs-async"], out.stdout
    assert by_id["out-6"][3].startswith("provision: succeeded (replication consistent_copying"), out.stdout
    assert by_id["out-5"][1:3] == ["powervs-dr", "grs-async"], out.stdout
    doc = one_json(client(url, "list", "--json", env=env))
    assert {d["instance_id"] for d in doc} == {"out-5", "out-6"}
    assert all(d["plan"] == "grs-async" and d["plan_id"] == GRS_PLAN for d in doc), doc

    assert client(url, "deprovision", "out-6", "--wait", env=env).returncode == 0
    assert [d["instance_id"] for d in one_json(client(url, "list", "--json", env=env))] == ["out-5"]
    # the record is per broker URL: the same machine, another broker address, has nothing
    other = url.replace("127.0.0.1", "localhost")
    assert json.loads(drbroker("client", "list", "--json", "--url", other, "--user", USER, "--password", PASSWORD,
                               env=env).stdout) == []
