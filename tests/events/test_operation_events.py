"""The DR events of operations, through the real Flask app and worker: provision, bind, unbind, deprovision,
rehearsals (passed, failed on a step, failed on its RTO), failover and failback, step failures, and the two
paths that fail operations outside the engine (the deadline reaper, an operator's abandon)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from broker.app import Runtime, build_runtime, create_app
from broker.domain.models import OperationState
from broker.services.operations import ABANDONED, OperationsAdmin
from broker.workflows.engine import LeaseLost
from broker.workflows.worker import Worker
from tests.conftest import make_settings
from tests.events.conftest import events, types
from tests.services.conftest import DR


def _act(dr: DR, iid: str, kind: str, mode: str | None = None) -> str:
    r = dr.action(iid, kind, mode)
    assert r.status_code == 202, r.get_data(as_text=True)
    return str(r.json["operation"])


def _start(tmp_path: Path, made: list[Runtime], **settings: Any) -> DR:
    rt = build_runtime(make_settings(tmp_path, **settings))
    made.append(rt)
    rt.worker.start()
    return DR(create_app(runtime=rt).test_client(), rt)


def test_provision_bind_unbind_and_deprovision_each_record_one_event(dr: DR) -> None:
    dr.ready("ev-1")
    bound = dr.bind("ev-1", "b-1", parameters={"purpose": "readonly"})
    assert bound.status_code == 201, bound.get_data(as_text=True)
    assert dr.unbind("ev-1", "b-1").status_code == 200
    assert dr.deprovision("ev-1").status_code == 202
    assert dr.wait("ev-1")["state"] == "succeeded"

    got = events(dr.runtime, instance_id="ev-1")
    assert [e["type"] for e in got] == ["instance.provisioned", "binding.issued", "binding.revoked",
                                        "instance.deprovisioned"]
    assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)
    issued, revoked = got[1], got[2]
    assert issued["binding_id"] == revoked["binding_id"] == "b-1"
    assert issued["data"] == revoked["data"] == {"purpose": "readonly"}
    assert issued["severity"] == "info" and issued["operation_id"]
    # no credential is ever in an event: not the API key, not the wrapped data key
    text = json.dumps(got)
    for value in bound.json["credentials"]["iam"].values():
        if isinstance(value, str) and len(value) > 8:
            assert value not in text


def test_a_rehearsal_records_its_start_and_its_pass_with_the_measured_rto(dr: DR) -> None:
    dr.ready("ev-r")
    op_id = _act(dr, "ev-r", "test_failover")
    assert dr.wait("ev-r")["state"] == "succeeded"
    attrs = dr.attributes("ev-r")
    started, passed = events(dr.runtime, instance_id="ev-r", types=["rehearsal.started", "rehearsal.passed"])
    assert started["type"] == "rehearsal.started" and passed["type"] == "rehearsal.passed"
    assert started["operation_id"] == passed["operation_id"] == op_id
    assert started["data"] == {"operation_id": op_id, "action": "test_failover", "scheduled": False}
    assert passed["data"]["rto_seconds"] == attrs["last_rehearsal_rto_seconds"]
    assert passed["data"]["rto_target_seconds"] == attrs["rto_target_seconds"] == 240 * 60
    assert passed["data"]["rto_met"] is True and passed["data"]["scheduled"] is False
    assert started["seq"] < passed["seq"]


def test_a_full_rehearsal_action_records_the_same_events(dr: DR) -> None:
    dr.ready("ev-full")
    op_id = _act(dr, "ev-full", "rehearsal")
    assert dr.wait("ev-full")["state"] == "succeeded"
    got = events(dr.runtime, instance_id="ev-full", types=["rehearsal.started", "rehearsal.passed"])
    assert [(e["type"], e["data"]["action"], e["operation_id"]) for e in got] == [
        ("rehearsal.started", "rehearsal", op_id), ("rehearsal.passed", "rehearsal", op_id)]
    assert got[1]["data"]["rto_met"] is True


def test_a_rehearsal_that_misses_its_rto_target_is_recorded_as_failed(dr: DR, monkeypatch: Any) -> None:
    dr.ready("ev-slow")
    plan = dr.runtime.catalog.find_plan("grs-async")
    monkeypatch.setitem(plan.features, "rto_target_minutes", 1e-9)  # any measured RTO misses it
    _act(dr, "ev-slow", "test_failover")
    assert dr.wait("ev-slow")["state"] == "succeeded"  # the operation worked; the rehearsal proved nothing
    (failed,) = events(dr.runtime, instance_id="ev-slow", types=["rehearsal.failed"])
    assert failed["severity"] == "critical"
    assert failed["data"]["rto_met"] is False and failed["data"]["rto_seconds"] > failed["data"]["rto_target_seconds"]
    assert "over the target" in failed["data"]["reason"]
    assert "rehearsal.passed" not in types(dr.runtime, instance_id="ev-slow")


def test_a_rehearsal_whose_verification_fails_records_the_step_and_the_failed_rehearsal(
        tmp_path: Path, made: list[Runtime]) -> None:
    dr = _start(tmp_path, made, sim_faults="verify_rehearsal=fail")
    dr.ready("ev-f")
    op_id = _act(dr, "ev-f", "test_failover")
    assert dr.wait("ev-f")["state"] == "failed"
    got = events(dr.runtime, instance_id="ev-f")
    assert [e["type"] for e in got] == ["instance.provisioned", "rehearsal.started", "step.failed",
                                        "rehearsal.failed"]
    step, failed = got[2], got[3]
    assert step["data"]["action"] == "verify_rehearsal" and step["data"]["operation_type"] == "update"
    assert step["data"]["dr_action"] == "test_failover" and step["operation_id"] == op_id
    assert step["data"]["reason"].startswith("step 3/3 (verifying the rehearsal) failed: ")
    assert failed["data"]["rto_met"] is None and failed["data"]["reason"] == step["data"]["reason"]


def test_failover_and_failback_record_their_start_and_finish(dr: DR) -> None:
    dr.ready("ev-m")
    _act(dr, "ev-m", "failover", "planned")
    assert dr.wait("ev-m")["state"] == "succeeded"
    _act(dr, "ev-m", "failback")
    assert dr.wait("ev-m")["state"] == "succeeded"
    got = [(e["type"], e["data"]) for e in events(dr.runtime, instance_id="ev-m")][1:]
    assert got == [("failover.started", {"mode": "planned"}),
                   ("failover.finished", {"mode": "planned", "outcome": "succeeded"}),
                   ("failback.started", {"mode": "planned"}),  # a failback is always planned
                   ("failback.finished", {"mode": "planned", "outcome": "succeeded"})]


def test_a_failed_failover_says_so_with_its_reason(tmp_path: Path, made: list[Runtime]) -> None:
    dr = _start(tmp_path, made, sim_faults="failover_replication=fail")
    dr.ready("ev-mf")
    _act(dr, "ev-mf", "failover", "unplanned")
    assert dr.wait("ev-mf")["state"] == "failed"
    got = events(dr.runtime, instance_id="ev-mf")
    assert [e["type"] for e in got] == ["instance.provisioned", "failover.started", "step.failed",
                                        "failover.finished"]
    finished = got[-1]
    assert finished["data"]["outcome"] == "failed" and finished["data"]["mode"] == "unplanned"
    assert finished["data"]["reason"] == got[2]["data"]["reason"] and "failover_replication" in got[2]["summary"]


def test_a_failed_provision_records_its_step(tmp_path: Path, made: list[Runtime]) -> None:
    dr = _start(tmp_path, made, sim_faults="create_replication_group=fail")
    assert dr.provision("ev-pf").status_code == 202
    assert dr.wait("ev-pf")["state"] == "failed"
    (step,) = events(dr.runtime, instance_id="ev-pf")
    assert step["type"] == "step.failed" and step["data"]["action"] == "create_replication_group"
    assert step["data"]["operation_type"] == "provision" and step["data"]["dr_action"] is None


def _queued_rehearsal(dr: DR, iid: str) -> str:
    dr.ready(iid)
    dr.runtime.worker.stop(timeout=10)  # nobody runs what comes next
    return _act(dr, iid, "test_failover")


def test_a_rehearsal_still_queued_past_its_deadline_is_reaped_as_failed(
        tmp_path: Path, made: list[Runtime]) -> None:
    dr = _start(tmp_path, made)
    op_id = _queued_rehearsal(dr, "ev-q")
    late = Worker(dr.runtime.store, dr.runtime.engine, clock=lambda: time.time() + 7201)
    assert late.reap_expired() == [op_id]
    (failed,) = events(dr.runtime, instance_id="ev-q", types=["rehearsal.failed"])
    assert failed["operation_id"] == op_id and "still queued" in failed["data"]["reason"]
    assert "step.failed" not in types(dr.runtime, instance_id="ev-q")  # no step ran


def test_an_abandoned_rehearsal_is_recorded_as_failed(tmp_path: Path, made: list[Runtime]) -> None:
    dr = _start(tmp_path, made)
    op_id = _queued_rehearsal(dr, "ev-a")
    OperationsAdmin(dr.runtime.store, dr.runtime.catalog).abandon(op_id)
    (failed,) = events(dr.runtime, instance_id="ev-a", types=["rehearsal.failed"])
    assert failed["operation_id"] == op_id and failed["data"]["reason"] == ABANDONED


class _Boom:
    """A listener after the event log's that fails: the whole transaction must roll back."""

    def succeeded(self, *_: Any) -> None:
        raise LeaseLost("boom")


def test_an_event_exists_only_if_its_state_change_committed(tmp_path: Path, made: list[Runtime],
                                                           db_url: str) -> None:
    """A listener after the event log's fails inside the success transaction: nothing of it commits."""
    runtime = build_runtime(make_settings(tmp_path, database_url=db_url))
    made.append(runtime)
    runtime.engine.listeners.append(_Boom())
    osb = DR(create_app(runtime=runtime).test_client(), runtime)
    assert osb.provision("ev-x").status_code == 202
    op_id = runtime.worker.claim_next()
    assert op_id is not None
    runtime.worker.run_claimed(op_id)  # every step runs; recording the success rolls back
    with runtime.store.read() as tx:
        op = tx.get_operation(op_id)
        inst = tx.get_instance("ev-x")
    assert op is not None and op.state == OperationState.IN_PROGRESS and op.step_index == op.step_total - 1
    assert inst is not None and inst.state.value == "provisioning"
    assert events(runtime, instance_id="ev-x") == []


@pytest.mark.parametrize("scheduled_in", ["dr_action", "payload"])
def test_a_scheduled_rehearsal_is_marked_scheduled(runtime: Runtime, scheduled_in: str) -> None:
    """The rehearsal scheduler's operations carry ``scheduled: true`` (in the action or the payload)."""
    from broker.domain.models import Operation, OperationType
    from broker.events.listener import EventListener

    action: dict[str, Any] = {"type": "rehearsal"}
    payload: dict[str, Any] = {"dr_action": action}
    (action if scheduled_in == "dr_action" else payload)["scheduled"] = True
    op = Operation(id="op-s", instance_id="ev-s", binding_id=None, type=OperationType.UPDATE,
                   state=OperationState.IN_PROGRESS, plan_id="p", request_hash="h", created_at=0.0, payload=payload)
    with runtime.store.write() as tx:
        EventListener(runtime.catalog).started(tx, op, 1.0)
    (started,) = events(runtime, instance_id="ev-s")
    assert started["data"]["scheduled"] is True and "scheduled" in started["summary"]
