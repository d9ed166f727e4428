"""Refused requests in the real app (Flask test client, real SQLite) with an injected clock: each client gets a
few records of its own per window and one summary counts the rest; refused records are bounded and carry nothing
from the body; authenticated requests are never suppressed. The flood through a real server, with its byte
figures, metrics and log lines, is in test_audit_refused_flood.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.api.audit_refusals import SUPPRESSED_ACTION, RefusalLimiter
from broker.app import Runtime, build_runtime, create_app
from broker.security.audit import RECORD_BYTES, bounded
from tests.conftest import GRS_PLAN, HEADERS, SERVICE_ID, make_settings
from tests.security.test_audit_refused_flood import record_bytes, worst_case_refused


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = build_runtime(make_settings(tmp_path))
    yield runtime
    runtime.store.engine.dispose()


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _refused(rt: Runtime) -> list[dict[str, Any]]:
    assert rt.audit is not None
    return [r for r in rt.audit.records() if r["principal"] is None]


def test_each_client_gets_a_few_records_per_window_and_one_summary_when_the_window_closes(rt: Runtime) -> None:
    clock = Clock()
    assert rt.audit is not None
    trail = rt.audit
    rt.refusals = RefusalLimiter(lambda e: trail.append(bounded(e)), per_client=3, total=5, window=60, clock=clock,
                                 timer=False)
    client = create_app(runtime=rt).test_client()

    def put(addr: str, n: int) -> None:
        for i in range(n):
            r = client.put(f"/v2/service_instances/x-{i}", data="{}", headers={"X-Broker-API-Version": "2.17"},
                           environ_base={"REMOTE_ADDR": addr})
            assert r.status_code == 401

    put("10.0.0.1", 8)  # 3 of its own, 5 suppressed
    put("10.0.0.2", 4)  # 2 of its own (the window's total is 5), 2 suppressed
    got = _refused(rt)
    assert [json.loads(r["detail"])["client"] for r in got] == ["10.0.0.1"] * 3 + ["10.0.0.2"] * 2
    assert not [r for r in got if r["action"] == SUPPRESSED_ACTION]  # the window is still open

    clock.now += 60  # the window closes: the next refusal writes its summary first
    put("10.0.0.3", 1)
    got = _refused(rt)
    summary = got[5]
    assert summary["action"] == SUPPRESSED_ACTION and got[6]["action"] == "provision"
    detail = json.loads(summary["detail"])
    assert detail["suppressed"] == 7 and detail["by_status"] == {"401": 7}
    assert detail["clients"] == {"10.0.0.1": 5, "10.0.0.2": 2} and detail["window_seconds"] == 60
    assert rt.audit.verify().ok


def test_a_summary_is_written_by_the_timer_or_at_exit_without_a_further_refusal() -> None:
    clock = Clock()
    emitted: list[Any] = []
    limiter = RefusalLimiter(emitted.append, per_client=1, total=10, window=60, clock=clock, timer=False)
    assert limiter.admit("a", 401) and not limiter.admit("a", 401) and not limiter.admit("a", 404)
    limiter.flush_due()
    assert emitted == []  # not closed yet
    clock.now += 60
    limiter.flush_due()  # what the timer runs when the window has closed
    assert len(emitted) == 1 and emitted[0].detail["by_status"] == {"401": 1, "404": 1}
    assert limiter.admit("a", 401) and not limiter.admit("a", 413)  # a new window: one of its own again
    limiter.close()  # exit: the open window's summary now
    assert len(emitted) == 2 and emitted[1].detail["by_status"] == {"413": 1}


def test_refused_records_are_bounded_and_carry_no_body(rt: Runtime) -> None:
    client = create_app(runtime=rt).test_client()
    path, headers, body = worst_case_refused(1)
    assert client.put(path, data=body, headers=headers).status_code == 401
    assert client.put(path, data=body, headers={**headers, "X-Broker-API-Version": "1.0"}).status_code == 412
    assert client.post("/v2/nowhere/" + "z" * 5000, data=body, headers=headers).status_code == 404
    got = _refused(rt)
    assert [(r["status"], r["outcome"]) for r in got] == [(401, "Unauthorized"), (412, "PreconditionFailed"),
                                                          (404, "NotFound")]
    for r in got:
        assert record_bytes(r) <= RECORD_BYTES
        detail = json.loads(r["detail"])
        assert "parameter_names" not in detail and "plan_id" not in detail  # the body is never read
        assert detail["client"] == "127.0.0.1"
        assert all(len(v) <= 200 for v in detail.values() if isinstance(v, str))
    assert got[2]["action"] == "unrouted:POST"


def test_authenticated_requests_are_never_suppressed(rt: Runtime) -> None:
    clock = Clock()
    assert rt.audit is not None
    trail = rt.audit
    rt.refusals = RefusalLimiter(lambda e: trail.append(bounded(e)), per_client=1, total=1, window=60, clock=clock,
                                 timer=False)
    client = create_app(runtime=rt).test_client()
    for i in range(5):  # bad JSON from the authenticated platform: a 400 each, recorded each
        assert client.put(f"/v2/service_instances/b-{i}", data="{nope", headers=HEADERS).status_code == 400
    body = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "parameters": {"no_such_parameter": 1}}
    assert client.put("/v2/service_instances/b-9?accepts_incomplete=true", json=body,
                      headers=HEADERS).status_code == 400
    got = list(trail.records())
    assert [r["status"] for r in got] == [400] * 6 and all(r["principal"] == "basic:platform" for r in got)
    assert "no_such_parameter" in json.loads(got[5]["detail"])["parameter_names"]
    assert SUPPRESSED_ACTION not in json.dumps(got)
