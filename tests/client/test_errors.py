"""Failures (issue 15): a wrong password says so and stops at once (exit 3); with --json every failure is one
JSON object {"error", "description", "status"} on stdout, and the exit codes stay those documented."""

from __future__ import annotations

import json
import time

from tests.client.cli import client, drbroker, one_json, params
from tests.client.conftest import client_env
from tests.conftest import USER, grs_params

WRONG = "Wrong-Secret-Pass-0451"


def test_a_wrong_password_says_authentication_failed_and_exits_3_at_once(broker_factory, db_path, home) -> None:
    broker = broker_factory(db_path)
    env = client_env(home)
    for args in (["catalog"], ["list"], ["provision", "pw-1", "--plan", "grs-async", "-c", params(20), "--wait"],
                 ["last-operation", "pw-1"], ["deprovision", "pw-1", "--service", "powervs-dr", "--plan", "grs-async",
                                              "--wait"]):
        started = time.monotonic()
        out = drbroker("client", *args, "--url", broker.url, "--user", USER, "--password", WRONG, env=env, timeout=60)
        assert out.returncode == 3, (args, out)
        assert out.stderr.startswith("error: authentication failed: check --user/--password"), (args, out.stderr)
        assert out.stdout == "" and WRONG not in out.stderr
        assert time.monotonic() - started < 30  # never a poll loop (the bound is the subprocess timeout's half)
    out = drbroker("client", "catalog", "--json", "--url", broker.url, "--user", USER, "--password", WRONG, env=env,
                   timeout=60)
    assert out.returncode == 3 and out.stderr == "", out
    error = one_json(out)
    assert error["status"] == 401 and error["error"] == "Unauthorized", error
    assert error["description"].startswith("authentication failed: check --user/--password"), error


def test_every_failure_with_json_is_one_json_object_and_keeps_its_exit_code(broker_factory, db_path, home) -> None:
    broker = broker_factory(db_path, DRBROKER_SIM_STEP_SECONDS="0.2",
                            DRBROKER_SIM_FAULTS="onboard_auxiliary_volumes=fail")
    env = client_env(home)
    url = broker.url
    typo = json.dumps({**grs_params(130, volumes=1), "rpo_target_minuts": 5})
    cases = [
        # 1: the operation failed
        (["provision", "js-1", "--plan", "grs-async", "-c", params(31), "--wait"], 1, "OperationFailed", 200),
        # 3: the broker refused (its own error code and description)
        (["provision", "js-2", "--plan", "grs-async", "-c", typo], 3, None, 400),
        (["instance", "no-such-instance"], 3, None, 404),
        # 2: bad usage, ours or click's
        (["provision", "js-3", "--plan", "no-such-plan", "-c", params(33)], 2, "UsageError", None),
        (["provision", "js-3", "--plan", "grs-async", "-c", "{"], 2, "UsageError", None),
        (["provision", "js-3", "--plan", "grs-async", "-c", "@no-such-file.json"], 2, "UsageError", None),
        (["dr-action", "js-1"], 2, "UsageError", None),
        (["dr-action", "js-1", "--type", "teleport"], 2, "UsageError", None),
        # 5: --wait ran out of time
        (["provision", "js-4", "--plan", "grs-async", "-c", params(34), "--wait", "--timeout", "0.5"], 5, "Timeout",
         None),
    ]
    for args, code, error, status in cases:
        out = client(url, *args, "--json", env=env)
        assert out.returncode == code, (args, out)
        doc = one_json(out)
        assert isinstance(doc, dict) and {"error", "description", "status"} <= set(doc), (args, doc)
        assert doc["status"] == status and isinstance(doc["description"], str) and doc["description"], (args, doc)
        assert doc["error"] == error if error else doc["error"], (args, doc)
    assert "rpo_target_minuts" in one_json(client(url, *cases[1][0], "--json", env=env))["description"]
    # 4: nothing listens there
    out = drbroker("client", "catalog", "--json", "--url", "http://127.0.0.1:9", env=env, timeout=60)
    assert out.returncode == 4, out
    assert one_json(out) == {"error": "Unreachable", "description": one_json(out)["description"], "status": None}
    # and a group-level --json covers a subcommand's usage error too
    out = drbroker("client", "--json", "--url", url, "dr-action", "js-1", env=env, timeout=60)
    assert out.returncode == 2 and one_json(out)["error"] == "UsageError", out


def test_failures_without_json_are_one_line_on_stderr(broker_factory, db_path, home) -> None:
    broker = broker_factory(db_path)
    env = client_env(home)
    out = client(broker.url, "provision", "tx-1", "--plan", "grs-async", "-c", "@missing.json", env=env)
    assert out.returncode == 2 and "missing.json" in out.stderr and "Traceback" not in out.stderr, out
    out = client(broker.url, "instance", "tx-2", env=env)
    assert out.returncode == 3 and out.stdout == "", out
    assert out.stderr.startswith("error: 404 ") and "tx-2" in out.stderr, out.stderr
