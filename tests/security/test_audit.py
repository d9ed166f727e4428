"""The audit trail: one MAC-chained record per mutating request (refused ones too) and day-2 action;
export and verify; tampering (an altered, deleted or re-hashed record, a truncated tail) is detected.
The keyed chain itself (rewrites, forged MACs, legacy records, replicas) is in test_audit_keyed.py."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, text, update

from broker.app import Runtime, build_runtime, create_app
from broker.cli import main
from broker.security import audit_key
from broker.security.audit import GENESIS, AuditEvent, AuditTrail, chain_hash, chain_mac
from broker.store.tables import audit_events
from tests.conftest import GRS_PLAN, HEADERS, OSB, SERVICE_ID, make_settings


def identity(value: dict[str, Any]) -> str:
    return "ibmcloud " + base64.b64encode(json.dumps(value).encode()).decode()


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = build_runtime(make_settings(tmp_path))
    runtime.worker.start()
    yield runtime
    runtime.worker.stop(timeout=10)
    runtime.store.engine.dispose()


def records(runtime: Runtime) -> list[dict[str, Any]]:
    assert runtime.audit is not None
    return list(runtime.audit.records())


def test_every_mutating_request_and_day2_action_is_recorded_with_who_what_and_outcome(rt: Runtime) -> None:
    osb = OSB(create_app(runtime=rt).test_client())
    who = {"X-Broker-API-Originating-Identity": identity({"iam_id": "IBMid-alice"}),
           "X-Broker-API-Request-Identity": "req-42"}
    osb.headers.update(who)
    assert osb.provision("a-1").status_code == 202
    osb.wait("a-1")
    body = {"service_id": SERVICE_ID, "parameters": {"dr_action": {"type": "test_failover"}}}
    assert osb.patch("/v2/service_instances/a-1?accepts_incomplete=true", body).status_code == 202
    osb.wait("a-1")
    refused = {"service_id": SERVICE_ID, "parameters": {"dr_action": {"type": "failback"}}}  # no failover yet
    assert osb.patch("/v2/service_instances/a-1?accepts_incomplete=true", refused).status_code == 422
    assert osb.bind("a-1", "b-1").status_code == 201
    assert osb.put("/bluemix_v1/service_instances/a-1", {"enabled": False}).status_code == 204
    assert osb.put("/bluemix_v1/service_instances/a-1", {"enabled": True}).status_code == 204
    assert osb.unbind("a-1", "b-1").status_code == 200
    assert osb.deprovision("a-1").status_code == 202
    osb.wait("a-1")
    # Reads are not audited.
    n = len(records(rt))
    osb.get("/v2/catalog")
    osb.get("/v2/service_instances/a-1/last_operation")
    assert len(records(rt)) == n

    got = records(rt)
    assert [r["action"] for r in got] == ["provision", "dr_action:test_failover", "dr_action:failback", "bind",
                                          "bluemix_v1:disable", "bluemix_v1:enable", "unbind", "deprovision"]
    assert [r["status"] for r in got] == [202, 202, 422, 201, 204, 204, 200, 202]
    assert [r["outcome"] for r in got] == ["accepted", "accepted", "UnprocessableEntity", "created", "ok", "ok",
                                           "ok", "accepted"]
    first = got[0]
    assert first["principal"] == "basic:platform"
    assert json.loads(first["originating_identity"]) == {"platform": "ibmcloud", "value": {"iam_id": "IBMid-alice"}}
    assert first["request_identity"] == "req-42"
    assert first["instance_id"] == "a-1" and first["operation_id"]
    detail = json.loads(first["detail"])
    assert detail["plan_id"] == GRS_PLAN and "protected_volumes" in detail["parameter_names"]
    assert got[3]["binding_id"] == "b-1"
    assert json.loads(got[2]["detail"])["description"]  # why it was refused
    assert rt.audit is not None and rt.audit.verify().ok


def test_refused_requests_are_recorded_too(rt: Runtime) -> None:
    client = create_app(runtime=rt).test_client()
    path = "/v2/service_instances/r-1?accepts_incomplete=true"
    body = json.dumps({"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "parameters": {}})
    client.put(path, data=body, headers={"X-Broker-API-Version": "2.17"})  # no credentials
    client.put(path, data=body, headers={"X-Broker-API-Version": "2.17", "Authorization": "Basic bm9wZTpub3Bl"})
    client.put(path, data=body, headers={"Authorization": HEADERS["Authorization"]})  # no version
    client.put(path, data="{not json", headers=HEADERS)
    client.put(path, data=b"x" * (1024 * 1024 + 1), headers=HEADERS)
    client.put("/v2/service_instances/" + "i" * 300, data=body, headers=HEADERS)
    client.delete("/v2/service_instances/nothing-here?service_id=x&plan_id=y", headers=HEADERS)
    got = records(rt)
    assert [(r["status"], r["outcome"]) for r in got] == [
        (401, "Unauthorized"), (401, "Unauthorized"), (412, "PreconditionFailed"), (400, "BadRequest"),
        (413, "PayloadTooLarge"), (400, "BadRequest"), (400, "BadRequest")]
    # The size limit is enforced before authentication (the body is not read), hence no principal there.
    assert [r["principal"] for r in got] == [None, None, None, "basic:platform", None, "basic:platform",
                                             "basic:platform"]
    assert json.loads(got[5]["detail"]).get("invalid_id") is True and got[5]["instance_id"] is None
    assert all(r["action"] == "provision" for r in got[:6])


def _tamper(runtime: Runtime, sql: Any) -> None:
    with runtime.store.write() as tx:
        tx.conn.execute(sql)


def _trail_with(rt: Runtime, n: int) -> AuditTrail:
    trail = rt.audit
    assert trail is not None
    for i in range(n):
        trail.append(AuditEvent(action="update", principal="basic:x", instance_id=f"t-{i}", status=202,
                                outcome="accepted"))
    assert trail.verify().ok
    return trail


def test_an_altered_record_is_detected_and_named(rt: Runtime) -> None:
    trail = _trail_with(rt, 5)
    _tamper(rt, update(audit_events).where(audit_events.c.id == 3).values(outcome="ok"))
    result = trail.verify()
    assert not result.ok and result.broken_id == 3 and "altered" in (result.problem or "")


def test_an_altered_record_with_a_recomputed_plain_hash_fails_its_own_mac(rt: Runtime) -> None:
    trail = _trail_with(rt, 5)
    row = next(r for r in trail.records() if r["id"] == 2)
    forged = {**row, "principal": "basic:mallory"}
    _tamper(rt, update(audit_events).where(audit_events.c.id == 2).values(
        principal="basic:mallory", hash=chain_hash(row["prev_hash"], forged)))
    result = trail.verify()
    assert not result.ok and result.broken_id == 2 and "MAC" in (result.problem or "")


def test_a_deleted_record_is_detected(rt: Runtime) -> None:
    trail = _trail_with(rt, 5)
    _tamper(rt, delete(audit_events).where(audit_events.c.id == 2))
    result = trail.verify()
    assert not result.ok and result.broken_id == 3 and "deleted" in (result.problem or "")
    _tamper(rt, delete(audit_events).where(audit_events.c.id == 1))
    assert trail.verify().broken_id == 3


def test_a_truncated_tail_is_detected_against_an_exported_head(rt: Runtime) -> None:
    trail = _trail_with(rt, 5)
    head = trail.verify().head
    _tamper(rt, delete(audit_events).where(audit_events.c.id >= 4))
    assert trail.verify().ok  # a shorter chain is still a valid chain...
    result = trail.verify(head=head)  # ...but not one that contains the head exported earlier
    assert not result.ok and "removed" in (result.problem or "")


def test_audit_export_and_verify_commands(rt: Runtime, tmp_path: Path, monkeypatch: Any) -> None:
    trail = _trail_with(rt, 3)
    time.sleep(0.05)
    cut = time.time()
    time.sleep(0.05)
    trail.append(AuditEvent(action="deprovision", principal="basic:x", status=202, outcome="accepted"))
    monkeypatch.setenv("DRBROKER_DATABASE_URL", rt.settings.database_url)
    runner = CliRunner()

    out = runner.invoke(main, ["audit", "export"])
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in out.output.splitlines()]
    assert [r["id"] for r in lines] == [1, 2, 3, 4]
    with rt.store.read() as tx:
        mac = audit_key.read(tx.conn, rt.store.sealer)
    assert mac is not None
    prev = GENESIS
    for record in lines:  # the export and the MAC key are enough to recompute the chain
        assert record["chain"] == "hmac-sha256" and chain_mac(mac.key, prev, record) == record["hash"]
        assert chain_hash(prev, record) != record["hash"]
        prev = record["hash"]
    assert lines[0]["at_iso"].endswith("Z")

    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut)) + f".{int(cut % 1 * 1e6):06d}Z"
    out = runner.invoke(main, ["audit", "export", "--since", since])
    assert out.exit_code == 0, out.output
    assert [json.loads(line)["action"] for line in out.output.splitlines()] == ["deprovision"]
    assert runner.invoke(main, ["audit", "export", "--since", "yesterday"]).exit_code != 0

    ok = runner.invoke(main, ["audit", "verify"])
    assert ok.exit_code == 0 and "intact: 4 record(s)" in ok.output
    _tamper(rt, text("UPDATE audit_events SET action = 'provision' WHERE id = 2"))
    broken = runner.invoke(main, ["audit", "verify"])
    assert broken.exit_code == 1
    assert "record #2" in broken.output


def test_appends_from_several_processes_form_one_chain(rt: Runtime, tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from broker.store import db\n"
        "from broker.store.repository import Store\n"
        "from broker.security.audit import AuditTrail, AuditEvent\n"
        "from broker.security.envelope import Envelope, LocalKeyFile\n"
        "trail = AuditTrail(Store(db.make_engine(sys.argv[1]), Envelope(LocalKeyFile(sys.argv[3]))))\n"
        "for i in range(40):\n"
        "    trail.append(AuditEvent(action='update', principal=f'proc-{sys.argv[2]}', status=202))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, rt.settings.database_url, str(n),
                               str(rt.settings.kek_path)]) for n in range(3)]
    trail = rt.audit
    assert trail is not None
    for _ in range(40):
        trail.append(AuditEvent(action="update", principal="proc-main", status=202))
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    result = trail.verify()
    assert result.ok and result.records == 160, result


def test_the_chain_holds_under_concurrent_appends_on_both_stores(db_url: str) -> None:
    """SQLite (BEGIN IMMEDIATE) and PostgreSQL (advisory lock, unique prev_hash): threads appending at once
    still make one linear chain, and tampering is found on both."""
    import threading

    from broker.store import db as store_db
    from broker.store.repository import Store

    engine = store_db.make_engine(db_url)
    store_db.upgrade(engine)
    trail = AuditTrail(Store(engine))
    errors: list[BaseException] = []

    def append(n: int) -> None:
        try:
            for i in range(15):
                trail.append(AuditEvent(action="update", principal=f"t-{n}", instance_id=f"i-{i}", status=202))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    result = trail.verify()
    assert result.ok and result.records == 60, result
    with engine.begin() as conn:
        conn.execute(update(audit_events).where(audit_events.c.id == 30).values(principal="t-9"))
    assert trail.verify().broken_id == 30
    engine.dispose()
