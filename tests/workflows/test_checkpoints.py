"""Checkpointed steps: a step whose process dies after the backend acted, but before the step was recorded,
runs again on resume and finds the resource it made (by its deterministic name) instead of making another.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from broker.app import Runtime
from broker.domain.models import BindingState, InstanceState, OperationState, OperationType
from broker.orchestrators.simulated.cloud import SimulatedCloud
from broker.services.requests import DeprovisionRequest
from broker.workflows.definitions import steps_for
from tests.conftest import GRS_PLAN, KSYS_PARAMS, KSYS_PLAN, SERVICE_ID, grs_params
from tests.workflows.helpers import (
    Crash,
    ScriptedOrchestrator,
    bind_async,
    expire_lease,
    op,
    provision,
    run_to_end,
    scripted_runtime,
    second_worker,
    steps,
)


def _crash_once_after(scripted: ScriptedOrchestrator, action: str) -> None:
    def hook(_action, _ctx, n: int) -> None:
        if n == 1:
            raise Crash(f"process died right after {action} took effect")
    scripted.after[action] = hook


def _kinds(cloud: SimulatedCloud, iid: str) -> Counter[str]:
    return Counter(r.kind for r in cloud.inventory(iid))


def _actions(rt: Runtime, plan_id: str, op_type: str) -> list[str]:
    plan = rt.catalog.plan(plan_id)
    assert plan is not None
    return [s.action for s in steps_for(OperationType(op_type), plan)]


def _crash_and_resume(rt: Runtime, scripted: ScriptedOrchestrator, op_id: str, action: str) -> None:
    _crash_once_after(scripted, action)
    with pytest.raises(Crash):
        run_to_end(rt.worker, op_id)
    crashed = op(rt, op_id)
    assert crashed.state == OperationState.IN_PROGRESS and crashed.lease_owner == rt.worker.owner
    record = steps(rt, op_id)[action]
    assert record.state == "running" and record.attempts == 1, "the step was not recorded as done"
    # Another worker (a restarted process) takes the operation over once the dead holder's lease has lapsed.
    expire_lease(rt, op_id)
    run_to_end(second_worker(rt, scripted), op_id)


@pytest.mark.parametrize(("plan", "params"), [(GRS_PLAN, None), (KSYS_PLAN, KSYS_PARAMS)], ids=["grs", "ksys"])
def test_every_provision_step_repeated_after_a_crash_reuses_what_it_created(
        tmp_path: Path, made: list[Runtime], plan: str, params) -> None:
    rt, scripted = scripted_runtime(tmp_path, sim_step_seconds=0.0)
    made.append(rt)
    cloud = rt.orchestrator.cloud
    params = params or grs_params(0)
    control = provision(rt, "control", params, plan)
    run_to_end(rt.worker, control)
    assert op(rt, control).state == OperationState.SUCCEEDED
    expected = _kinds(cloud, "control")
    assert expected["volume_group"] == 1
    _deprovision_now(rt, "control")  # frees the volumes for the next instance

    for n, action in enumerate(_actions(rt, plan, "provision")):
        iid = f"crash-after-{n}-{action}"
        op_id = provision(rt, iid, params, plan)
        _crash_once_after(scripted, action)
        with pytest.raises(Crash):
            run_to_end(rt.worker, op_id)
        scripted.after.pop(action)
        crashed = op(rt, op_id)
        assert crashed.state == OperationState.IN_PROGRESS and crashed.step_index == n
        record = steps(rt, op_id)[action]
        assert record.state == "running" and record.attempts == 1, "the step must not be recorded as done"
        at_crash = {(r.kind, r.name): r.id for r in cloud.inventory(iid)}

        # Another worker (a restarted process) takes over once the dead holder's lease has lapsed.
        expire_lease(rt, op_id)
        run_to_end(second_worker(rt, scripted), op_id)

        done = op(rt, op_id)
        assert done.state == OperationState.SUCCEEDED, done.description
        records = steps(rt, op_id)
        assert records[action].attempts == 2 and records[action].state == "done"
        assert all(r.attempts == 1 for name, r in records.items() if name != action), records
        assert scripted.calls[(op_id, action)] == 2
        # Exactly what an uninterrupted provision makes; what existed at the crash is the same resource.
        assert _kinds(cloud, iid) == expected, (action, _kinds(cloud, iid), expected)
        after = {(r.kind, r.name): r.id for r in cloud.inventory(iid)}
        assert all(after[key] == rid for key, rid in at_crash.items()), action
        for key, value in records[action].outputs.items():
            if key.endswith("_id") and isinstance(value, str):
                assert value in after.values(), (action, key, value)
        with rt.store.read() as tx:
            assert tx.get_instance(iid).state == InstanceState.READY
        _deprovision_now(rt, iid)


def _deprovision_now(rt: Runtime, iid: str) -> None:
    with rt.store.read() as tx:
        plan_id = tx.get_instance(iid).plan_id
    result = rt.service.deprovision(DeprovisionRequest(instance_id=iid, service_id=SERVICE_ID, plan_id=plan_id,
                                                       accepts_incomplete=True))
    run_to_end(rt.worker, result.operation)
    assert op(rt, result.operation).state == OperationState.SUCCEEDED
    assert rt.orchestrator.cloud.inventory(iid) == []


@pytest.mark.parametrize("action", ["create_service_id", "issue_credentials"])
def test_a_bind_step_repeated_after_a_crash_issues_one_service_id_and_one_key(
        tmp_path: Path, made: list[Runtime], action: str) -> None:
    rt, scripted = scripted_runtime(tmp_path, sim_step_seconds=0.0)
    made.append(rt)
    run_to_end(rt.worker, provision(rt, "i-1", grs_params(0)))
    op_id = bind_async(rt, "i-1", "b-1")
    _crash_and_resume(rt, scripted, op_id, action)
    assert op(rt, op_id).state == OperationState.SUCCEEDED
    owned = Counter(r.kind for r in rt.orchestrator.cloud.inventory("i-1") if r.binding_id == "b-1")
    # one service ID, one key and its policy on each of the two workspaces
    assert owned == Counter({"service_id": 1, "api_key": 1, "access_policy": 2}), owned
    with rt.store.read() as tx:
        binding = tx.get_binding("i-1", "b-1")
    assert binding.state == BindingState.BOUND
    # The key handed out is the one whose hash the simulated IAM keeps (a re-run replaced the first).
    (key,) = [r for r in rt.orchestrator.cloud.inventory("i-1") if r.kind == "api_key"]
    assert key.data["sha256"] == hashlib.sha256(binding.credentials["iam"]["apikey"].encode()).hexdigest()


def _run_counting_writes(rt: Runtime, op_id: str) -> int:
    """Claim ``op_id`` and run it in this thread; the number of write transactions the run opened."""
    assert rt.worker.claim(op_id)
    writes: list[int] = []
    real_write = rt.store.write

    def counting_write():
        writes.append(1)
        return real_write()

    rt.store.write = counting_write  # type: ignore[method-assign]
    try:
        rt.engine.run(op_id, rt.worker.owner)
    finally:
        del rt.store.write
        with rt.worker._held_lock:
            rt.worker._held.discard(op_id)
    return len(writes)


def test_after_a_successful_run_every_step_is_recorded_done_once_with_what_the_backend_returned(
        tmp_path: Path, made: list[Runtime], db_url: str) -> None:
    rt, scripted = scripted_runtime(tmp_path, sim_step_seconds=0.0, database_url=db_url)
    made.append(rt)
    provision_id = provision(rt, "i-1", grs_params(0))
    provision_writes = _run_counting_writes(rt, provision_id)
    bind_id = bind_async(rt, "i-1", "b-1")
    bind_writes = _run_counting_writes(rt, bind_id)

    for op_id, writes in ((provision_id, provision_writes), (bind_id, bind_writes)):
        done = op(rt, op_id)
        assert done.state == OperationState.SUCCEEDED, done.description
        actions = [s.action for s in rt.engine.steps(done)]
        with rt.store.read() as tx:
            records = tx.steps(op_id)
        assert [(r.idx, r.name) for r in records] == list(enumerate(actions))
        assert done.step_index == done.step_total == len(actions)
        # One write between steps (the step performed is recorded as the next one starts), one at the end.
        assert writes == len(actions) + 1, (op_id, writes)
        for r in records:
            assert r.state == "done" and r.attempts == 1 and r.error is None, r
            assert r.started_at is not None and r.finished_at is not None and r.finished_at >= r.started_at, r
            returned = dict(scripted.results[(op_id, r.name)])
            if returned.pop("credentials", None) is not None:
                returned["credentials_issued"] = True
            assert r.outputs == json.loads(json.dumps(returned)), r.name
        for earlier, later in pairwise(records):
            assert earlier.finished_at <= later.started_at

    # Credentials went to the binding row only; the step that issued them says so and holds none.
    issued = scripted.results[(bind_id, "issue_credentials")]["credentials"]
    with rt.store.read() as tx:
        binding = tx.get_binding("i-1", "b-1")
        records = {r.name: r for r in tx.steps(bind_id)}
    assert binding.state == BindingState.BOUND and binding.credentials == json.loads(json.dumps(issued))
    assert records["issue_credentials"].outputs == {"credentials_issued": True}
    assert issued["iam"]["apikey"] not in json.dumps([r.outputs for r in records.values()])
