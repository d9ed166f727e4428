"""``Worker.run_now`` (a synchronous bind waiting for its operation), polled with tenacity: it runs an unclaimed
operation itself, otherwise polls until another worker finishes it, and gives up at its timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.app import Runtime, build_runtime
from broker.services.requests import ProvisionRequest
from tests.conftest import GRS_PARAMS, GRS_PLAN, SERVICE_ID, make_settings


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = build_runtime(make_settings(tmp_path))  # its worker threads are never started
    yield runtime
    runtime.store.engine.dispose()


def _queued(rt: Runtime) -> str:
    result = rt.service.provision(ProvisionRequest(
        instance_id="rn-1", service_id=SERVICE_ID, plan_id=GRS_PLAN, accepts_incomplete=True,
        organization_guid="o", space_guid="s", parameters=dict(GRS_PARAMS)))
    return str(result.operation)


def _finished(rt: Runtime, op_id: str) -> bool:
    with rt.store.read() as tx:
        return tx.get_operation(op_id).state.finished


def test_an_unclaimed_operation_is_run_in_the_calling_thread(rt: Runtime) -> None:
    op_id = _queued(rt)
    assert rt.worker.run_now(op_id, timeout=30) is True
    assert _finished(rt, op_id)


def test_it_polls_while_another_worker_holds_it_and_gives_up_at_the_timeout(rt: Runtime, monkeypatch: Any) -> None:
    op_id = _queued(rt)
    claims: list[float] = []
    monkeypatch.setattr(rt.worker, "claim", lambda _op: claims.append(time.monotonic()) and False)
    started = time.monotonic()
    assert rt.worker.run_now(op_id, timeout=0.3) is False
    assert 0.3 <= time.monotonic() - started < 2.0
    assert len(claims) >= 3  # polled every 0.05 s, not once
    assert not _finished(rt, op_id)


def test_it_answers_once_another_worker_finishes_it(rt: Runtime, monkeypatch: Any) -> None:
    op_id = _queued(rt)
    real_claim = rt.worker.claim

    def other_worker() -> None:
        time.sleep(0.2)
        assert real_claim(op_id)
        rt.worker.run_claimed(op_id, stoppable=False)

    monkeypatch.setattr(rt.worker, "claim", lambda _op: False)  # the calling thread never gets it
    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert rt.worker.run_now(op_id, timeout=30) is True
    finally:
        thread.join(30)
    assert _finished(rt, op_id)
