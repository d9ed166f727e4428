"""Retry policy for transient backend errors: exponential backoff with jitter, bounded per step (attempts)
and by the operation's deadline, and a backend's own ``Retry-After`` hint honoured when it asks for longer.

The policy is data (``RetryPolicy``) plus tenacity; ``delay`` is the pure part, tested with tables.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from broker.domain.errors import AwaitingApproval, TransientBackendError

T = TypeVar("T")


class RetryDeadline(Exception):
    """Retrying a transient error would run past the operation's deadline; ``last`` is that error."""

    def __init__(self, last: TransientBackendError) -> None:
        super().__init__(last.description)
        self.last = last


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    initial: float = 0.2
    maximum: float = 10.0

    def delay(self, failures: int, hint: float | None = None, jitter: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th failed attempt: ``initial * 2**(failures-1)`` plus a
        jitter in ``[0, initial)``, at most ``maximum``; a longer backend hint (``Retry-After``) wins, capped
        at ``maximum`` too. ``jitter`` (0..1) replaces the random draw in tests."""
        draw = random.random() if jitter is None else jitter
        base = min(self.maximum, self.initial * 2 ** max(0, failures - 1) + self.initial * draw)
        return max(base, min(hint or 0.0, self.maximum))

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return self.delay(state.attempt_number, getattr(exc, "retry_after", None))

    def call(self, fn: Callable[[], T], on_retry: Callable[[int, BaseException], None] | None = None, *,
             deadline: float | None = None, clock: Callable[[], float] = time.time) -> T:
        """Run ``fn``, retrying ``TransientBackendError``. Gives up after ``attempts`` tries (re-raising the
        last error), or raises ``RetryDeadline`` when the next try would start after ``deadline``.
        ``AwaitingApproval`` (a step waiting for a person) is raised at once: its wait is the engine's."""
        past_deadline = False

        def stop(state: RetryCallState) -> bool:
            nonlocal past_deadline
            if stop_after_attempt(self.attempts)(state):
                return True
            if deadline is not None and clock() + state.upcoming_sleep >= deadline:
                past_deadline = True
                return True
            return False

        def before_sleep(state: RetryCallState) -> None:
            if on_retry and state.outcome:
                on_retry(state.attempt_number, state.outcome.exception())

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, TransientBackendError)
                                     and not isinstance(e, AwaitingApproval)),
            stop=stop,
            wait=self.wait,
            reraise=True,
            before_sleep=before_sleep,
        )
        try:
            return retrying(fn)
        except TransientBackendError as exc:
            if past_deadline:
                raise RetryDeadline(exc) from exc
            raise
