"""Dual authorisation on the simulated Key Protect means two people: deprovisioning a root key with
``encryption.dual_auth_delete`` sets it for deletion and waits, and only ``drbroker keys approve-deletion``
by another identity lets the deprovision finish. Through the real service layer (OSB API, worker) and the
real CLI (click's runner) on the same SQLite file; a broker restarted while it waits still finishes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from broker.app import Runtime, build_runtime, create_app
from broker.cli import main
from broker.orchestrators.simulated.cloud import SimulatedCloud
from broker.security.audit import AuditTrail
from tests.conftest import ROOT, make_settings
from tests.e2e.conftest import wait_until
from tests.services.conftest import DR, params_for

PLAN = "ksys-managed-byok"


def _start(tmp_path: Path, made: list[Runtime]) -> DR:
    rt = build_runtime(make_settings(tmp_path))
    made.append(rt)
    rt.worker.start()
    return DR(create_app(runtime=rt).test_client(), rt)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key in [k for k in os.environ if k.startswith("DRBROKER_")]:
        monkeypatch.delenv(key)
    env = {"DRBROKER_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}", "DRBROKER_CATALOG": str(ROOT / "catalog")}
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(main, ["keys", *args], env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result
    return run


@pytest.fixture
def dr(tmp_path: Path, made: list[Runtime]) -> Iterator[DR]:
    yield _start(tmp_path, made)


def _last(dr: DR, iid: str) -> dict[str, Any]:
    r = dr.get(f"/v2/service_instances/{iid}/last_operation")
    assert r.status_code == 200, r.get_data(as_text=True)
    return dict(r.json)


def _root_key(dr: DR, iid: str) -> Any:
    return SimulatedCloud(dr.runtime.store.engine).get("root_key", iid)


def _dual_params() -> dict[str, Any]:
    params = params_for(PLAN)
    params["encryption"] = {**params["encryption"], "dual_auth_delete": True}
    return params


def test_deprovision_waits_for_a_second_person_who_approves_with_the_cli(dr: DR, cli: Any) -> None:
    dr.ready_plan("da-1", PLAN, _dual_params())
    key = _root_key(dr, "da-1")
    assert key is not None and key.data["dual_auth_delete"] is True
    assert dr.deprovision("da-1", plan=dr.pid(PLAN)).status_code == 202
    waiting = wait_until(lambda: (lambda lo: lo if "approve-deletion" in lo["description"] else None)(
        _last(dr, "da-1")), 20, "the deprovision waits for a second approver")
    assert waiting["state"] == "in progress", waiting
    assert "drbroker keys approve-deletion da-1 --approver" in waiting["description"], waiting
    assert "drbroker-worker" in waiting["description"], waiting
    # the broker approved once, and did not delete the key itself
    key = _root_key(dr, "da-1")
    assert key is not None and key.data["set_for_deletion"] is True
    assert key.data["deletion_auth"]["set_by"] == "drbroker-worker" and not key.data["deletion_auth"]["approved_by"]

    # the identity that set the key for deletion cannot be the second approver
    refused = cli("approve-deletion", "da-1", "--approver", "drbroker-worker", code=1)
    assert "second approver" in refused.output and "drbroker-worker" in refused.output, refused.output
    assert _root_key(dr, "da-1") is not None and _last(dr, "da-1")["state"] == "in progress"

    done = cli("approve-deletion", "da-1", "--approver", "alice")
    assert "approved" in done.output, done.output
    assert dr.wait("da-1", timeout=20)["state"] == "succeeded"
    assert _root_key(dr, "da-1") is None
    assert dr.inventory("da-1") == []

    records = [r for r in AuditTrail(dr.runtime.store).records() if r["action"] == "keys:approve-deletion"]
    assert [(r["outcome"], json.loads(r["detail"])["approver"]) for r in records] == \
        [("refused", "drbroker-worker"), ("ok", "alice")]
    assert all(r["instance_id"] == "da-1" for r in records)


def test_approval_before_deletion_was_asked_is_refused(dr: DR, cli: Any) -> None:
    dr.ready_plan("da-2", PLAN, _dual_params())
    out = cli("approve-deletion", "da-2", "--approver", "alice", code=1).output
    assert "not set for deletion" in out, out
    assert _root_key(dr, "da-2") is not None


def test_a_waiting_deprovision_survives_a_broker_restart(tmp_path: Path, made: list[Runtime], cli: Any) -> None:
    dr = _start(tmp_path, made)
    dr.ready_plan("da-3", PLAN, _dual_params())
    dr.deprovision("da-3", plan=dr.pid(PLAN))
    wait_until(lambda: "approve-deletion" in _last(dr, "da-3")["description"], 20, "waiting for an approver")
    dr.runtime.worker.stop(timeout=10)
    dr.runtime.store.engine.dispose()
    cli("approve-deletion", "da-3", "--approver", "bob")  # approved while no broker runs
    again = _start(tmp_path, made)
    assert again.wait("da-3", timeout=20)["state"] == "succeeded"
    assert _root_key(again, "da-3") is None


def test_waiting_for_a_second_approver_is_not_a_backend_error(dr: DR, cli: Any) -> None:
    from prometheus_client import REGISTRY

    def samples() -> tuple[float, float]:
        errors = REGISTRY.get_sample_value("drbroker_backend_errors_total",
                                           {"action": "delete_root_key", "kind": "failed"}) or 0.0
        parked = REGISTRY.get_sample_value("drbroker_step_seconds_count",
                                           {"action": "delete_root_key", "outcome": "parked"}) or 0.0
        return errors, parked

    dr.ready_plan("da-m", PLAN, _dual_params())
    errors, parked = samples()
    assert dr.deprovision("da-m", plan=dr.pid(PLAN)).status_code == 202
    wait_until(lambda: "approve-deletion" in _last(dr, "da-m")["description"], 20, "the deprovision parks")
    after_errors, after_parked = samples()
    assert after_parked > parked  # the park is observed, as itself
    assert after_errors == errors  # DrBrokerBackendErrors must not fire for a person's approval
    cli("approve-deletion", "da-m", "--approver", "alice")
    assert dr.wait("da-m", timeout=20)["state"] == "succeeded"
