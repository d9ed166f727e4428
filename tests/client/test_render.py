"""Status lines from the broker's own descriptions (as ``broker/workflows/engine.py`` and
``broker/services/osb.py`` word them): the action first, nothing said twice, the broker's words kept."""

from __future__ import annotations

import pytest

from broker.client.osb import ClientError
from broker.client.render import action_in, client_error, one_line, status_line

RPO = "replication consistent_copying, achieved RPO 3 s (target 15 min)"


@pytest.mark.parametrize(("action", "answer", "line"), [
    ("provision", {"state": "in progress", "description": "provision: queued"}, "provision: in progress (queued)"),
    ("test_failover", {"state": "in progress", "description": "update: queued"}, "test_failover: in progress (queued)"),
    ("provision", {"state": "in progress", "description": "step 4/7: creating replication group"},
     "provision: in progress (step 4/7: creating replication group)"),
    ("provision", {"state": "succeeded", "description": f"succeeded: provisioned; {RPO}"},
     f"provision: succeeded ({RPO})"),
    ("test_failover", {"state": "succeeded", "description": f"succeeded: test_failover done; {RPO}"},
     f"test_failover: succeeded ({RPO})"),
    ("deprovision", {"state": "succeeded", "description": "succeeded: deprovisioned"}, "deprovision: succeeded"),
    ("deprovision", {"state": "succeeded", "description": "gone"}, "deprovision: succeeded"),
    ("provision", {"state": "failed", "description": "failed: onboarding failed: injected"},
     "provision: failed (onboarding failed: injected)"),
    ("provision", {"state": "in progress", "description": "failed, cleaning up: boom"},
     "provision: in progress (failed, cleaning up: boom)"),
    ("update", {"state": "in progress", "description": "update: queued again by an operator (cli)"},
     "update: in progress (queued again by an operator (cli))"),
    # a description naming another action than the line's keeps it
    ("operation", {"state": "succeeded", "description": "succeeded: resync done"},
     "operation: succeeded (resync done)"),
    ("provision", {"state": "in progress"}, "provision: in progress"),
])
def test_status_line(action: str, answer: dict[str, str], line: str) -> None:
    assert status_line(action, answer) == line


@pytest.mark.parametrize(("description", "action"), [
    ("update: queued", "update"), ("succeeded: resync done; " + RPO, "resync"), ("succeeded: provisioned", "provision"),
    ("succeeded: unbound", "unbind"), ("step 1/3: stopping VMs", None), ("failed: boom", None),
])
def test_the_action_a_description_names(description: str, action: str | None) -> None:
    assert action_in(description) == action


def test_error_documents_and_their_exit_codes() -> None:
    body = {"error": "Unauthorized", "description": "invalid credentials"}
    doc, code = client_error(ClientError("GET /v2/catalog: 401", status=401, body=body))
    assert code == 3 and doc["status"] == 401 and doc["error"] == "Unauthorized"
    assert doc["description"].startswith("authentication failed: check --user/--password")
    assert "invalid credentials" in doc["description"]
    assert client_error(ClientError("x", status=401, body=body), token=True)[0]["description"].startswith(
        "authentication failed: check --token")
    doc, code = client_error(ClientError("x", status=404, body={"description": "instance i-1 does not exist"}))
    assert (doc, code) == ({"error": "NotFound", "description": "instance i-1 does not exist", "status": 404}, 3)
    assert one_line(doc) == "error: 404 NotFound: instance i-1 does not exist"
    doc, code = client_error(ClientError("x", status=503, body="<html>down</html>"))
    assert code == 4 and doc == {"error": "ServiceUnavailable", "description": "<html>down</html>", "status": 503}
    doc, code = client_error(ClientError("cannot reach the broker at http://b: refused"))
    assert code == 4 and doc["error"] == "Unreachable" and one_line(doc) == f"error: {doc['description']}"
