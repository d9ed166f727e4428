"""``drbroker operations list|show|retry|abandon`` on a real database (click's runner, the real store)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.app import Runtime
from broker.cli import main
from broker.domain.models import InstanceState, OperationState
from tests.conftest import ROOT, grs_params
from tests.workflows.helpers import op, provision, run_to_end, scripted_runtime


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime, _ = scripted_runtime(tmp_path, sim_step_seconds=0.0, sim_faults="onboard_auxiliary_volumes=fail")
    yield runtime
    runtime.worker.stop(timeout=10)
    runtime.store.engine.dispose()


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for key in [k for k in __import__("os").environ if k.startswith("DRBROKER_")]:
        monkeypatch.delenv(key)
    env = {"DRBROKER_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}", "DRBROKER_CATALOG": str(ROOT / "catalog")}
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(main, ["operations", *args], env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result
    return run


def _failed_provision(rt: Runtime) -> str:
    op_id = provision(rt, "i-failed", grs_params(0))
    run_to_end(rt.worker, op_id)
    assert op(rt, op_id).state == OperationState.FAILED
    return op_id


def test_list_shows_a_table_newest_first_and_filters(rt: Runtime, cli) -> None:
    failed = _failed_provision(rt)
    queued = provision(rt, "i-queued", grs_params(1))
    out = cli("list").output.splitlines()
    assert out[0].split() == ["ID", "TYPE", "STATE", "INSTANCE", "BINDING", "DONE", "CLAIMS", "CREATED",
                              "DESCRIPTION"]
    assert out[1].split()[:4] == [queued, "provision", "queued", "i-queued"]
    assert out[2].split()[:6] == [failed, "provision", "failed", "i-failed", "-", "5/7"]
    assert [line.split()[0] for line in cli("list", "--state", "failed").output.splitlines()[1:]] == [failed]
    assert [line.split()[0] for line in cli("list", "--instance", "i-queued").output.splitlines()[1:]] == [queued]
    assert cli("list", "--state", "in_progress").output == "no operations\n"
    assert "Invalid value for '--state'" in cli("list", "--state", "bogus", code=2).output


def test_list_json(rt: Runtime, cli) -> None:
    failed = _failed_provision(rt)
    (row,) = json.loads(cli("list", "--json").output)
    assert row["id"] == failed and row["state"] == "failed" and row["type"] == "provision"
    assert row["created_at"].endswith("Z") and row["step_total"] == 7


def test_show_prints_steps_attempts_timings_and_errors(rt: Runtime, cli) -> None:
    failed = _failed_provision(rt)
    text = cli("show", failed).output
    assert f"operation:        {failed}" in text
    assert "state:            failed" in text
    assert "maximum_polling_duration 7200 s" in text
    assert "error:            step 6/7 (onboarding auxiliary volumes at the secondary) failed" in text
    lines = text.split("steps:\n", 1)[1].splitlines()
    assert lines[0].split() == ["#", "ACTION", "STATE", "ATTEMPTS", "STARTED", "TOOK", "ERROR"]
    assert lines[2].split()[:4] == ["2", "create_dr_policy", "compensated", "1"]
    assert lines[6].split()[:4] == ["6", "onboard_auxiliary_volumes", "failed", "1"]
    assert "injected permanent fault" in lines[6]
    assert lines[7].split()[:4] == ["7", "verify", "pending", "0"]


def test_show_json_has_every_step_and_the_lease(rt: Runtime, cli) -> None:
    op_id = provision(rt, "i-held", grs_params(1))
    assert rt.worker.claim(op_id)
    data = json.loads(cli("show", op_id, "--json").output)
    assert data["state"] == "in_progress" and data["lease_owner"] == rt.worker.owner
    assert data["lease_until"].endswith("Z") and data["deadline"].endswith("Z")
    assert [s["state"] for s in data["steps"]] == ["pending"] * 7
    assert data["steps"][0] == {"idx": 0, "action": "validate_sites", "title": "validating sites",
                                "state": "pending", "attempts": 0, "started_at": None, "finished_at": None,
                                "error": None}


def test_retry_queues_a_failed_operation_and_refuses_others(rt: Runtime, cli) -> None:
    failed = _failed_provision(rt)
    out = cli("retry", failed).output
    assert out.startswith(f"operation {failed} (provision of i-failed) queued again from step 1/7")
    assert op(rt, failed).state == OperationState.QUEUED
    with rt.store.read() as tx:
        assert tx.get_instance("i-failed").state == InstanceState.PROVISIONING
    refused = cli("retry", failed, code=1).output
    assert "is queued; only a failed operation can be retried" in refused


def test_abandon_ends_an_operation_and_refuses_a_finished_one(rt: Runtime, cli) -> None:
    op_id = provision(rt, "i-stuck", grs_params(1))
    assert rt.worker.claim(op_id)
    out = cli("abandon", op_id).output
    assert out.startswith(f'operation {op_id} (provision of i-stuck) abandoned: failed, "abandoned by operator"')
    abandoned = op(rt, op_id)
    assert abandoned.state == OperationState.FAILED and abandoned.lease_owner is None
    assert "has already failed" in cli("abandon", op_id, code=1).output


def test_unknown_operation_is_an_error(rt: Runtime, cli) -> None:
    for command in ("show", "retry", "abandon"):
        assert "operation nope does not exist" in cli(command, "nope", code=1).output
