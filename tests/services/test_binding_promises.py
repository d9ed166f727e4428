"""Every promise of the bind parameters and of ``ibmcloud_api_key`` kept, on both backends, through the OSB API.

Bind: every binding's identity gets an access policy on each of the instance's two workspaces with the roles its
``purpose`` and ``role`` ask for (``broker.domain.access``); ``kms-dek`` adds Reader on the root key and the
wrapped data key; ``readonly`` carries no key material; a purpose the plan cannot serve, or Writer on a readonly
binding, is a 400 naming the field; unbind (and deprovision) leave no policy. Update: a new ``ibmcloud_api_key``
is handed to DR Automation (``PUT /drautomation/v1/apikey/{id}``) or to the simulated orchestrator, never
returned or logged; grs-async, which runs no orchestrator, refuses it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from broker.app import build_runtime, create_app
from broker.domain.sites import parse_workspace_crn
from broker.orchestrators.ibmcloud.naming import Names
from tests.conftest import PRIMARY, SECONDARY, SERVICE_ID, make_settings
from tests.ibmfake import fake_cloud, ibmcloud_env
from tests.services.conftest import DR

VIEWER, OPERATOR = "crn:v1:bluemix:public:iam::::role:Viewer", "crn:v1:bluemix:public:iam::::role:Operator"
READER, MANAGER = ("crn:v1:bluemix:public:iam::::serviceRole:Reader",
                   "crn:v1:bluemix:public:iam::::serviceRole:Manager")
GUIDS = {parse_workspace_crn(PRIMARY).guid, parse_workspace_crn(SECONDARY).guid}
NEW_KEY = "rotated-customer-key-0123456789-SENSITIVE"


def _bind(dr: DR, iid: str, bid: str, plan: str, **params: Any) -> Any:
    body: dict[str, Any] = {"service_id": SERVICE_ID, "plan_id": dr.pid(plan)}
    if params:
        body["parameters"] = params
    return dr.put(f"/v2/service_instances/{iid}/service_bindings/{bid}", body)


def _update(dr: DR, iid: str, **params: Any) -> Any:
    return dr.patch(f"/v2/service_instances/{iid}?accepts_incomplete=true",
                    {"service_id": SERVICE_ID, "parameters": params})


def _ws_grants(creds: dict[str, Any]) -> list[dict[str, Any]]:
    return [g for g in creds["access"]["grants"] if g["resource"]["serviceName"] == "power-iaas"]


# --- simulated backend ------------------------------------------------------------------------------------

def _sim_policies(dr: DR, iid: str, bid: str) -> list:
    return [r for r in dr.inventory(iid) if r.binding_id == bid and r.kind in ("access_policy", "key_policy")]


@pytest.mark.parametrize(("plan", "params", "roles"), [
    ("grs-async", {}, [VIEWER, READER]),
    ("ksys-managed", {"purpose": "orchestrator", "role": "Writer"}, [OPERATOR, MANAGER]),
    ("ksys-managed", {"purpose": "readonly"}, [VIEWER, READER]),
])
def test_sim_every_binding_gets_a_policy_on_both_workspaces_with_its_role(dr: DR, plan: str, params: dict,
                                                                         roles: list[str]) -> None:
    iid = f"pol-{plan}-{len(params)}"
    dr.ready_plan(iid, plan)
    r = _bind(dr, iid, "b1", plan, **params)
    assert r.status_code == 201, r.get_data(as_text=True)
    creds = r.json["credentials"]
    policies = [p for p in _sim_policies(dr, iid, "b1") if p.kind == "access_policy"]
    assert len(policies) == 2
    for p in policies:
        assert p.data["roles"] == roles
        assert p.data["resource"]["serviceName"] == "power-iaas"
        assert p.data["subject"] == creds["iam"]["serviceid_crn"]
    assert {p.data["resource"]["serviceInstance"] for p in policies} == GUIDS
    # the credentials say what was granted, in the same terms
    assert sorted(g["resource"]["serviceInstance"] for g in _ws_grants(creds)) == sorted(GUIDS)
    assert all(g["roles"] == roles for g in _ws_grants(creds))
    assert ("orchestrator" in creds) == (params.get("purpose") == "orchestrator")
    assert dr.unbind(iid, "b1", dr.pid(plan)).status_code == 200
    assert _sim_policies(dr, iid, "b1") == []


def test_sim_readonly_binding_on_a_byok_plan_carries_no_key_material(dr: DR) -> None:
    dr.ready_plan("ro-byok", "ksys-managed-byok")
    r = _bind(dr, "ro-byok", "ro", "ksys-managed-byok", purpose="readonly")
    assert r.status_code == 201, r.get_data(as_text=True)
    creds = r.json["credentials"]
    assert "kms" not in creds and "orchestrator" not in creds
    assert [p.kind for p in _sim_policies(dr, "ro-byok", "ro")] == ["access_policy"] * 2
    # the byok default (kms-dek): the wrapped data key and Reader on the root key, role Writer on the workspaces
    r = _bind(dr, "ro-byok", "dek", "ksys-managed-byok", role="Writer")
    creds = r.json["credentials"]
    assert creds["kms"]["wrapped_dek"] and creds["access"]["purpose"] == "kms-dek"
    key_policy = next(p for p in _sim_policies(dr, "ro-byok", "dek") if p.kind == "key_policy")
    assert key_policy.data["roles"] == [READER] and key_policy.data["resource"]["serviceName"] == "kms"
    assert all(g["roles"] == [OPERATOR, MANAGER] for g in _ws_grants(creds))
    # deprovision with bindings left: revoke_all_bindings takes every policy
    assert dr.deprovision("ro-byok", dr.pid("ksys-managed-byok")).status_code == 202
    assert dr.wait("ro-byok")["state"] == "succeeded"
    assert dr.inventory("ro-byok") == []


@pytest.mark.parametrize(("plan", "params", "field"), [
    ("grs-async", {"purpose": "orchestrator"}, "parameters.purpose"),
    ("grs-async", {"purpose": "kms-dek"}, "parameters.purpose"),
    ("grs-async", {"role": "Writer"}, "parameters.role"),
    ("ksys-managed", {"purpose": "kms-dek"}, "parameters.purpose"),
    ("rehearsal-only", {"purpose": "kms-dek"}, "parameters.purpose"),
    ("ksys-managed", {"purpose": "readonly", "role": "Writer"}, "parameters.role"),
])
def test_sim_a_purpose_the_plan_cannot_serve_is_a_400_naming_the_field(dr: DR, plan: str, params: dict,
                                                                       field: str) -> None:
    iid = f"ref-{plan}"
    dr.ready_plan(iid, plan)
    r = _bind(dr, iid, "b", plan, **params)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.json["description"].startswith(field), r.json
    assert not [x for x in dr.inventory(iid) if x.binding_id]


def test_sim_update_hands_the_new_api_key_to_the_orchestrator_and_never_shows_it(dr: DR, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    dr.ready_plan("rot-1", "ksys-managed")
    assert _update(dr, "rot-1", ibmcloud_api_key=NEW_KEY).status_code == 202
    result = dr.wait("rot-1")
    assert result["state"] == "succeeded", result
    orch = next(r for r in dr.inventory("rot-1") if r.kind == "orchestrator")
    assert orch.data["api_key_updates"] == 1
    assert orch.data["api_key_fingerprint"] == hashlib.sha256(NEW_KEY.encode()).hexdigest()[:12]
    assert NEW_KEY not in str([r.data for r in dr.inventory("rot-1")])
    assert NEW_KEY not in dr.get("/v2/service_instances/rot-1").get_data(as_text=True)
    assert NEW_KEY not in caplog.text
    # the same key again changes nothing and rotates nothing
    assert _update(dr, "rot-1", ibmcloud_api_key=NEW_KEY).status_code == 200


def test_sim_grs_async_refuses_an_api_key_it_would_only_store(dr: DR) -> None:
    dr.ready_plan("rot-grs", "grs-async")
    r = _update(dr, "rot-grs", ibmcloud_api_key=NEW_KEY)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.json["description"].startswith("parameters.ibmcloud_api_key") and NEW_KEY not in r.json["description"]
    r = dr.provision_plan("rot-grs-2", "grs-async", {**_grs(), "ibmcloud_api_key": NEW_KEY})
    assert r.status_code == 400 and r.json["description"].startswith("parameters.ibmcloud_api_key")


def _grs() -> dict[str, Any]:
    from tests.conftest import grs_params

    return grs_params(7)


# --- ibmcloud backend against the fake IBM Cloud ------------------------------------------------------------

@pytest.fixture
def fake() -> Iterator:
    with fake_cloud() as server:
        yield server


@pytest.fixture
def ibm(tmp_path: Path, fake) -> Iterator[DR]:
    rt = build_runtime(make_settings(tmp_path, orchestrator="ibmcloud", ibmcloud_env=ibmcloud_env(fake.url)))
    rt.worker.start()
    d = DR(create_app(runtime=rt).test_client(), rt)
    d.fake = fake  # type: ignore[attr-defined]
    yield d
    rt.worker.stop(10)


def _fake_policies(fake, iid: str, bid: str) -> dict[str, dict[str, Any]]:
    prefix = Names(iid).binding_policy_prefix(bid)
    return {p["description"].removeprefix(prefix): p for p in fake.state.policies.values()
            if p["description"].startswith(prefix)}


def _attrs(policy: dict[str, Any]) -> dict[str, str]:
    return {a["name"]: a["value"] for a in policy["resources"][0]["attributes"]}


def _violations(fake) -> list:
    return requests.get(f"{fake.url}/_fake/contract", timeout=30).json().get("violations") or []


@pytest.mark.parametrize(("plan", "params", "roles"), [
    ("grs-async", {}, [VIEWER, READER]),
    ("ksys-managed", {"role": "Writer"}, [OPERATOR, MANAGER]),
])
def test_ibm_every_binding_gets_an_iam_policy_on_both_workspaces(ibm: DR, plan: str, params: dict,
                                                                  roles: list[str]) -> None:
    fake = ibm.fake  # type: ignore[attr-defined]
    iid = f"ipol-{plan}"
    ibm.ready_plan(iid, plan)
    r = _bind(ibm, iid, "b1", plan, **params)
    assert r.status_code == 201, r.get_data(as_text=True)
    creds = r.json["credentials"]
    policies = _fake_policies(fake, iid, "b1")
    assert set(policies) == {"ws-primary", "ws-secondary"}
    sid = next(s for s in fake.state.service_ids.values() if s["name"] == Names(iid).binding("b1"))
    for p in policies.values():
        assert p["type"] == "access"
        assert p["subjects"] == [{"attributes": [{"name": "iam_id", "value": sid["iam_id"]}]}]
        assert [x["role_id"] for x in p["roles"]] == roles
        attrs = _attrs(p)
        assert attrs["serviceName"] == "power-iaas" and attrs["accountId"] == parse_workspace_crn(PRIMARY).account
    assert {_attrs(p)["serviceInstance"] for p in policies.values()} == GUIDS
    assert all(g["roles"] == roles for g in _ws_grants(creds))
    assert ibm.unbind(iid, "b1", ibm.pid(plan)).status_code == 200
    assert _fake_policies(fake, iid, "b1") == {}
    assert _violations(fake) == []


def test_ibm_readonly_byok_binding_has_no_key_material_and_kms_dek_has_reader_on_the_root_key(ibm: DR) -> None:
    fake = ibm.fake  # type: ignore[attr-defined]
    ibm.ready_plan("ibyok", "ksys-managed-byok")
    r = _bind(ibm, "ibyok", "ro", "ksys-managed-byok", purpose="readonly")
    assert r.status_code == 201, r.get_data(as_text=True)
    assert "kms" not in r.json["credentials"] and "orchestrator" not in r.json["credentials"]
    assert set(_fake_policies(fake, "ibyok", "ro")) == {"ws-primary", "ws-secondary"}
    r = _bind(ibm, "ibyok", "dek", "ksys-managed-byok", purpose="kms-dek", role="Writer")
    assert r.status_code == 201, r.get_data(as_text=True)
    assert r.json["credentials"]["kms"]["wrapped_dek"]
    key_policy = _fake_policies(fake, "ibyok", "dek")["kms-reader"]
    assert [x["role_id"] for x in key_policy["roles"]] == [READER]
    assert _attrs(key_policy)["serviceName"] == "kms" and _attrs(key_policy)["resourceType"] == "key"
    r = _bind(ibm, "ibyok", "bad", "ksys-managed-byok", purpose="readonly", role="Writer")
    assert r.status_code == 400 and r.json["description"].startswith("parameters.role")
    # deprovision with both bindings left: revoke_all_bindings takes every policy
    assert ibm.deprovision("ibyok", ibm.pid("ksys-managed-byok")).status_code == 202
    assert ibm.wait("ibyok", timeout=60)["state"] == "succeeded"
    assert not [p for p in fake.state.policies.values() if p["description"].startswith(Names("ibyok").tag)]
    assert _violations(fake) == []


def test_ibm_update_hands_the_new_api_key_to_dr_automation(ibm: DR, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    fake = ibm.fake  # type: ignore[attr-defined]
    ibm.ready_plan("irot", "ksys-managed")
    assert _update(ibm, "irot", ibmcloud_api_key=NEW_KEY).status_code == 202
    result = ibm.wait("irot", timeout=60)
    assert result["state"] == "succeeded", result
    (dep,) = fake.state.deployments.values()
    assert dep["api_key_updates"] == 1 and dep["api_key_sha256"] == hashlib.sha256(NEW_KEY.encode()).hexdigest()
    ex = requests.get(f"{fake.url}/_fake/exchanges", timeout=30).json()["exchanges"]
    puts = [e for e in ex if e["method"] == "PUT" and re.match(r"^/drautomation/v1/apikey/", e["path"])]
    assert len(puts) == 1 and puts[0]["status"] == 200
    assert NEW_KEY not in ibm.get("/v2/service_instances/irot").get_data(as_text=True)
    assert NEW_KEY not in caplog.text
    assert _violations(fake) == []
    r = _update(ibm, "irot", ibmcloud_api_key=NEW_KEY)  # the same key: nothing to do
    assert r.status_code == 200


def test_ibm_grs_async_refuses_the_api_key(ibm: DR) -> None:
    ibm.ready_plan("irot-grs", "grs-async")
    r = _update(ibm, "irot-grs", ibmcloud_api_key=NEW_KEY)
    assert r.status_code == 400 and r.json["description"].startswith("parameters.ibmcloud_api_key")
