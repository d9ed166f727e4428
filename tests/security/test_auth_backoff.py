"""Per-client back-off on failed basic authentication: wrong passwords cannot buy scrypt CPU without limit.

Through the real Flask app (client addresses set per request) and a real ``drbroker serve`` process.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask

from broker.security.basic import BasicAuthenticator, FailureBackoff, PasswordHash
from tests.conftest import PASSWORD, USER, auth_header
from tests.e2e.conftest import broker_factory

__all__ = ["broker_factory"]  # the real-server fixture, from the e2e conftest

CATALOG = "/v2/catalog"
VERSION = {"X-Broker-API-Version": "2.17"}
WRONG = {**VERSION, "Authorization": auth_header(USER, "not-the-password")}
RIGHT = {**VERSION, "Authorization": auth_header()}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(app: Flask) -> Clock:
    """The app's basic authenticator, on a clock the test moves."""
    clock = Clock()
    (basic,) = [a for a in app.extensions["drbroker"].authenticators if isinstance(a, BasicAuthenticator)]
    basic.backoff = FailureBackoff(clock=clock)
    return clock


@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    calls: list[int] = []
    derive = PasswordHash.derive

    def counting(self: PasswordHash, password: str) -> bytes:
        calls.append(1)
        return derive(self, password)

    monkeypatch.setattr(PasswordHash, "derive", counting)
    yield calls


def get(app: Flask, addr: str, headers: dict[str, str]) -> Any:
    return app.test_client().get(CATALOG, headers=headers, environ_base={"REMOTE_ADDR": addr})


def test_repeated_failures_from_one_address_are_refused_without_scrypt(app: Flask, clock: Clock,
                                                                       scrypt_calls: list[int]) -> None:
    threshold = FailureBackoff().threshold
    answers = []
    for _ in range(20):
        before = len(scrypt_calls)
        r = get(app, "10.0.0.1", WRONG)
        answers.append((r.status_code, r.headers.get("Retry-After"), len(scrypt_calls) - before))
    # The first ``threshold`` are checked (one scrypt each) and fail; every later one is refused unchecked.
    # The failure that reaches it starts a 1 s block and says so.
    assert answers[:threshold] == [(401, None, 1)] * (threshold - 1) + [(401, "1", 1)]
    assert answers[threshold:] == [(401, "1", 0)] * (20 - threshold)
    r = get(app, "10.0.0.1", WRONG)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    assert "too many failed authentication attempts" in r.get_json()["description"]

    # Even the right password waits, from the blocked address (nothing is checked there)...
    before = len(scrypt_calls)
    assert get(app, "10.0.0.1", RIGHT).status_code == 401 and len(scrypt_calls) == before
    # ...while another client is unaffected.
    assert get(app, "10.0.0.2", RIGHT).status_code == 200


def test_after_the_delay_the_address_may_try_again_and_the_delay_grows(app: Flask, clock: Clock,
                                                                      scrypt_calls: list[int]) -> None:
    backoff = FailureBackoff()
    for _ in range(backoff.threshold):
        assert get(app, "10.0.0.1", WRONG).status_code == 401
    assert get(app, "10.0.0.1", RIGHT).headers.get("Retry-After") == "1"
    clock.now += 1.01
    # One more wrong password is checked again, and doubles the delay.
    before = len(scrypt_calls)
    assert get(app, "10.0.0.1", WRONG).headers.get("Retry-After") == "2" and len(scrypt_calls) == before + 1
    assert get(app, "10.0.0.1", RIGHT).headers.get("Retry-After") == "2"
    clock.now += 2.01
    assert get(app, "10.0.0.1", WRONG).headers.get("Retry-After") == "4"
    assert get(app, "10.0.0.1", RIGHT).headers.get("Retry-After") == "4"
    # After the block, the right password works, and clears the address's count.
    clock.now += 4.01
    assert get(app, "10.0.0.1", RIGHT).status_code == 200
    assert get(app, "10.0.0.1", WRONG).headers.get("Retry-After") is None
    assert get(app, "10.0.0.1", RIGHT).status_code == 200


def test_failures_spread_wider_than_the_window_do_not_add_up(app: Flask, clock: Clock) -> None:
    backoff = FailureBackoff()
    for _ in range(backoff.threshold * 2):
        assert get(app, "10.0.0.1", WRONG).headers.get("Retry-After") is None
        clock.now += backoff.window + 1


def test_the_delay_is_capped_and_the_table_is_bounded() -> None:
    clock = Clock()
    backoff = FailureBackoff(threshold=3, base_delay=1.0, max_delay=8.0, maxsize=100, clock=clock)
    for _ in range(30):
        backoff.failed("10.0.0.1")
    assert backoff.retry_after("10.0.0.1") == 8.0
    for i in range(1000):
        backoff.failed(f"10.1.{i // 256}.{i % 256}")
    assert len(backoff._clients) <= 100


def test_a_real_server_answers_a_blocked_address_fast_without_scrypt(tmp_path: Any, broker_factory: Any) -> None:
    server = broker_factory(tmp_path / "state.db")
    url = server.url + CATALOG
    session = requests.Session()
    timings, retry_after = [], []
    for _ in range(20):
        start = time.perf_counter()
        r = session.get(url, headers=VERSION, auth=(USER, "not-the-password"), timeout=10)
        timings.append(time.perf_counter() - start)
        assert r.status_code == 401
        retry_after.append(r.headers.get("Retry-After"))
    threshold = FailureBackoff().threshold
    assert retry_after[:threshold - 1] == [None] * (threshold - 1)
    assert all(v is not None and int(v) >= 1 for v in retry_after[threshold - 1:])
    # scrypt (n=2**14, r=8) takes tens of milliseconds; a refusal that skips it is several times faster.
    checked, refused = statistics.median(timings[1:threshold]), statistics.median(timings[threshold:])
    assert refused < checked / 3, (checked, refused)
    # The right password is checked again once the delay has passed.
    time.sleep(int(retry_after[-1]) + 0.1)
    assert session.get(url, headers=VERSION, auth=(USER, PASSWORD), timeout=10).status_code == 200
