"""Many workers, one truth: a worker that stops heart-beating loses its lease to another, and whatever it
tries to write afterwards is refused by the guarded updates."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

from broker.app import Runtime
from broker.domain.models import OperationState
from tests.conftest import grs_params
from tests.workflows.helpers import (
    ScriptedOrchestrator,
    op,
    provision,
    scripted_runtime,
    second_worker,
    steps,
    wait_op,
)


def test_a_worker_that_stops_heartbeating_loses_its_lease_and_its_late_writes_are_refused(
        tmp_path: Path, made: list[Runtime]) -> None:
    rt, frozen_backend = scripted_runtime(tmp_path, sim_step_seconds=0.0, lease_seconds=0.3)
    made.append(rt)
    frozen = rt.worker  # never started: no heartbeat thread, like a process paused (SIGSTOP, a long GC)
    inside, release = threading.Event(), threading.Event()

    def freeze(_action, _ctx, n: int) -> None:
        if n == 1:
            inside.set()
            assert release.wait(30)
    frozen_backend.before["create_replication_group"] = freeze

    op_id = provision(rt, "i-1", grs_params(0))
    assert frozen.claim(op_id)
    runner = threading.Thread(target=frozen.run_claimed, args=(op_id,), daemon=True)
    runner.start()
    assert inside.wait(10)
    assert op(rt, op_id).lease_owner == frozen.owner

    live_backend = ScriptedOrchestrator(frozen_backend.inner)
    live = second_worker(rt, live_backend, lease_seconds=5.0)
    assert live.claim_next() is None, "a live lease is respected"
    time.sleep(0.4)  # the frozen worker's lease lapses
    assert live.claim_next() == op_id
    live.run_claimed(op_id)
    done = op(rt, op_id)
    assert done.state == OperationState.SUCCEEDED and done.attempts == 2

    # The frozen worker wakes up: its step takes effect in the backend (idempotently), but it records
    # nothing and runs no further step; its heartbeat renews nothing.
    release.set()
    runner.join(10)
    assert not runner.is_alive()
    frozen._held.add(op_id)
    frozen.heartbeat()
    after = op(rt, op_id)
    assert after == done
    assert frozen_backend.actions_of(op_id)[-1] == "create_replication_group"
    assert Counter(r.kind for r in rt.orchestrator.cloud.inventory("i-1"))["volume_group"] == 1
    record = steps(rt, op_id)["create_replication_group"]
    assert record.state == "done" and record.attempts == 2


def test_many_worker_threads_in_two_workers_run_each_step_once(tmp_path: Path, made: list[Runtime]) -> None:
    rt, backend_a = scripted_runtime(tmp_path, sim_step_seconds=0.002)
    made.append(rt)
    backend_b = ScriptedOrchestrator(backend_a.inner)
    other = second_worker(rt, backend_b)
    other.thread_count = 4
    rt.worker.thread_count = 4
    ops = [provision(rt, f"i-{n}", grs_params(n)) for n in range(16)]
    rt.worker.start()
    other.start()
    try:
        finished = [wait_op(rt, op_id, timeout=60) for op_id in ops]
    finally:
        other.stop(10)
    assert all(o.state == OperationState.SUCCEEDED for o in finished)
    calls = backend_a.calls + backend_b.calls
    assert max(calls.values()) == 1, [k for k, v in calls.items() if v > 1]
    assert backend_a.calls and backend_b.calls, "both workers took work"
    for op_id in ops:
        assert all(s.attempts == 1 and s.state == "done" for s in steps(rt, op_id).values())
