"""The worker and engine on a real SQLite file: leases, take-over, step boundaries, retries, compensation."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from broker.app import Runtime, build_runtime
from broker.domain.models import InstanceState, OperationState
from broker.orchestrators.simulated.cloud import SimulatedCloud
from broker.services.requests import ProvisionRequest
from broker.workflows.engine import Engine
from broker.workflows.worker import HOST, Worker
from tests.conftest import GRS_PARAMS, GRS_PLAN, SERVICE_ID, grs_params, make_settings


def _provision(rt: Runtime, iid: str, n: int = 0) -> str:
    params = grs_params(n) if n else dict(GRS_PARAMS)
    result = rt.service.provision(ProvisionRequest(
        instance_id=iid, service_id=SERVICE_ID, plan_id=GRS_PLAN, accepts_incomplete=True,
        organization_guid="o", space_guid="s", parameters=params))
    assert result.status == "accepted"
    return result.operation


def _wait_op(rt: Runtime, op_id: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with rt.store.read() as tx:
            op = tx.get_operation(op_id)
        if op.state.finished:
            return op
        time.sleep(0.02)
    raise AssertionError(f"operation {op_id} did not finish")


class CountingOrchestrator:
    """Wraps the real simulated orchestrator to count how often each action runs per operation."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()

    def actions(self):
        return self.inner.actions()

    def expected_seconds(self, action):
        return self.inner.expected_seconds(action)

    def describe(self):
        return self.inner.describe()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def perform(self, action, ctx):
        with self.lock:
            self.calls[(ctx.operation_id, action)] += 1
        return self.inner.perform(action, ctx)


@pytest.fixture
def rt(tmp_path: Path, db_url: str):
    runtime = build_runtime(make_settings(tmp_path, database_url=db_url))
    yield runtime
    runtime.worker.stop(timeout=10)


def test_provision_runs_every_step_once_and_marks_instance_ready(rt: Runtime) -> None:
    op_id = _provision(rt, "i-1")
    rt.worker.start()
    op = _wait_op(rt, op_id)
    assert op.state == OperationState.SUCCEEDED
    with rt.store.read() as tx:
        steps = tx.steps(op_id)
        inst = tx.get_instance("i-1")
    assert [s.state for s in steps] == ["done"] * len(steps) == ["done"] * op.step_total
    assert all(s.attempts == 1 for s in steps)
    assert inst.state == InstanceState.READY


def test_two_workers_on_one_database_never_run_an_operation_twice(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, database_url=db_url, sim_step_seconds=0.005)
    a, b = build_runtime(settings), build_runtime(settings)
    counters = []
    for runtime in (a, b):
        counting = CountingOrchestrator(runtime.orchestrator)
        counters.append(counting)
        engine = Engine(runtime.store, runtime.catalog, counting)
        runtime.worker = Worker(runtime.store, engine, lease_seconds=5, poll_seconds=0.01, threads=3)
    ops = [_provision(a, f"inst-{i}", n=i + 1) for i in range(12)]
    a.worker.start()
    b.worker.start()
    try:
        finished = [_wait_op(a, op) for op in ops]
    finally:
        a.worker.stop(10)
        b.worker.stop(10)
    assert all(op.state == OperationState.SUCCEEDED for op in finished)
    merged = counters[0].calls + counters[1].calls
    assert merged and max(merged.values()) == 1, [k for k, v in merged.items() if v > 1]
    assert counters[0].calls and counters[1].calls, "both workers should have taken work"


def _steal(rt: Runtime, op_id: str, owner: str, lease_until: float) -> None:
    with rt.store.write() as tx:
        assert tx.update_operation(op_id, state=OperationState.IN_PROGRESS, lease_owner=owner,
                                   lease_until=lease_until)


def test_expired_lease_of_another_host_is_taken_over(rt: Runtime) -> None:
    op_id = _provision(rt, "i-exp")
    _steal(rt, op_id, "elsewhere:123:abcd", time.time() - 1)
    rt.worker.start()
    assert _wait_op(rt, op_id).state == OperationState.SUCCEEDED


def test_live_lease_of_another_host_is_respected(rt: Runtime) -> None:
    op_id = _provision(rt, "i-live")
    _steal(rt, op_id, "elsewhere:123:abcd", time.time() + 60)
    assert rt.worker.claim_next() is None
    with rt.store.read() as tx:
        assert tx.get_operation(op_id).lease_owner == "elsewhere:123:abcd"


def test_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(rt: Runtime) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    op_id = _provision(rt, "i-dead")
    _steal(rt, op_id, f"{HOST}:{proc.pid}:dead", time.time() + 60)
    assert rt.worker.claim_next() == op_id


def test_stop_finishes_the_running_step_releases_the_lease_and_another_worker_resumes(
        tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, database_url=db_url, sim_step_seconds=0.3)
    first = build_runtime(settings)
    op_id = _provision(first, "i-stop")
    first.worker.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with first.store.read() as tx:
            if tx.get_operation(op_id).step_index >= 1:
                break
        time.sleep(0.02)
    first.worker.stop(timeout=10)
    with first.store.read() as tx:
        op = tx.get_operation(op_id)
        steps = tx.steps(op_id)
    assert op.state == OperationState.IN_PROGRESS
    assert op.lease_owner is None
    assert all(s.state == "done" for s in steps), "the running step must finish before stopping"
    assert op.step_index == len(steps)

    second = build_runtime(make_settings(tmp_path, database_url=db_url, sim_step_seconds=0.0))
    second.worker.start()
    try:
        assert _wait_op(second, op_id).state == OperationState.SUCCEEDED
    finally:
        second.worker.stop(10)
    with second.store.read() as tx:
        steps = tx.steps(op_id)
    assert all(s.attempts == 1 for s in steps)


def test_transient_faults_are_retried_until_the_step_succeeds(tmp_path: Path, db_url: str) -> None:
    rt = build_runtime(make_settings(tmp_path, database_url=db_url,
                                     sim_faults="create_replication_group=transient:2"))
    rt.engine.retry = replace(rt.engine.retry, initial=0.01)  # counts retries, does not time them
    op_id = _provision(rt, "i-transient")
    rt.worker.start()
    try:
        op = _wait_op(rt, op_id)
    finally:
        rt.worker.stop(10)
    assert op.state == OperationState.SUCCEEDED
    with rt.store.read() as tx:
        step = next(s for s in tx.steps(op_id) if s.name == "create_replication_group")
    assert step.attempts == 3
    # the last failed try was the injector's second call: two 503s, then the third try succeeded
    assert step.error == "create_replication_group: 503 Service Unavailable (injected, call 2)"
    assert step.state == "done"


def test_throttling_is_retried(tmp_path: Path, db_url: str) -> None:
    rt = build_runtime(make_settings(tmp_path, database_url=db_url, sim_faults="enable_replication=throttle:1"))
    rt.engine.retry = replace(rt.engine.retry, initial=0.01)  # counts retries, does not time them
    op_id = _provision(rt, "i-throttle")
    rt.worker.start()
    try:
        assert _wait_op(rt, op_id).state == OperationState.SUCCEEDED
    finally:
        rt.worker.stop(10)
    with rt.store.read() as tx:
        steps = {s.name: s for s in tx.steps(op_id)}
    # one 429, then the second try succeeded; no other step was retried
    assert steps["enable_replication"].attempts == 2
    assert steps["enable_replication"].error == "enable_replication: 429 Too Many Requests (injected, call 1)"
    assert [n for n, s in steps.items() if s.attempts != 1] == ["enable_replication"]


def test_permanent_fault_fails_and_compensates_everything_it_created(tmp_path: Path, db_url: str) -> None:
    rt = build_runtime(make_settings(tmp_path, database_url=db_url, sim_faults="onboard_auxiliary_volumes=fail"))
    op_id = _provision(rt, "i-perm")
    rt.worker.start()
    try:
        op = _wait_op(rt, op_id)
    finally:
        rt.worker.stop(10)
    assert op.state == OperationState.FAILED
    assert "onboarding auxiliary volumes" in op.description
    assert "injected permanent fault" in op.description
    assert "cleaned up: " in op.description and "delete_dr_policy" in op.description
    assert SimulatedCloud(rt.store.engine).inventory("i-perm") == []
    with rt.store.read() as tx:
        assert tx.get_instance("i-perm").state == InstanceState.FAILED


def test_transient_fault_that_never_clears_fails_after_bounded_retries(tmp_path: Path, db_url: str) -> None:
    rt = build_runtime(make_settings(tmp_path, database_url=db_url, sim_faults="create_dr_policy=transient:100"))
    rt.engine.retry = type(rt.engine.retry)(attempts=3, initial=0.01, maximum=0.02)
    op_id = _provision(rt, "i-bounded")
    rt.worker.start()
    try:
        op = _wait_op(rt, op_id)
    finally:
        rt.worker.stop(10)
    assert op.state == OperationState.FAILED
    assert "503" in op.description
    with rt.store.read() as tx:
        step = next(s for s in tx.steps(op_id) if s.name == "create_dr_policy")
    assert step.attempts == 3
