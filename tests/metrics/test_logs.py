"""Structured JSON logs carry the OSB request identity of the request that wrote them."""

from __future__ import annotations

import json

import requests

from tests.conftest import PASSWORD, USER


def test_json_logs_carry_the_request_identity(broker_factory, db_path) -> None:
    broker = broker_factory(db_path, DRBROKER_LOG_FORMAT="json")
    r = requests.put(f"{broker.url}/v2/service_instances/log-1?accepts_incomplete=true", auth=(USER, PASSWORD),
                     headers={"X-Broker-API-Version": "2.17", "X-Broker-API-Request-Identity": "req-4711"},
                     json={"service_id": "nope", "plan_id": "nope"}, timeout=10)
    assert r.status_code == 400
    broker.stop()
    entries = [json.loads(line) for line in broker.log_path.read_text().splitlines() if line.startswith("{")]
    mine = [e for e in entries if e.get("request_identity") == "req-4711"]
    assert mine, entries[-5:]
    assert any("/v2/service_instances/log-1" in e["message"] and "400" in e["message"] for e in mine)
    assert all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
