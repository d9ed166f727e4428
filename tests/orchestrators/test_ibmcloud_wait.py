"""``IbmSteps._wait``, the poll every ibmcloud step that waits for IBM uses (tenacity underneath): done ends it,
the deadline is a TransientBackendError with retry_after, a probe's own error propagates untouched."""

from __future__ import annotations

import itertools
import time
from types import SimpleNamespace

import pytest

from broker.domain.errors import PermanentBackendError, TransientBackendError
from broker.orchestrators.ibmcloud.common import IbmSteps


def _steps(wait_seconds: float, poll_seconds: float = 0.02) -> IbmSteps:
    steps = IbmSteps.__new__(IbmSteps)  # only the config matters to _wait
    steps.config = SimpleNamespace(wait_seconds=wait_seconds, poll_seconds=poll_seconds)
    return steps


def _probe(answers: list[tuple[bool, str]]):
    calls: list[float] = []

    def probe() -> tuple[bool, str]:
        calls.append(time.monotonic())
        return answers[min(len(calls), len(answers)) - 1]

    return probe, calls


def test_polls_until_done() -> None:
    probe, calls = _probe([(False, "creating"), (False, "creating"), (True, "available")])
    assert _steps(5.0)._wait("volume group", probe) is None
    assert len(calls) == 3
    assert all(b - a >= 0.015 for a, b in itertools.pairwise(calls))  # poll_seconds apart


def test_still_not_done_at_the_deadline_is_transient_with_retry_after() -> None:
    probe, calls = _probe([(False, "creating")])
    started = time.monotonic()
    with pytest.raises(TransientBackendError, match=r"volume group: still creating after 0.2s") as caught:
        _steps(0.2, 0.05)._wait("volume group", probe)
    assert 0.2 <= time.monotonic() - started < 1.0
    assert caught.value.retry_after == 0.05
    assert 3 <= len(calls) <= 6


def test_no_patience_probes_once() -> None:
    probe, calls = _probe([(False, "pending")])
    with pytest.raises(TransientBackendError, match="still pending after 0s"):
        _steps(0.0)._wait("job", probe)
    assert len(calls) == 1


def test_a_permanent_error_from_the_probe_propagates_at_once() -> None:
    calls: list[int] = []

    def probe() -> tuple[bool, str]:
        calls.append(1)
        raise PermanentBackendError("the job failed")

    with pytest.raises(PermanentBackendError, match="the job failed"):
        _steps(5.0)._wait("job", probe)
    assert calls == [1]
