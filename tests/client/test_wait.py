"""``OSBClient.wait`` (``--wait``) without a server: it follows last_operation, sleeping what Retry-After says
(clamped), reports every poll, treats 410 as done, and raises TimeoutError when time runs out."""

from __future__ import annotations

import time
from typing import Any

import pytest

from broker.client.osb import ClientError, OSBClient, Response


def _client(answers: list[Response]) -> tuple[OSBClient, list[dict[str, Any]]]:
    client = OSBClient("http://127.0.0.1:9", user="u", password="p")
    asked: list[dict[str, Any]] = []

    def last_operation(instance_id: str, binding_id: str | None, operation: str | None) -> Response:
        asked.append({"instance_id": instance_id, "binding_id": binding_id, "operation": operation})
        return answers[min(len(asked), len(answers)) - 1]

    client.last_operation = last_operation  # type: ignore[method-assign]
    return client, asked


def running(retry_after: str | None = None) -> Response:
    return Response(200, {"state": "in progress", "description": "step 1"},
                    {"Retry-After": retry_after} if retry_after is not None else {})


def test_it_sleeps_what_retry_after_says_clamped_and_reports_every_poll() -> None:
    client, asked = _client([running("3"), running("0"), running("x"), running("120"),
                             Response(200, {"state": "succeeded"}, {})])
    slept: list[float] = []
    seen: list[str] = []
    final = client.wait("i-1", operation="op-1", sleep=slept.append, on_progress=lambda s: seen.append(s["state"]),
                        max_interval=30.0)
    assert final == {"state": "succeeded"}
    assert slept == [3.0, 0.05, 2.0, 30.0]  # the hint; at least 0.05; 2 without a number; at most max_interval
    assert seen == ["in progress"] * 4 + ["succeeded"]
    assert asked[0] == {"instance_id": "i-1", "binding_id": None, "operation": "op-1"} and len(asked) == 5


def test_gone_is_done() -> None:
    client, _ = _client([running("1"), Response(410, {}, {})])
    assert client.wait("i-1", sleep=lambda _s: None) == {"state": "succeeded", "description": "gone"}


def test_a_failure_is_returned_not_raised() -> None:
    client, _ = _client([Response(200, {"state": "failed", "description": "boom"}, {})])
    assert client.wait("i-1", sleep=lambda _s: None)["state"] == "failed"


def test_it_gives_up_at_the_timeout_and_never_sleeps_past_it() -> None:
    client, asked = _client([running("10")])
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"still in progress after 0.3s: step 1"):
        client.wait("i-1", timeout=0.3, sleep=sleep)
    assert time.monotonic() - started < 1.5
    assert slept and slept[0] <= 0.3  # clamped to the time left, not Retry-After's 10 s
    assert len(asked) >= 2


def test_a_refusal_while_waiting_ends_the_wait_at_once() -> None:
    """A 401 (the password changed, or was wrong) is raised on the first poll: never polled again."""
    client = OSBClient("http://127.0.0.1:9", user="u", password="p")
    asked: list[str] = []

    def last_operation(instance_id: str, binding_id: str | None, operation: str | None) -> Response:
        asked.append(instance_id)
        raise ClientError("invalid credentials", status=401, body={"error": "Unauthorized"})

    client.last_operation = last_operation  # type: ignore[method-assign]
    with pytest.raises(ClientError) as raised:
        client.wait("i-1", sleep=lambda _s: None, timeout=5)
    assert raised.value.status == 401 and asked == ["i-1"]
