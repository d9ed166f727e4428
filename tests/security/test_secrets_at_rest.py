"""Secrets planted in parameters and credentials never reach a log line (at DEBUG), an error description, the
audit trail, or the bytes of the database files (SQLite file and its -wal)."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from broker.app import build_runtime, create_app
from broker.security.envelope import PREFIX
from broker.store.tables import bindings, instances, operation_steps, operations
from tests.conftest import ORCH_DEPLOY, OSB, PASSWORD, SERVICE_ID, USER, make_settings
from tests.services.conftest import ENCRYPTION, GRS_PARAMS

BYOK_PLAN = "3d4e5f6a-7b8c-4d9e-9f0a-2b3c4d5e6f7a"


def planted() -> dict[str, str]:
    tag = secrets.token_hex(6)
    return {"api_key": f"PLANTED-apikey-{tag}-Zq81", "orchestrator_password": f"PLANTED-orchpw-{tag}-Xw7",
            "updated_api_key": f"PLANTED-newkey-{tag}-Lm3"}


class Capture(logging.Handler):
    """Every record any logger emits, formatted with its traceback, without any filter."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def debug_logs() -> Iterator[Capture]:
    root = logging.getLogger()
    handler = Capture()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # Loggers that someone pinned higher would hide a leak from this test: open them all up.
    pinned = {name: lg.level for name, lg in logging.root.manager.loggerDict.items()
              if isinstance(lg, logging.Logger) and lg.level > logging.DEBUG}
    for name in pinned:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)
    for name, level in pinned.items():
        logging.getLogger(name).setLevel(level)


def db_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists())


def assert_absent(haystack: bytes | str, needles: dict[str, str], where: str) -> None:
    data = haystack if isinstance(haystack, bytes) else haystack.encode()
    for name, value in needles.items():
        assert value.encode() not in data, f"{name} found in {where}"


def lifecycle(osb: OSB, secrets_: dict[str, str], errors: list[str]) -> dict[str, Any]:
    """Every operation once, with the planted secrets in the parameters; returns the bind response."""
    iid, bid = "leak-1", "leak-b1"
    params = {**GRS_PARAMS, "ibmcloud_api_key": secrets_["api_key"],
              "orchestrator": {**ORCH_DEPLOY, "name": "ksys-leak", "password": secrets_["orchestrator_password"]},
              "encryption": dict(ENCRYPTION)}

    def ok(response: Any, *codes: int) -> Any:
        body = response.get_json(silent=True)
        if isinstance(body, dict) and "description" in body:
            errors.append(body["description"])
        assert response.status_code in codes, response.get_data(as_text=True)
        return body

    # Refused requests that carry the secrets: a schema violation on a sensitive field, then a bad pair.
    bad = {**params, "orchestrator": {**ORCH_DEPLOY, "name": "ksys-leak",
                                             "password": ["x", secrets_["orchestrator_password"]]}}
    ok(osb.provision(iid, BYOK_PLAN, bad), 400)
    ok(osb.provision(iid, BYOK_PLAN, {**params, "ibmcloud_api_key": 12345}), 400)
    ok(osb.provision(iid, BYOK_PLAN, {**params, "secondary_workspace_crn": params["primary_workspace_crn"]}), 400)

    ok(osb.provision(iid, BYOK_PLAN, params), 202)
    assert osb.wait(iid)["state"] == "succeeded"
    ok(osb.provision(iid, BYOK_PLAN, params), 200)
    ok(osb.provision(iid, BYOK_PLAN, {**params, "rpo_target_minutes": 30}), 409)

    fetched = ok(osb.get(f"/v2/service_instances/{iid}"), 200)
    assert "ibmcloud_api_key" not in fetched["parameters"]
    assert "password" not in fetched["parameters"]["orchestrator"]
    assert fetched["parameters"]["orchestrator"]["name"] == "ksys-leak"  # non-sensitive ones are returned
    assert fetched["parameters"]["protected_volumes"] == GRS_PARAMS["protected_volumes"]

    update = {"service_id": SERVICE_ID, "parameters": {"ibmcloud_api_key": secrets_["updated_api_key"],
                                                       "rpo_target_minutes": 20}}
    ok(osb.patch(f"/v2/service_instances/{iid}?accepts_incomplete=true", update), 202)
    assert osb.wait(iid)["state"] == "succeeded"
    for action in ("test_failover", "cleanup_test"):
        body = {"service_id": SERVICE_ID, "parameters": {"dr_action": {"type": action}}}
        ok(osb.patch(f"/v2/service_instances/{iid}?accepts_incomplete=true", body), 202)
        assert osb.wait(iid)["state"] == "succeeded"

    bound = ok(osb.bind(iid, bid, BYOK_PLAN), 201)
    ok(osb.bind(iid, bid, BYOK_PLAN), 200)
    ok(osb.get(f"/v2/service_instances/{iid}/service_bindings/{bid}"), 200)
    ok(osb.put(f"/bluemix_v1/service_instances/{iid}", {"enabled": False}), 204)
    ok(osb.bind(iid, "leak-b2", BYOK_PLAN), 422)
    ok(osb.put(f"/bluemix_v1/service_instances/{iid}", {"enabled": True}), 204)
    ok(osb.get(f"/dashboard/instances/{iid}"), 200)
    ok(osb.unbind(iid, bid, BYOK_PLAN), 200)
    ok(osb.deprovision(iid, BYOK_PLAN), 202)
    assert osb.wait(iid)["state"] == "succeeded"
    return bound


def test_planted_secrets_reach_no_log_no_error_no_audit_record_and_no_database_byte(
        tmp_path: Path, debug_logs: Capture) -> None:
    secrets_ = planted()
    settings = make_settings(tmp_path)
    runtime = build_runtime(settings)
    runtime.worker.start()
    errors: list[str] = []
    db = tmp_path / "state.db"
    try:
        osb = OSB(create_app(runtime=runtime).test_client())
        bound = lifecycle(osb, secrets_, errors)
        credentials = bound["credentials"]
        # What the broker issued is as secret as what it was given.
        secrets_["issued_api_key"] = credentials["iam"]["apikey"]
        secrets_["wrapped_dek"] = credentials["kms"]["wrapped_dek"]
        secrets_["basic_password"] = PASSWORD
        assert len(secrets_["issued_api_key"]) >= 32

        audit = "\n".join(json.dumps(r) for r in runtime.audit.records())
        assert audit.count('"action"') >= 15
        assert '"dr_action:test_failover"' in audit and '"bluemix_v1:disable"' in audit
        assert "orchestrator.password" in audit  # the parameter's name is recorded, never its value

        # While the broker runs (the -wal file holds the recent writes) and after it closed its files.
        live = db_bytes(db)
        assert db.with_name("state.db-wal").exists()
        with runtime.store.read() as tx:
            rows = [*tx.conn.execute(select(instances.c.parameters)), *tx.conn.execute(select(bindings.c.credentials)),
                    *tx.conn.execute(select(operations.c.payload)), *tx.conn.execute(select(operation_steps.c.outputs))]
            # A bare SHA-256 of a request that carries a password would let its guesses be tested offline.
            digests = [*tx.conn.execute(select(instances.c.request_hash)),
                       *tx.conn.execute(select(bindings.c.request_hash)),
                       *tx.conn.execute(select(operations.c.request_hash))]
    finally:
        runtime.worker.stop(timeout=10)
        runtime.store.engine.dispose()
    closed = db_bytes(db)

    assert_absent("\n".join(debug_logs.lines), secrets_, "the DEBUG logs")
    assert len(debug_logs.lines) > 100, "DEBUG logging was not captured"
    assert_absent("\n".join(errors), secrets_, "an error description")
    assert len(errors) >= 5
    assert_absent(audit, secrets_, "the audit trail")
    assert_absent(live, secrets_, "the database files while running")
    assert_absent(closed, secrets_, "the database files after close")
    # The secret-bearing columns are sealed, not merely free of these particular strings.
    sealed = [value for (value,) in rows if value is not None]
    assert sealed and all(v.startswith(PREFIX) for v in sealed)
    assert len(digests) >= 8 and all(v.startswith(PREFIX) for (v,) in digests)
    # Sanity: the scan would have found a plaintext secret (the customer's workspace CRN is not one).
    assert GRS_PARAMS["primary_workspace_crn"].encode() in closed


def test_real_server_at_debug_leaks_no_secret_to_its_output_or_database(tmp_path: Path, serve: Any) -> None:
    secrets_ = planted()
    db = tmp_path / "state.db"
    server = serve(db, DRBROKER_LOG_LEVEL="DEBUG", DRBROKER_SIM_STEP_SECONDS="0")
    session = requests.Session()
    session.auth = (USER, PASSWORD)
    session.headers["X-Broker-API-Version"] = "2.17"
    params = {**GRS_PARAMS, "ibmcloud_api_key": secrets_["api_key"], "encryption": dict(ENCRYPTION),
              "orchestrator": {**ORCH_DEPLOY, "name": "ksys-srv", "password": secrets_["orchestrator_password"]}}
    base = f"{server.url}/v2/service_instances/srv-1"

    def wait() -> None:
        for _ in range(300):
            if session.get(f"{base}/last_operation", timeout=10).json()["state"] != "in progress":
                return
        raise AssertionError("operation did not finish")

    r = session.put(f"{base}?accepts_incomplete=true", timeout=10, json={
        "service_id": SERVICE_ID, "plan_id": BYOK_PLAN, "organization_guid": "o", "space_guid": "s",
        "parameters": params})
    assert r.status_code == 202, r.text
    wait()
    r = session.patch(f"{base}?accepts_incomplete=true", timeout=10, json={
        "service_id": SERVICE_ID, "parameters": {"ibmcloud_api_key": secrets_["updated_api_key"]}})
    assert r.status_code == 202, r.text
    wait()
    bound = session.put(f"{base}/service_bindings/srv-b", timeout=30,
                        json={"service_id": SERVICE_ID, "plan_id": BYOK_PLAN}).json()
    secrets_["issued_api_key"] = bound["credentials"]["iam"]["apikey"]
    secrets_["wrapped_dek"] = bound["credentials"]["kms"]["wrapped_dek"]
    secrets_["basic_password"] = PASSWORD
    assert session.get(base, timeout=10).status_code == 200
    live = db_bytes(db)
    server.stop()
    log = server.log()
    assert " DEBUG " in log, "the server did not log at DEBUG"
    assert_absent(log, secrets_, "the server's output")
    assert_absent(live, secrets_, "the database files while running")
    assert_absent(db_bytes(db), secrets_, "the database files after stop")
