"""Helpers for driving the engine and worker by hand: a scripted orchestrator (counts calls, crashes or fails
on cue), a movable clock, and a catalog whose plans have a short ``maximum_polling_duration``."""

from __future__ import annotations

import copy
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from broker.app import Runtime, build_runtime
from broker.domain.models import InstanceState, Operation, OperationState
from broker.domain.protocols import StepContext
from broker.services.requests import BindRequest, DeprovisionRequest, ProvisionRequest
from broker.workflows.engine import Engine
from broker.workflows.retry import RetryPolicy
from broker.workflows.worker import Worker
from tests.conftest import GRS_PARAMS, GRS_PLAN, ROOT, SERVICE_ID, make_settings

FAST_RETRY = RetryPolicy(attempts=4, initial=0.01, maximum=0.02)


class Crash(Exception):
    """Stands for the process dying: raised by the orchestrator, it escapes the engine unrecorded."""


Hook = Callable[[str, StepContext, int], None]


class ScriptedOrchestrator:
    """The real simulated orchestrator, wrapped: counts each (operation, action) call, keeps what the last
    one returned (``results``), and runs hooks ``before`` / ``after`` an action (``after`` runs once the action
    has taken effect)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: Counter[tuple[str, str]] = Counter()
        self.order: list[tuple[str, str]] = []
        self.results: dict[tuple[str, str], dict[str, Any]] = {}
        self.before: dict[str, Hook] = {}
        self.after: dict[str, Hook] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def perform(self, action: str, ctx: StepContext) -> Mapping[str, Any]:
        with self._lock:
            self.calls[(ctx.operation_id, action)] += 1
            self.order.append((ctx.operation_id, action))
            n = self.calls[(ctx.operation_id, action)]
        if action in self.before:
            self.before[action](action, ctx, n)
        result = self.inner.perform(action, ctx)
        with self._lock:
            # A copy: what the engine does with the mapping it gets must not change what the test compares to.
            self.results[(ctx.operation_id, action)] = copy.deepcopy(dict(result))
        if action in self.after:
            self.after[action](action, ctx, n)
        return result

    def actions_of(self, op_id: str) -> list[str]:
        return [a for o, a in self.order if o == op_id]


class Clock:
    """Wall time plus an offset a test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def scripted_runtime(tmp_path: Path, *, clock: Callable[[], float] = time.time, retry: RetryPolicy = FAST_RETRY,
                     lease_seconds: float = 5.0, **settings: Any) -> tuple[Runtime, ScriptedOrchestrator]:
    """A runtime whose engine and worker use a ScriptedOrchestrator (worker not started)."""
    rt = build_runtime(make_settings(tmp_path, **settings))
    scripted = ScriptedOrchestrator(rt.orchestrator)
    rt.engine = Engine(rt.store, rt.catalog, scripted, retry=retry, clock=clock)
    rt.worker = Worker(rt.store, rt.engine, lease_seconds=lease_seconds, poll_seconds=0.01, threads=2)
    rt.service.runner = rt.worker
    return rt, scripted


def second_worker(rt: Runtime, orchestrator: Any, *, clock: Callable[[], float] = time.time,
                  lease_seconds: float = 5.0) -> Worker:
    """Another worker (another process, as far as leases go) on the same database."""
    engine = Engine(rt.store, rt.catalog, orchestrator, retry=rt.engine.retry, clock=clock)
    return Worker(rt.store, engine, lease_seconds=lease_seconds, poll_seconds=0.01, threads=2)


def provision(rt: Runtime, iid: str, params: Mapping[str, Any] | None = None, plan: str = GRS_PLAN) -> str:
    result = rt.service.provision(ProvisionRequest(
        instance_id=iid, service_id=SERVICE_ID, plan_id=plan, accepts_incomplete=True, organization_guid="o",
        space_guid="s", parameters=dict(GRS_PARAMS if params is None else params)))
    assert result.status == "accepted" and result.operation
    return result.operation


def deprovision(rt: Runtime, iid: str) -> str:
    """DELETE the instance as a platform would (accepts_incomplete); the id of the deprovision it queued."""
    result = rt.service.deprovision(DeprovisionRequest(instance_id=iid, service_id=SERVICE_ID, plan_id=GRS_PLAN,
                                                       accepts_incomplete=True))
    assert result.status == "accepted" and result.operation, result
    return result.operation


def instance_state(rt: Runtime, iid: str) -> InstanceState:
    with rt.store.read() as tx:
        inst = tx.get_instance(iid)
    assert inst is not None, iid
    return inst.state


def bind_async(rt: Runtime, iid: str, bid: str, plan: str = GRS_PLAN) -> str:
    result = rt.service.bind(BindRequest(instance_id=iid, binding_id=bid, service_id=SERVICE_ID, plan_id=plan,
                                         accepts_incomplete=True))
    assert result.status == "accepted" and result.operation
    return result.operation


def run_to_end(worker: Worker, op_id: str) -> None:
    """Claim ``op_id`` with ``worker`` and run it in this thread (a Crash propagates)."""
    assert worker.claim(op_id), f"could not claim {op_id}"
    try:
        worker.engine.run(op_id, worker.owner)
    finally:
        with worker._held_lock:
            worker._held.discard(op_id)


def expire_lease(rt: Runtime, op_id: str) -> None:
    """Let time pass beyond the operation's lease (the holder stopped heart-beating)."""
    with rt.store.write() as tx:
        assert tx.update_operation(op_id, lease_until=time.time() - 1)


def op(rt: Runtime, op_id: str) -> Operation:
    with rt.store.read() as tx:
        found = tx.get_operation(op_id)
    assert found is not None
    return found


def wait_op(rt: Runtime, op_id: str, timeout: float = 20.0) -> Operation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = op(rt, op_id)
        if current.state.finished:
            return current
        time.sleep(0.02)
    raise AssertionError(f"operation {op_id} did not finish within {timeout}s: {op(rt, op_id)}")


def steps(rt: Runtime, op_id: str) -> dict[str, Any]:
    with rt.store.read() as tx:
        return {s.name: s for s in tx.steps(op_id)}


def catalog_with_polling(tmp_path: Path, seconds: int) -> str:
    """A copy of the shipped catalog whose plans all have ``maximum_polling_duration: seconds``."""
    folder = tmp_path / f"catalog-{seconds}s"
    shutil.copytree(ROOT / "catalog", folder)
    changed = 0
    for path in folder.glob("*.y*ml"):
        text = path.read_text()
        changed += text.count("maximum_polling_duration: 7200")
        path.write_text(text.replace("maximum_polling_duration: 7200", f"maximum_polling_duration: {seconds}"))
    assert changed, "the shipped catalog no longer sets maximum_polling_duration: 7200"
    return str(folder)


def is_finished(state: OperationState) -> bool:
    return state in (OperationState.SUCCEEDED, OperationState.FAILED)
