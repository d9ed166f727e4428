"""A client's request identity cannot swell or split the broker's log lines."""

from __future__ import annotations

import requests

from broker.logs import MAX_LOGGED_IDENTITY
from tests.conftest import PASSWORD, USER
from tests.e2e.conftest import broker_factory, db_path  # noqa: F401  (real server process fixtures)


def test_a_huge_request_identity_is_logged_bounded_and_printable(broker_factory, db_path) -> None:  # noqa: F811
    broker = broker_factory(db_path)
    ident = "A" * 6000 + "\tforged"
    for auth in (None, (USER, PASSWORD)):
        r = requests.put(f"{broker.url}/v2/service_instances/log-bound?accepts_incomplete=true", auth=auth,
                         headers={"X-Broker-API-Version": "2.17", "X-Broker-API-Request-Identity": ident},
                         json={"service_id": "nope", "plan_id": "nope"}, timeout=10)
        assert r.status_code in (400, 401)
    broker.stop()
    lines = [line for line in broker.log_path.read_text().splitlines() if "AAAA" in line]
    assert len(lines) >= 2, lines
    assert all(f"[{'A' * MAX_LOGGED_IDENTITY}]" in line for line in lines), lines
    assert all(len(line) < 1000 and "\t" not in line and "forged" not in line for line in lines), lines
