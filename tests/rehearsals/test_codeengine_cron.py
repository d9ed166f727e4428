"""deploy/codeengine/jobs-cron.sh: a Code Engine job that runs ``drbroker jobs run-due`` and a cron subscription
that submits it; run with a stand-in ``ibmcloud`` on PATH that records its arguments."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

from croniter import croniter

from broker.cli import main
from tests.conftest import ROOT

SCRIPT = ROOT / "deploy" / "codeengine" / "jobs-cron.sh"
STUB = """#!/bin/sh
python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@" >> "$IBMCLOUD_CALLS"
[ -z "$IBMCLOUD_FAIL_CREATE" ] || case "$*" in *create*) exit 1;; esac
"""


def calls(tmp_path: Path, **env: str) -> list[list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "ibmcloud").write_text(STUB)
    (bin_dir / "ibmcloud").chmod(0o755)
    record = tmp_path / "calls.jsonl"
    record.unlink(missing_ok=True)
    run = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30,
                         env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "IBMCLOUD_CALLS": str(record), **env})
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in record.read_text().splitlines()]


def values(call: list[str], flag: str) -> list[str]:
    return [v for f, v in itertools.pairwise(call) if f == flag]


def test_the_script_parses_and_deploy_sh_runs_it() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    assert "jobs-cron.sh" in (SCRIPT.parent / "deploy.sh").read_text()


def test_a_job_runs_run_due_and_a_cron_subscription_submits_it(tmp_path: Path) -> None:
    job, sub = calls(tmp_path, APP="drb", IMAGE="icr.io/x/drb:1")
    assert job[:3] == ["ce", "job", "create"]
    argv = [v for f, v in itertools.pairwise(job) if f in ("--command", "--argument")]
    assert argv == ["drbroker", "jobs", "run-due", "--json"]
    # the command the job runs exists, with that option
    command = main.commands["jobs"].commands["run-due"]
    assert "--json" in {opt for p in command.params for opt in p.opts}
    assert values(job, "--name") == ["drb-run-due"] and values(job, "--env-from-secret") == ["drb"]
    assert values(job, "--image") == ["icr.io/x/drb:1"]
    assert sub[:4] == ["ce", "subscription", "cron", "create"]
    assert values(sub, "--destination-type") == ["job"] and values(sub, "--destination") == ["drb-run-due"]
    (schedule,) = values(sub, "--schedule")
    assert schedule == "*/5 * * * *" and croniter.is_valid(schedule)


def test_a_second_run_updates_what_the_first_created(tmp_path: Path) -> None:
    got = calls(tmp_path, IBMCLOUD_FAIL_CREATE="1", RUN_DUE_SCHEDULE="*/2 * * * *")
    verbs = [" ".join(c[:4]) for c in got]
    assert verbs == ["ce job create --name", "ce job update --name", "ce subscription cron create",
                     "ce subscription cron update"]
    assert values(got[-1], "--schedule") == ["*/2 * * * *"]
