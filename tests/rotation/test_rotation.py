"""OSB 2.17 binding rotation through the real Flask app and worker on the simulated backend: a successor gets a
fresh API key on its predecessor's service ID (and a freshly wrapped data key), both stay valid until each is
unbound, the last unbind removes everything; lifetimes, events, audit, and the refusals."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from broker.events.log import list_events
from broker.store.tables import audit_events
from tests.api.conftest import assert_error
from tests.conftest import SERVICE_ID, grs_params
from tests.rotation.conftest import bind, binding_path, rotate
from tests.services.conftest import params_for

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\dZ$")  # the spec's yyyy-mm-ddThh:mm:ss.sZ
DAY = 86400


def _keys(dr, iid: str) -> dict[str, dict]:
    """The simulated IAM's API keys of the instance, by owning binding."""
    return {r.binding_id: {"state": r.state, **r.data} for r in dr.inventory(iid) if r.kind == "api_key"}


def _owned(dr, iid: str, kind: str) -> list[str]:
    return sorted(r.binding_id for r in dr.inventory(iid) if r.kind == kind)


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _binding_row(dr, iid: str, bid: str):
    with dr.runtime.store.read() as tx:
        return tx.get_binding(iid, bid)


@pytest.mark.parametrize(("plan", "purpose", "policy_kinds"), [
    ("grs-async", "readonly", ["access_policy"]),
    ("ksys-managed", "orchestrator", ["access_policy"]),
    ("ksys-managed-byok", "kms-dek", ["access_policy", "key_policy"]),
])
def test_successor_gets_fresh_credentials_on_the_predecessors_grants(dr, plan, purpose, policy_kinds) -> None:
    iid = f"rot-{plan}"
    dr.ready_plan(iid, plan)
    first = bind(dr, iid, "b1", plan, purpose=purpose)
    assert first.status_code == 201, first.get_data(as_text=True)
    grants_before = {k: _owned(dr, iid, k) for k in policy_kinds}

    r = rotate(dr, iid, "b2", "b1")  # the body names only the predecessor: the rest is inherited
    assert r.status_code == 201, r.get_data(as_text=True)
    old, new = first.json["credentials"], r.json["credentials"]
    assert new["access"] == old["access"] and new["access"]["purpose"] == purpose
    assert new["iam"]["serviceid_crn"] == old["iam"]["serviceid_crn"]  # the same identity, so the same grants
    assert new["iam"]["apikey"] != old["iam"]["apikey"]
    if purpose == "kms-dek":
        assert new["kms"]["wrapped_dek"] != old["kms"]["wrapped_dek"]
        assert new["kms"]["aad"] == [iid, "b2"] and old["kms"]["aad"] == [iid, "b1"]
    else:
        assert "kms" not in new
    row = _binding_row(dr, iid, "b2")
    assert row.parameters == _binding_row(dr, iid, "b1").parameters and row.predecessor_binding_id == "b1"

    # both API keys are live in the simulated IAM; no grant was made twice
    keys = _keys(dr, iid)
    assert keys["b1"]["sha256"] == _sha(old["iam"]["apikey"]) and keys["b2"]["sha256"] == _sha(new["iam"]["apikey"])
    assert keys["b1"]["state"] == keys["b2"]["state"] == "active"
    assert {k: _owned(dr, iid, k) for k in policy_kinds} == grants_before
    assert _owned(dr, iid, "service_id") == ["b1"]

    # the platform unbinds the predecessor: only its key goes; the successor keeps working on the same grants
    assert dr.unbind(iid, "b1", dr.pid(plan)).status_code == 200
    keys = _keys(dr, iid)
    assert set(keys) == {"b2"} and keys["b2"]["sha256"] == _sha(new["iam"]["apikey"])
    assert {k: _owned(dr, iid, k) for k in policy_kinds} == grants_before
    assert _owned(dr, iid, "service_id") == ["b1"]
    fetched = dr.get(binding_path(iid, "b2"))
    assert fetched.status_code == 200 and fetched.json["credentials"] == new

    # the last binding of the chain takes everything with it
    assert dr.unbind(iid, "b2", dr.pid(plan)).status_code == 200
    assert [r.kind for r in dr.inventory(iid) if r.binding_id] == []


def test_a_chain_of_three_keeps_its_grants_until_its_last_binding_goes(dr) -> None:
    iid = "rot-chain"
    dr.ready_plan(iid, "grs-async")
    assert bind(dr, iid, "b1", "grs-async").status_code == 201
    assert rotate(dr, iid, "b2", "b1").status_code == 201
    third = rotate(dr, iid, "b3", "b2")
    assert third.status_code == 201, third.get_data(as_text=True)
    assert _binding_row(dr, iid, "b3").identity_binding_id == "b1"  # the chain's first binding owns the identity
    assert dr.unbind(iid, "b2", dr.pid("grs-async")).status_code == 200
    assert dr.unbind(iid, "b1", dr.pid("grs-async")).status_code == 200
    assert set(_keys(dr, iid)) == {"b3"} and _owned(dr, iid, "access_policy") == ["b1", "b1"]
    assert _keys(dr, iid)["b3"]["sha256"] == _sha(third.json["credentials"]["iam"]["apikey"])
    assert dr.unbind(iid, "b3", dr.pid("grs-async")).status_code == 200
    assert [r.kind for r in dr.inventory(iid) if r.binding_id] == []


def test_lifetime_metadata_on_bind_rotation_and_fetch(dr) -> None:
    iid = "rot-life"
    dr.ready_plan(iid, "ksys-managed-byok")  # 30 days, renew 7 days before (catalog features)
    r = bind(dr, iid, "b1", "ksys-managed-byok")
    assert r.status_code == 201
    meta = r.json["metadata"]
    assert ISO.match(meta["expires_at"]) and ISO.match(meta["renew_before"]), meta
    row = _binding_row(dr, iid, "b1")
    expires = datetime.strptime(meta["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    renew = datetime.strptime(meta["renew_before"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    assert expires == int(row.created_at) + 30 * DAY and renew == expires - 7 * DAY
    assert dr.get(binding_path(iid, "b1")).json["metadata"] == meta

    # an async rotation: 202 without credentials, then fetch binding has them and the successor's own lifetime
    r = rotate(dr, iid, "b2", "b1", query="?accepts_incomplete=true")
    assert r.status_code == 202 and set(r.json) == {"operation"}, r.get_data(as_text=True)
    assert dr.wait_binding(iid, "b2")["state"] == "succeeded"
    fetched = dr.get(binding_path(iid, "b2")).json
    assert fetched["credentials"]["iam"]["apikey"]
    assert fetched["metadata"]["expires_at"] >= meta["expires_at"]

    # grs-async: 90 days, 14 before
    dr.ready_plan("rot-life-grs", "grs-async", grs_params(2))
    meta = bind(dr, "rot-life-grs", "b1", "grs-async").json["metadata"]
    expires = datetime.strptime(meta["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    renew = datetime.strptime(meta["renew_before"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert (expires - renew).days == 14
    created = datetime.fromtimestamp(int(_binding_row(dr, "rot-life-grs", "b1").created_at), UTC)
    assert (expires - created).days == 90


def test_rotation_is_an_event_and_an_audit_record_naming_the_predecessor(dr) -> None:
    iid = "rot-evt"
    dr.ready_plan(iid, "ksys-managed")
    assert bind(dr, iid, "b1", "ksys-managed").status_code == 201
    r = rotate(dr, iid, "b2", "b1")
    assert r.status_code == 201
    with dr.runtime.store.read() as tx:
        events = list_events(tx.conn, instance_id=iid, types=["binding.issued", "binding.rotated"])
        audit = tx.conn.execute(select(audit_events).where(audit_events.c.binding_id == "b2")).fetchall()
    assert [(e["type"], e["binding_id"]) for e in events] == [("binding.issued", "b1"), ("binding.rotated", "b2")]
    assert events[1]["data"] == {"purpose": "orchestrator", "predecessor_binding_id": "b1"}
    assert "apikey" not in json.dumps(events[1])
    binds = [a for a in audit if a._mapping["action"] == "bind"]
    assert len(binds) == 1 and binds[0]._mapping["status"] == 201
    detail = binds[0]._mapping["detail"]
    assert (json.loads(detail) if isinstance(detail, str) else detail)["predecessor_binding_id"] == "b1"


def test_an_identical_rotation_repeated_is_200_with_the_same_credentials(dr) -> None:
    iid = "rot-rep"
    dr.ready_plan(iid, "grs-async")
    assert bind(dr, iid, "b1", "grs-async").status_code == 201
    first = rotate(dr, iid, "b2", "b1")
    assert first.status_code == 201
    again = rotate(dr, iid, "b2", "b1")
    assert again.status_code == 200 and again.json["credentials"] == first.json["credentials"]
    assert again.json["metadata"] == first.json["metadata"]
    assert dr.unbind(iid, "b1", dr.pid("grs-async")).status_code == 200
    assert rotate(dr, iid, "b2", "b1").status_code == 200  # still the same request after the predecessor went
    assert_error(rotate(dr, iid, "b2", "b1", parameters={"purpose": "readonly"}), 409)


def _refused(dr, response, status: int, error: str, *words: str) -> None:
    body = assert_error(response, status, error)
    for word in words:
        assert word in body["description"], body


def test_rotation_refusals(dr) -> None:
    dr.ready_plan("rot-a", "ksys-managed")
    dr.ready_plan("rot-b", "ksys-managed", params_for("ksys-managed", grs_params(2)))
    assert bind(dr, "rot-a", "b1", "ksys-managed", purpose="readonly").status_code == 201
    assert bind(dr, "rot-b", "other", "ksys-managed").status_code == 201
    before = _keys(dr, "rot-a")

    _refused(dr, rotate(dr, "rot-a", "b2", "nope"), 400, "BadRequest", "predecessor_binding_id", "does not exist")
    _refused(dr, rotate(dr, "rot-a", "b2", "other"), 400, "BadRequest", "predecessor_binding_id",
             "another service instance")
    _refused(dr, rotate(dr, "rot-a", "b2", "b1", headers={"X-Broker-API-Version": "2.16"}), 400, "BadRequest",
             "predecessor_binding_id", "2.17")
    _refused(dr, rotate(dr, "rot-a", "b2", "b1", parameters={"purpose": "orchestrator"}), 400, "BadRequest",
             "parameters")
    _refused(dr, rotate(dr, "rot-a", "b2", "b1", plan_id=dr.pid("ksys-managed-ha")), 400, "BadRequest", "plan_id")
    assert_error(rotate(dr, "rot-a", "b1", "b1"), 409)  # b1 exists with other attributes: OSB's 409 first
    _refused(dr, dr.put(binding_path("rot-a", "b2"), {"predecessor_binding_id": ""}), 400, "BadRequest",
             "predecessor_binding_id")
    assert _binding_row(dr, "rot-a", "b2") is None and _keys(dr, "rot-a") == before

    # an expired predecessor (spec: "MUST be the ID of non-expired Service Binding")
    with dr.runtime.store.write() as tx:
        tx.update_binding("rot-a", "b1", expires_at=1000.0)
    _refused(dr, rotate(dr, "rot-a", "b2", "b1"), 400, "BadRequest", "predecessor_binding_id", "expired")
    # an unbound one is unknown
    assert dr.unbind("rot-a", "b1", dr.pid("ksys-managed")).status_code == 200
    _refused(dr, rotate(dr, "rot-a", "b2", "b1"), 400, "BadRequest", "does not exist")
    assert _binding_row(dr, "rot-a", "b2") is None


def test_the_callers_own_service_id_cannot_be_rotated(dr) -> None:
    dr.ready_plan("rot-sid", "grs-async")
    given = "crn:v1:bluemix:public:iam-identity::a/0123456789abcdef0123456789abcdef::serviceid:ServiceId-given"
    r = dr.put(binding_path("rot-sid", "b1"), {"service_id": SERVICE_ID, "plan_id": dr.pid("grs-async"),
                                               "bind_resource": {"serviceid_crn": given}})
    assert r.status_code == 201
    _refused(dr, rotate(dr, "rot-sid", "b2", "b1"), 400, "BadRequest", "serviceid_crn")


def test_a_plan_without_binding_rotatable_refuses(tmp_path, migrated_state_db) -> None:
    from broker.app import build_runtime, create_app
    from tests.conftest import ROOT, make_settings
    from tests.services.conftest import DR

    folder = tmp_path / "catalog"
    folder.mkdir()
    text = (ROOT / "catalog" / "powervs-dr.yaml").read_text()
    (folder / "powervs-dr.yaml").write_text(text.replace("binding_rotatable: true", "binding_rotatable: false"))
    rt = build_runtime(make_settings(tmp_path, catalog_path=str(folder)))
    rt.worker.start()
    try:
        d = DR(create_app(runtime=rt).test_client(), rt)
        catalog = d.get("/v2/catalog").json
        assert {p.get("binding_rotatable") for p in catalog["services"][0]["plans"]} == {False}
        d.ready_plan("rot-no", "grs-async")
        assert bind(d, "rot-no", "b1", "grs-async").status_code == 201
        _refused(d, rotate(d, "rot-no", "b2", "b1"), 400, "BadRequest", "binding_rotatable")
    finally:
        rt.worker.stop(10)
        rt.store.engine.dispose()


def test_the_catalog_declares_every_bindable_plan_rotatable_and_keeps_lifetimes_private(dr) -> None:
    plans = dr.get("/v2/catalog").json["services"][0]["plans"]
    assert plans and all(p["binding_rotatable"] is True for p in plans)
    assert not any("features" in p or "credential_lifetime_days" in json.dumps(p) for p in plans)
