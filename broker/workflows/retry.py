"""Retry policy for transient backend errors: exponential backoff with jitter, bounded per step, and a
backend's own ``Retry-After`` hint honoured when it asks for longer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from broker.domain.errors import TransientBackendError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    initial: float = 0.2
    maximum: float = 10.0

    def wait(self, state: RetryCallState) -> float:
        base = wait_exponential_jitter(multiplier=self.initial, jitter=self.initial, max=self.maximum)(state)
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after", None) or 0.0
        return max(base, min(hint, self.maximum))

    def call(self, fn: Callable[[], T], on_retry: Callable[[int, BaseException], None] | None = None) -> T:
        def before_sleep(state: RetryCallState) -> None:
            if on_retry and state.outcome:
                on_retry(state.attempt_number, state.outcome.exception())

        retrying = Retrying(
            retry=retry_if_exception_type(TransientBackendError),
            stop=stop_after_attempt(self.attempts),
            wait=self.wait,
            reraise=True,
            before_sleep=before_sleep,
        )
        return retrying(fn)
