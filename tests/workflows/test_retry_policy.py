"""The retry policy as a table (pure delays), then its behaviour: which errors it retries, how often, and
where it stops (attempts, deadline); and Retry-After on last_operation from the running step's remaining
time."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from broker.app import build_runtime
from broker.domain.errors import PermanentBackendError, TransientBackendError
from broker.domain.models import OperationState
from broker.workflows.retry import RetryDeadline, RetryPolicy
from tests.conftest import make_settings
from tests.workflows.helpers import Clock, provision

POLICY = RetryPolicy(attempts=6, initial=0.2, maximum=10.0)


@pytest.mark.parametrize(("failures", "jitter", "hint", "expected"), [
    (1, 0.0, None, 0.2),        # initial
    (2, 0.0, None, 0.4),        # doubles
    (3, 0.0, None, 0.8),
    (3, 0.5, None, 0.9),        # plus jitter in [0, initial)
    (3, 0.999, None, 0.9998),
    (7, 0.0, None, 10.0),       # capped at maximum (0.2 * 64 = 12.8)
    (9, 0.9, None, 10.0),
    (1, 0.0, 3.0, 3.0),         # a longer backend hint (Retry-After) wins
    (3, 0.0, 0.1, 0.8),         # a shorter one does not
    (1, 0.0, 60.0, 10.0),       # a hint is capped at maximum too
])
def test_delay_is_exponential_with_jitter_bounded_and_honours_hints(failures, jitter, hint, expected) -> None:
    assert POLICY.delay(failures, hint, jitter) == pytest.approx(expected)


def test_delay_with_random_jitter_stays_in_its_band() -> None:
    for failures in range(1, 8):
        low = min(10.0, 0.2 * 2 ** (failures - 1))
        for _ in range(50):
            assert low <= POLICY.delay(failures) <= min(10.0, low + 0.2)


class Flaky:
    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


FAST = RetryPolicy(attempts=4, initial=0.001, maximum=0.002)


def test_transient_errors_are_retried_until_success_and_reported() -> None:
    fn, seen = Flaky(2, TransientBackendError("503")), []
    assert FAST.call(fn, on_retry=lambda n, exc: seen.append((n, str(exc)))) == "ok"
    assert fn.calls == 3 and seen == [(1, "503"), (2, "503")]


def test_throttling_hint_is_waited_for() -> None:
    fn = Flaky(1, TransientBackendError("429", retry_after=0.05))
    started = time.monotonic()
    assert RetryPolicy(attempts=3, initial=0.001, maximum=1.0).call(fn) == "ok"
    assert time.monotonic() - started >= 0.05


def test_retries_are_bounded_by_attempts() -> None:
    fn = Flaky(100, TransientBackendError("503"))
    with pytest.raises(TransientBackendError):
        FAST.call(fn)
    assert fn.calls == FAST.attempts


def test_permanent_errors_are_not_retried() -> None:
    fn = Flaky(100, PermanentBackendError("400"))
    with pytest.raises(PermanentBackendError):
        FAST.call(fn)
    assert fn.calls == 1


def test_retries_stop_before_the_deadline_with_retry_deadline() -> None:
    clock = Clock()
    fn = Flaky(100, TransientBackendError("503 again"))

    def advance() -> str:
        clock.offset += 1.0  # each attempt "takes" a second
        return fn()

    now = clock()
    with pytest.raises(RetryDeadline) as caught:
        RetryPolicy(attempts=100, initial=0.001, maximum=0.002).call(advance, deadline=now + 3.5, clock=clock)
    assert fn.calls == 4  # attempts at +1, +2, +3, +4: the fifth would start past the deadline
    assert caught.value.last.description == "503 again"


def test_no_deadline_means_only_attempts_bound_retries() -> None:
    fn = Flaky(2, TransientBackendError("503"))
    assert FAST.call(fn, deadline=None) == "ok"


def test_retry_after_is_the_running_steps_expected_remaining_time(tmp_path: Path) -> None:
    clock = Clock()
    rt = build_runtime(make_settings(tmp_path, sim_step_seconds=10.0))
    rt.engine.clock = clock
    try:
        op_id = provision(rt, "i-1")  # queued: poll again soon
        assert rt.service.last_operation("i-1").retry_after == 1
        with rt.store.write() as tx:
            assert tx.update_operation(op_id, state=OperationState.IN_PROGRESS, step_index=4, step_total=7,
                                       step_started_at=clock(), description="step 5/7: waiting")
        # wait_consistent_copying weighs 2: 20 s expected at 10 s per step.
        assert rt.service.last_operation("i-1").retry_after == 20
        clock.offset = 6.5
        assert rt.service.last_operation("i-1").retry_after == math.ceil(20 - 6.5)
        clock.offset = 19.9
        assert rt.service.last_operation("i-1").retry_after == 1
        clock.offset = 60
        assert rt.service.last_operation("i-1").retry_after == 1  # overdue: never below one second
    finally:
        rt.store.engine.dispose()
