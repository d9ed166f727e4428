"""IAM identity and policies, the resource controller, the global catalog, DR Automation and workspace CRNs,
held to IBM's definitions (the installed ibm-platform-services and ibm-dra-python-sdk models):

- IAM lists page (service IDs and API keys: ``pagesize``/``pagetoken``, default 20; policies: ``limit``/
  ``start``, default 50) and the broker reads every page, so its objects are found among many others;
- a deleted resource instance waits in ``pending_reclamation``, which the broker treats as gone;
- workspaces in dal13/wdc04 carry ``us-south``/``us-east`` in their CRN and pair as dal13-wdc04;
- an orchestrator deployment needs an SSH key or a Secrets Manager secret, network IDs and a strong password,
  and takes about 35 minutes (35 steps of the fake's clock);
- a create whose answer is lost (connection dropped, or a 503 after the effect) is found on the retry:
  nothing duplicated, nothing left behind.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from broker.app import build_runtime, create_app
from broker.domain.sites import parse_workspace_crn
from broker.fakecloud.contracts import load
from broker.fakecloud.state import DRA_DEPLOY_STEPS, iso
from broker.orchestrators.ibmcloud.endpoints import Endpoints
from broker.orchestrators.ibmcloud.resources import is_gone
from broker.orchestrators.simulated.seed import DEMO_ACCOUNT, workspace_crn
from tests.conftest import SERVICE_ID, make_settings
from tests.ibmfake import FAST_STEP, FakeAdmin, fake_cloud, ibmcloud_env
from tests.services.conftest import DR, ORCH, params_for

MY_SERVICES = {"iam_identity", "iam_policy", "resource_controller", "global_catalog", "dra", "metering"}


@pytest.fixture
def fake() -> Iterator[Any]:
    with fake_cloud() as server:
        yield server


@pytest.fixture
def dr(client: Any, worker: Any) -> DR:
    """The simulated backend through the real app and worker."""
    return DR(client, worker)


class Ibm(DR):
    fake: Any
    admin: FakeAdmin


@pytest.fixture
def ibm(tmp_path: Path, fake: Any) -> Iterator[Ibm]:
    rt = build_runtime(make_settings(tmp_path, orchestrator="ibmcloud", ibmcloud_env=ibmcloud_env(fake.url)))
    rt.worker.start()
    d = Ibm(create_app(runtime=rt).test_client(), rt)
    d.fake, d.admin = fake, FakeAdmin(fake.url)
    yield d
    rt.worker.stop(10)


def _token(fake: Any) -> dict[str, str]:
    r = requests.post(f"{fake.url}/identity/token", timeout=10, data={
        "grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": "test"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _my_violations(fake: Any) -> list[str]:
    summary = requests.get(f"{fake.url}/_fake/contract", timeout=10).json()
    return [v["text"] for v in summary["violations"] if v["text"].split(" ", 1)[0] in MY_SERVICES]


def _exchanges(fake: Any, method: str, path_part: str) -> list[dict[str, Any]]:
    every = requests.get(f"{fake.url}/_fake/exchanges", timeout=30).json()["exchanges"]
    return [e for e in every if e["method"] == method and path_part in e["path"]]


# seeding the fake's account with other people's IAM objects ------------------------------------------
def _seed_service_ids(fake: Any, n: int, prefix: str = "other-app") -> list[str]:
    S = fake.state
    ids = []
    with S.lock:
        for i in range(n):
            sid = f"ServiceId-{uuid.uuid4()}"
            now = iso(time.time())
            S.service_ids[sid] = {
                "id": sid, "iam_id": f"iam-{sid}", "account_id": DEMO_ACCOUNT, "name": f"{prefix}-{i:03d}",
                "description": "", "unique_instance_crns": [], "entity_tag": "1-x", "locked": False,
                "crn": f"crn:v1:bluemix:public:iam-identity::a/{DEMO_ACCOUNT}::serviceid:{sid}",
                "created_at": now, "modified_at": now}
            ids.append(sid)
    return ids


def _seed_api_keys(fake: Any, iam_id: str, n: int) -> None:
    """``n`` other keys of ``iam_id``, listed before the keys it already has (so those are on a later page)."""
    S = fake.state
    with S.lock:
        existing = dict(S.api_keys)
        S.api_keys.clear()
        for i in range(n):
            kid = f"ApiKey-{uuid.uuid4()}"
            S.api_keys[kid] = {
                "id": kid, "entity_tag": "1-x", "crn": f"crn:v1:bluemix:public:iam-identity::a/{DEMO_ACCOUNT}::"
                f"apikey:{kid}", "locked": False, "disabled": False, "created_at": iso(time.time()),
                "created_by": "iam-someone", "modified_at": iso(time.time()), "name": f"other-key-{i:03d}",
                "description": "", "iam_id": iam_id, "account_id": DEMO_ACCOUNT, "apikey": uuid.uuid4().hex,
                "store_value": False}
        S.api_keys.update(existing)


def _seed_policies(fake: Any, n: int) -> None:
    S = fake.state
    with S.lock:
        for i in range(n):
            pid = str(uuid.uuid4())
            S.policies[pid] = {
                "id": pid, "type": "access", "description": f"someone else's policy {i}", "state": "active",
                "subjects": [{"attributes": [{"name": "iam_id", "value": f"iam-other-{i}"}]}],
                "roles": [{"role_id": "crn:v1:bluemix:public:iam::::serviceRole:Reader"}],
                "resources": [{"attributes": [{"name": "accountId", "value": DEMO_ACCOUNT}]}],
                "href": f"/v1/policies/{pid}", "created_at": iso(time.time())}
            S.policy_accounts[pid] = DEMO_ACCOUNT


def _ours(fake: Any, iid: str) -> dict[str, list[dict[str, Any]]]:
    """The fake's IAM objects and DR Automation instances that belong to broker instance ``iid``."""
    from broker.orchestrators.ibmcloud.naming import Names

    state = FakeAdmin(fake.url).state()
    prefix = Names(iid).tag + "-"
    live_ri = [r for r in state["resource_instances"] if r["name"].startswith(Names(iid).tag)
               and r["state"] not in ("pending_reclamation", "removed", "pending_removal")]
    return {"service_ids": [s for s in state["service_ids"] if s["name"].startswith(prefix)],
            "policies": [p for p in state["policies"] if str(p["description"]).startswith(prefix)],
            "api_keys": [k for k in state["api_keys"] if k["name"].startswith(prefix)],
            "resource_instances": live_ri, "deployments": state["deployments"]}


# 6. paging ---------------------------------------------------------------------------------------------
def test_the_fake_pages_service_ids_api_keys_and_policies_as_iam_does(fake: Any) -> None:
    h = _token(fake)
    _seed_service_ids(fake, 45)
    r = requests.get(f"{fake.url}/v1/serviceids/", params={"account_id": DEMO_ACCOUNT}, headers=h, timeout=10)
    page = r.json()
    assert len(page["serviceids"]) == 20 and "pagetoken=" in page["next"]  # IAM's default page: 20
    seen = [s["id"] for s in page["serviceids"]]
    while page.get("next"):
        page = requests.get(page["next"], headers=h, timeout=10).json()
        seen += [s["id"] for s in page["serviceids"]]
    assert len(seen) == len(set(seen)) == 45
    _seed_api_keys(fake, "iam-ServiceId-x", 25)
    keys = requests.get(f"{fake.url}/v1/apikeys", params={"iam_id": "iam-ServiceId-x"}, headers=h, timeout=10).json()
    assert len(keys["apikeys"]) == 20 and keys["next"] and all(k["apikey"] == "" for k in keys["apikeys"])
    _seed_policies(fake, 120)
    pol = requests.get(f"{fake.url}/v1/policies", params={"account_id": DEMO_ACCOUNT}, headers=h, timeout=10).json()
    assert len(pol["policies"]) == 50 and pol["next"]["start"]  # IAM policies' default limit: 50
    pol2 = requests.get(f"{fake.url}/v1/policies", params={"account_id": DEMO_ACCOUNT, "limit": 100,
                                                           "start": pol["next"]["start"]}, headers=h, timeout=10).json()
    assert len(pol2["policies"]) == 70 and "next" not in pol2
    assert _my_violations(fake) == []


def test_bind_unbind_and_deprovision_find_the_brokers_iam_objects_beyond_the_first_page(ibm: Ibm) -> None:
    plan = "ksys-managed-byok"
    _seed_service_ids(ibm.fake, 130)
    _seed_policies(ibm.fake, 130)
    ibm.ready_plan("pg-1", plan)
    for bid in ("b1", "b2"):
        r = ibm.put(f"/v2/service_instances/pg-1/service_bindings/{bid}", {"service_id": SERVICE_ID,
                                                                          "plan_id": ibm.pid(plan)})
        assert r.status_code == 201, r.get_data(as_text=True)
    ours = _ours(ibm.fake, "pg-1")
    # each binding: a policy per workspace and Reader on the root key
    assert len(ours["service_ids"]) == 2 and len(ours["policies"]) == 6 and len(ours["api_keys"]) == 2
    # many other keys on b1's service ID: the broker's own key is on a later page of that ID's keys
    from broker.orchestrators.ibmcloud.naming import Names

    names = Names("pg-1")
    b1 = next(s for s in ibm.fake.state.service_ids.values() if s["name"] == names.binding("b1"))
    (b1_key,) = [k["id"] for k in ibm.fake.state.api_keys.values() if k["name"] == names.binding_key("b1")]
    _seed_api_keys(ibm.fake, b1["iam_id"], 130)
    assert ibm.unbind("pg-1", "b1", plan=ibm.pid(plan)).status_code == 200
    assert _exchanges(ibm.fake, "DELETE", f"/v1/apikeys/{b1_key}")  # found on page 2 and revoked
    after = _ours(ibm.fake, "pg-1")
    assert len(after["policies"]) == 3, after["policies"]  # b1's policies revoked although on a later page
    assert len(after["service_ids"]) == 1
    # deprovision with b2 still bound: every IAM object of the instance goes, wherever it is listed
    r = ibm.delete(f"/v2/service_instances/pg-1?service_id={SERVICE_ID}&plan_id={ibm.pid(plan)}"
                   "&accepts_incomplete=true")
    assert r.status_code == 202, r.get_data(as_text=True)
    assert ibm.wait("pg-1", timeout=60)["state"] == "succeeded"
    left = _ours(ibm.fake, "pg-1")
    assert left["service_ids"] == [] and left["policies"] == [] and left["api_keys"] == [], left
    assert len(ibm.fake.state.service_ids) == 130 and len(ibm.fake.state.policies) == 130
    assert _my_violations(ibm.fake) == []


# 7. resource instance states ---------------------------------------------------------------------------
def test_a_deleted_resource_instance_waits_in_reclamation(fake: Any) -> None:
    h = _token(fake)
    from broker.fakecloud.state import DRA_PLAN_ID

    r = requests.post(f"{fake.url}/v2/resource_instances", headers=h, timeout=10, json={
        "name": "drb-x-orchestrator", "target": "global", "resource_group": "default",
        "resource_plan_id": DRA_PLAN_ID})
    assert r.status_code == 201, r.text
    guid = r.json()["guid"]
    assert requests.delete(f"{fake.url}/v2/resource_instances/{guid}", headers=h, timeout=10).status_code == 202
    time.sleep(FAST_STEP * 4)
    got = requests.get(f"{fake.url}/v2/resource_instances/{guid}", headers=h, timeout=10).json()
    assert got["state"] == "pending_reclamation" and got["scheduled_reclaim_at"], got
    listed = requests.get(f"{fake.url}/v2/resource_instances", params={"name": "drb-x-orchestrator"}, headers=h,
                          timeout=10).json()
    assert listed["resources"] == [] and listed["next_url"] == ""  # by default only active and provisioning
    reclaiming = requests.get(f"{fake.url}/v2/resource_instances", headers=h, timeout=10,
                              params={"name": "drb-x-orchestrator", "state": "pending_reclamation"}).json()
    assert [i["guid"] for i in reclaiming["resources"]] == [guid]
    assert requests.delete(f"{fake.url}/v2/resource_instances/{guid}", headers=h, timeout=10).status_code == 410
    assert _my_violations(fake) == []


def test_pending_reclamation_removed_and_pending_removal_are_gone() -> None:
    assert all(is_gone({"state": s}) for s in ("pending_reclamation", "removed", "pending_removal"))
    assert is_gone(None) and not any(is_gone({"state": s}) for s in (
        "active", "inactive", "failed", "provisioning", "pre_provisioning"))


def test_deprovision_ends_at_reclamation_and_a_reprovision_gets_a_new_orchestrator(ibm: Ibm) -> None:
    plan = "ksys-managed"
    ibm.ready_plan("rc-1", plan)
    began = time.monotonic()
    r = ibm.delete(f"/v2/service_instances/rc-1?service_id={SERVICE_ID}&plan_id={ibm.pid(plan)}"
                   "&accepts_incomplete=true")
    assert r.status_code == 202
    result = ibm.wait("rc-1", timeout=60)
    assert result["state"] == "succeeded", result
    # the removal ends at pending_reclamation: no waiting out DRBROKER_IBMCLOUD_WAIT_SECONDS (20) for "removed"
    assert time.monotonic() - began < 10
    states = [i["state"] for i in ibm.admin.state()["resource_instances"]]
    assert states == ["pending_reclamation"]
    assert ibm.runtime.orchestrator.inventory("rc-1", params_for(plan)) == []
    ibm.ready_plan("rc-1", plan)
    states = sorted(i["state"] for i in ibm.admin.state()["resource_instances"])
    assert states == ["active", "pending_reclamation"]  # a new one: the reclaiming one is not reused
    assert _my_violations(ibm.fake) == []


# 8. us-east / us-south CRNs ----------------------------------------------------------------------------
US_SOUTH, US_EAST = workspace_crn("dal13"), workspace_crn("wdc04")


def test_us_south_and_us_east_crns_are_the_dal13_wdc04_pair() -> None:
    assert ":power-iaas:us-south:" in US_SOUTH and ":power-iaas:us-east:" in US_EAST
    south, east = parse_workspace_crn(US_SOUTH), parse_workspace_crn(US_EAST)
    assert south and east
    assert (south.zone, south.region, east.zone, east.region) == ("dal13", "us-south", "wdc04", "us-east")
    assert Endpoints().url("powervs", east.region) == "https://us-east.power-iaas.cloud.ibm.com"


def _us_params(plan: str, secondary: str = US_EAST) -> dict[str, Any]:
    return {**params_for(plan), "primary_workspace_crn": US_SOUTH, "secondary_workspace_crn": secondary}


def test_a_us_south_us_east_provision_is_a_grs_pair_on_the_simulated_backend(dr: DR) -> None:
    dr.ready_plan("us-1", "ksys-managed", _us_params("ksys-managed"))
    r = dr.provision_plan("us-2", "ksys-managed", _us_params("ksys-managed", workspace_crn("wdc07")))
    assert r.status_code == 400
    assert "us-south (dal13)" in r.json["description"] and "wdc07" in r.json["description"]


def test_the_ibmcloud_backend_maps_us_east_to_wdc04(ibm: Ibm) -> None:
    ibm.ready_plan("us-3", "ksys-managed", _us_params("ksys-managed"))
    (deploy,) = _exchanges(ibm.fake, "POST", "/drautomation/v1/manage_dr/")
    assert deploy["request"]["location_id"] == "wdc04" and deploy["request"]["region_id"] == "us-east"
    r = ibm.put("/v2/service_instances/us-3/service_bindings/b1", {"service_id": SERVICE_ID,
                                                                  "plan_id": ibm.pid("ksys-managed")})
    assert r.status_code == 201, r.get_data(as_text=True)
    rep = r.json["credentials"]["replication"]
    assert (rep["primary"]["zone"], rep["secondary"]["zone"]) == ("dal13", "wdc04")
    assert _my_violations(ibm.fake) == []


# 14. the orchestrator deployment ------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "field"), [
    ({"ssh_key_name": None}, "needs ssh_key_name, or secret and secret_group"),
    ({"network_ids": None}, "'network_ids' is a required property"),
    ({"password": "lowercase-only-1"}, "parameters.orchestrator.password: invalid value"),
    ({"password": "NoDigitsHere"}, "at least one upper-case letter, one lower-case letter and one digit"),
])
def test_the_orchestrator_parameters_dr_automation_needs(dr: DR, change: dict[str, Any], field: str) -> None:
    orch = {k: v for k, v in {**ORCH, **change}.items() if v is not None}
    r = dr.provision_plan("o-1", "ksys-managed", {**params_for("ksys-managed"), "orchestrator": orch})
    assert r.status_code == 400, r.get_data(as_text=True)
    assert field in r.json["description"]
    assert str(change.get("password") or "\0") not in r.json["description"]


def test_ha_plans_need_the_standby_networks_and_a_secret_may_replace_the_ssh_key(dr: DR) -> None:
    orch = {k: v for k, v in ORCH.items() if k != "standby_network_ids"}
    r = dr.provision_plan("o-2", "ksys-managed-ha", {**params_for("ksys-managed-ha"), "orchestrator": orch})
    assert r.status_code == 400 and "standby_network_ids" in r.json["description"]
    secret = {**{k: v for k, v in ORCH.items() if k != "ssh_key_name"}, "secret": "ksys-ssh", "secret_group": "dr"}
    dr.ready_plan("o-3", "ksys-managed-ha", {**params_for("ksys-managed-ha"), "orchestrator": secret})
    from broker.orchestrators.simulated.cloud import SimulatedCloud

    cloud = SimulatedCloud(dr.runtime.store.engine)
    primary, standby = cloud.get("orchestrator", "o-3"), cloud.get("standby_orchestrator", "o-3")
    assert primary and standby
    assert primary.data["secret"] == "ksys-ssh" and primary.data["network_ids"] == ORCH["network_ids"]
    assert standby.data["network_ids"] == ORCH["standby_network_ids"]


def test_the_manage_dr_body_carries_the_key_and_networks_and_the_deployment_takes_35_steps(ibm: Ibm) -> None:
    start = time.time()
    ibm.ready_plan("o-4", "ksys-managed-ha")
    (deploy,) = _exchanges(ibm.fake, "POST", "/drautomation/v1/manage_dr/")
    body = deploy["request"]
    assert body["ssh_key_name"] == ORCH["ssh_key_name"] and body["standby_ssh_key_name"] == ORCH["ssh_key_name"]
    assert body["orchestrator_network_ids"] == ORCH["network_ids"]
    assert body["standby_orchestrator_network_ids"] == ORCH["standby_network_ids"]
    op = load().match("POST", deploy["path"])
    assert op is not None and set(body) <= set(op.body["properties"])  # only the SDK's field names
    assert time.time() - start >= DRA_DEPLOY_STEPS * FAST_STEP
    progress = {e["response"]["primary_description"] for e in _exchanges(ibm.fake, "GET", "/last_operation/")}
    assert any(p.endswith("/35: installing KSYS") for p in progress), progress
    assert ibm.runtime.orchestrator.expected_seconds("deploy_orchestrator") == 2100.0
    assert _my_violations(ibm.fake) == []


@pytest.mark.parametrize(("drop", "field", "message"), [
    ("ssh_key_name", None, "ssh_key_name, or secret and secret_group"),
    ("orchestrator_network_ids", None, "orchestrator_network_ids"),
    ("standby_orchestrator_network_ids", None, "standby_orchestrator_network_ids"),
    (None, ("orchestrator_password", "alllowercase1"), "orchestrator_password"),
])
def test_the_fake_refuses_a_deployment_without_what_dr_automation_needs(fake: Any, drop: str | None,
                                                                        field: tuple[str, str] | None,
                                                                        message: str) -> None:
    h = _token(fake)
    from broker.fakecloud.state import DRA_PLAN_ID

    guid = requests.post(f"{fake.url}/v2/resource_instances", headers=h, timeout=10, json={
        "name": "drb-y", "target": "global", "resource_group": "default",
        "resource_plan_id": DRA_PLAN_ID}).json()["guid"]
    secondary, primary = (parse_workspace_crn(workspace_crn(z)) for z in ("wdc07", "dal10"))
    assert secondary and primary
    body = {"location_id": "wdc07", "machine_type": "s922", "orchestrator_location_type": "off-premises",
            "orchestrator_name": "ksys", "orchestrator_password": "Good-Passw0rd",
            "orchestrator_workspace_id": secondary.guid, "ssh_key_name": "k", "orchestrator_network_ids": ["n1"],
            "orchestrator_ha": True, "standby_orchestrator_name": "ksys-standby",
            "standby_orchestrator_workspace_id": primary.guid, "standby_orchestrator_network_ids": ["n2"]}
    if drop:
        body.pop(drop)
    if field:
        body[field[0]] = field[1]
    r = requests.post(f"{fake.url}/drautomation/v1/manage_dr/{guid}", params={"accepts_incomplete": "true"},
                      headers=h, json=body, timeout=10)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["status_code"] == 400 and err["trace"] and message in err["errors"][0]["message"], err


# lost answers ------------------------------------------------------------------------------------------
CREATES = {
    "service_id": ("ksys-managed-byok", r"^/v1/serviceids/$"),
    "api_key": ("ksys-managed-byok", r"^/v1/apikeys$"),
    "policy": ("ksys-managed-byok", r"^/v1/policies$"),
    "dra_instance": ("ksys-managed", r"^/v2/resource_instances$"),
    "deployment": ("ksys-managed", r"^/drautomation/v1/manage_dr/"),
}


@pytest.mark.parametrize("mode", ["drop", "503"])
@pytest.mark.parametrize("create", list(CREATES))
def test_a_lost_create_answer_is_found_on_the_retry(ibm: Ibm, create: str, mode: str) -> None:
    plan, path = CREATES[create]
    iid = f"lost-{create.replace('_', '-')}"
    lose = {"drop": True} if mode == "drop" else {"status": 503}
    if create in ("dra_instance", "deployment"):
        ibm.admin.fault(method="POST", path=path, after=True, **lose)
        ibm.ready_plan(iid, plan)
        ours = _ours(ibm.fake, iid)
        assert len(ours["resource_instances"]) == 1, ours["resource_instances"]
        assert len(ibm.fake.state.deployments) == 1
        sent = [e for e in _exchanges(ibm.fake, "POST", "/") if re.search(path, e["path"])]
        assert len(sent) == 1  # the retry found what the lost call made
    else:
        ibm.ready_plan(iid, plan)
        ibm.admin.fault(method="POST", path=path, after=True, **lose)
        r = ibm.put(f"/v2/service_instances/{iid}/service_bindings/b1", {"service_id": SERVICE_ID,
                                                                        "plan_id": ibm.pid(plan)})
        assert r.status_code in (201, 202), r.get_data(as_text=True)
        if r.status_code == 202:
            assert ibm.wait(iid, timeout=60)["state"] == "succeeded"
        ours = _ours(ibm.fake, iid)
        # the binding's policies: one per workspace, Reader on the root key
        assert len(ours["service_ids"]) == 1 and len(ours["policies"]) == 3 and len(ours["api_keys"]) == 1, ours
        assert ibm.admin.faults()[0]["hits"] == 1
        assert ibm.unbind(iid, "b1", plan=ibm.pid(plan)).status_code == 200
        ours = _ours(ibm.fake, iid)
        assert ours["service_ids"] == [] and ours["policies"] == [] and ours["api_keys"] == [], ours
    assert ibm.admin.faults()[0]["hits"] == 1
    r = ibm.delete(f"/v2/service_instances/{iid}?service_id={SERVICE_ID}&plan_id={ibm.pid(plan)}"
                   "&accepts_incomplete=true")
    assert r.status_code == 202
    assert ibm.wait(iid, timeout=60)["state"] == "succeeded"
    left = _ours(ibm.fake, iid)
    assert not any(left[k] for k in ("service_ids", "policies", "api_keys", "resource_instances", "deployments"))
    assert _my_violations(ibm.fake) == []
