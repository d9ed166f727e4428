"""Every plan's lifecycle, plan transitions, key binding and fault handling on the simulated cloud."""

from __future__ import annotations

import pytest

from broker.orchestrators.simulated.keyprotect import SimKeyProtect
from tests.conftest import SERVICE_ID
from tests.services.conftest import DR, ENCRYPTION, PLAN_NAMES


@pytest.mark.parametrize("name", PLAN_NAMES)
def test_every_plan_provisions_binds_unbinds_and_deprovisions_leaving_nothing(dr: DR, name: str) -> None:
    iid = f"life-{name}"
    dr.ready_plan(iid, name)
    kinds = {r.kind for r in dr.inventory(iid)}
    assert {"dr_policy", "volume_group", "auxiliary_volume_group", "auxiliary_volume"} <= kinds
    assert ("orchestrator" in kinds) == (name != "grs-async")
    assert ("standby_orchestrator" in kinds) == (name in ("ksys-managed-ha", "ksys-managed-byok"))
    assert ({"key_ring", "root_key"} <= kinds) == name.endswith("byok")

    r = dr.bind(iid, "b-1", dr.pid(name))
    assert r.status_code == 201, r.get_data(as_text=True)
    creds = r.json["credentials"]
    assert creds["replication"]["primary"]["volume_group_id"]
    assert creds["replication"]["consistency_group_name"].startswith("rccg-")
    assert creds["iam"]["apikey"] and creds["iam"]["serviceid_crn"]
    assert ("orchestrator" in creds) == (name != "grs-async")
    assert ("kms" in creds) == name.endswith("byok")
    assert "ibmcloud_api_key" not in str(creds)

    assert dr.unbind(iid, "b-1", dr.pid(name)).status_code == 200
    assert not [r for r in dr.inventory(iid) if r.binding_id]

    assert dr.deprovision(iid, dr.pid(name)).status_code == 202
    assert dr.wait(iid)["state"] == "succeeded"
    assert dr.inventory(iid) == []


def test_deprovision_restores_the_customers_volumes(dr: DR) -> None:
    from broker.orchestrators.simulated.cloud import SEED_OWNER, SimulatedCloud
    from tests.conftest import PRIMARY

    cloud = SimulatedCloud(dr.runtime.store.engine)
    dr.ready_plan("vols", "grs-async")
    vol = cloud.get("volume", SEED_OWNER, None, part=f"{PRIMARY}/vol-app-data-1")
    assert vol.data["replication_enabled"] is True and vol.data["group"]
    dr.deprovision("vols")
    assert dr.wait("vols")["state"] == "succeeded"
    vol = cloud.get("volume", SEED_OWNER, None, part=f"{PRIMARY}/vol-app-data-1")
    assert vol.data["replication_enabled"] is False and vol.data["group"] is None


def test_byok_binding_returns_a_wrapped_data_key_that_unwraps_only_with_its_aad(dr: DR) -> None:
    dr.ready_plan("byok-1", "ksys-managed-byok")
    r = dr.bind("byok-1", "app-7", dr.pid("ksys-managed-byok"))
    assert r.status_code == 201, r.get_data(as_text=True)
    kms = r.json["credentials"]["kms"]
    assert kms["aad"] == ["byok-1", "app-7"]
    assert "plaintext" not in str(kms).lower()
    kp = SimKeyProtect(dr.runtime.orchestrator.cloud)
    key = next(r for r in dr.inventory("byok-1") if r.kind == "root_key")
    dek = kp.unwrap(key.id, kms["wrapped_dek"], ["byok-1", "app-7"])
    assert len(dek) == 32
    from broker.domain.errors import PermanentBackendError

    with pytest.raises(PermanentBackendError, match="wrong AAD"):
        kp.unwrap(key.id, kms["wrapped_dek"], ["byok-1", "another-binding"])
    policy = next(r for r in dr.inventory("byok-1") if r.kind == "key_policy")
    assert policy.data["role"].endswith("serviceRole:Reader")
    assert policy.data["resource"]["resource"] == key.id
    assert dr.unbind("byok-1", "app-7", dr.pid("ksys-managed-byok")).status_code == 200
    assert not [r for r in dr.inventory("byok-1") if r.kind == "key_policy"]


def test_bind_with_callers_serviceid_creates_no_service_id_or_key(dr: DR) -> None:
    dr.ready_plan("sid-1", "grs-async")
    crn = "crn:v1:bluemix:public:iam-identity::a/0123456789abcdef0123456789abcdef::serviceid:ServiceId-1234"
    r = dr.bind("sid-1", "b", dr.pid("grs-async"), bind_resource={"serviceid_crn": crn})
    assert r.status_code == 201
    assert r.json["credentials"]["iam"] == {"serviceid_crn": crn}
    assert not [x for x in dr.inventory("sid-1") if x.kind in ("service_id", "api_key")]


def test_api_key_is_kept_only_as_a_hash(dr: DR) -> None:
    dr.ready_plan("hash-1", "grs-async")
    apikey = dr.bind("hash-1", "b", dr.pid("grs-async")).json["credentials"]["iam"]["apikey"]
    stored = next(x for x in dr.inventory("hash-1") if x.kind == "api_key")
    assert apikey not in str(stored.data)
    import hashlib

    assert stored.data["sha256"] == hashlib.sha256(apikey.encode()).hexdigest()


def _change_plan(dr: DR, iid: str, name: str):
    return dr.patch(f"/v2/service_instances/{iid}?accepts_incomplete=true",
                    {"service_id": SERVICE_ID, "plan_id": dr.pid(name)})


def test_plan_change_ksys_managed_to_ha_adds_a_standby_and_back_removes_it(dr: DR) -> None:
    dr.ready_plan("pc-1", "ksys-managed")
    assert _change_plan(dr, "pc-1", "ksys-managed-ha").status_code == 202
    assert dr.wait("pc-1")["state"] == "succeeded"
    assert dr.get("/v2/service_instances/pc-1").json["plan_id"] == dr.pid("ksys-managed-ha")
    assert "standby_orchestrator" in {r.kind for r in dr.inventory("pc-1")}
    assert _change_plan(dr, "pc-1", "ksys-managed").status_code == 202
    assert dr.wait("pc-1")["state"] == "succeeded"
    assert "standby_orchestrator" not in {r.kind for r in dr.inventory("pc-1")}


def test_plan_change_to_byok_needs_the_encryption_section(dr: DR) -> None:
    dr.ready_plan("pc-2", "ksys-managed")
    r = dr.patch("/v2/service_instances/pc-2?accepts_incomplete=true",
                 {"service_id": SERVICE_ID, "plan_id": dr.pid("ksys-managed-byok"),
                  "parameters": {"rpo_target_minutes": 20}})
    assert r.status_code == 400, r.get_data(as_text=True)
    assert "encryption" in r.json["description"]
    assert dr.get("/v2/service_instances/pc-2").json["plan_id"] == dr.pid("ksys-managed")


@pytest.mark.parametrize("source", ["ksys-managed", "ksys-managed-ha"])
def test_plan_change_to_byok_creates_keys_and_a_standby(dr: DR, source: str) -> None:
    iid = f"pc-byok-{source}"
    dr.ready_plan(iid, source)
    r = dr.patch(f"/v2/service_instances/{iid}?accepts_incomplete=true",
                 {"service_id": SERVICE_ID, "plan_id": dr.pid("ksys-managed-byok"),
                  "parameters": {"encryption": ENCRYPTION}})
    assert r.status_code == 202, r.get_data(as_text=True)
    assert dr.wait(iid)["state"] == "succeeded"
    kinds = {x.kind for x in dr.inventory(iid)}
    assert {"key_ring", "root_key", "standby_orchestrator"} <= kinds
    assert dr.bind(iid, "b", dr.pid("ksys-managed-byok")).json["credentials"]["kms"]["wrapped_dek"]


@pytest.mark.parametrize(("source", "target"), [
    ("ksys-managed-byok", "ksys-managed"),
    ("grs-async", "ksys-managed"),
    ("rehearsal-only", "ksys-managed"),
    ("ksys-managed", "grs-async"),
    ("ksys-managed-ha", "rehearsal-only"),
])
def test_disallowed_plan_changes_are_refused_with_422(dr: DR, source: str, target: str) -> None:
    iid = f"pc-no-{source}-{target}"
    dr.ready_plan(iid, source)
    r = _change_plan(dr, iid, target)
    assert r.status_code == 422, r.get_data(as_text=True)
    assert "plan_id" in r.json["description"]
    assert dr.get(f"/v2/service_instances/{iid}").json["plan_id"] == dr.pid(source)


def test_parameter_update_adds_and_removes_volumes(dr: DR) -> None:
    dr.ready_plan("upd-1", "grs-async")
    r = dr.patch("/v2/service_instances/upd-1?accepts_incomplete=true",
                 {"service_id": SERVICE_ID, "parameters": {"protected_volumes": ["vol-app-data-1", "vol-db-1"],
                                                           "rpo_target_minutes": 30}})
    assert r.status_code == 202, r.get_data(as_text=True)
    assert dr.wait("upd-1")["state"] == "succeeded"
    aux = sorted(x.data["master_volume"] for x in dr.inventory("upd-1") if x.kind == "auxiliary_volume")
    assert aux == ["vol-app-data-1", "vol-db-1"]
    body = dr.get("/v2/service_instances/upd-1").json
    assert body["parameters"]["rpo_target_minutes"] == 30
    assert body["metadata"]["attributes"]["rpo_target_seconds"] == 1800


def test_injected_transient_faults_succeed_after_retries(tmp_path) -> None:
    from broker.app import build_runtime, create_app
    from tests.conftest import make_settings
    from tests.services.conftest import DR, QUICK_RETRY

    rt = build_runtime(make_settings(tmp_path, sim_faults="create_replication_group=transient:3,"
                                                          "deploy_orchestrator=throttle:2"))
    rt.engine.retry = QUICK_RETRY
    rt.worker.start()
    try:
        dr = DR(create_app(runtime=rt).test_client(), rt)
        r = dr.provision_plan("tf-1", "ksys-managed")
        assert r.status_code == 202, r.get_data(as_text=True)
        assert dr.wait("tf-1")["state"] == "succeeded"
    finally:
        rt.worker.stop(10)
    with rt.store.read() as tx:
        steps = {s.name: s for s in tx.steps(r.json["operation"])}
    # three injected 503s then success: 4 tries; two 429s then success: 3 tries; every other step once
    assert steps["create_replication_group"].attempts == 4
    assert steps["create_replication_group"].error == \
        "create_replication_group: 503 Service Unavailable (injected, call 3)"
    assert steps["deploy_orchestrator"].attempts == 3
    assert steps["deploy_orchestrator"].error == "deploy_orchestrator: 429 Too Many Requests (injected, call 2)"
    assert {name: s.attempts for name, s in steps.items()
            if name not in ("create_replication_group", "deploy_orchestrator")} == \
        {name: 1 for name in steps if name not in ("create_replication_group", "deploy_orchestrator")}
    assert all(s.state == "done" for s in steps.values())


@pytest.mark.parametrize("fault", ["enable_replication", "deploy_orchestrator", "create_root_key", "discover"])
def test_injected_permanent_fault_fails_with_description_and_leaves_nothing(tmp_path, fault: str) -> None:
    from broker.app import build_runtime, create_app
    from tests.conftest import make_settings
    from tests.services.conftest import DR

    rt = build_runtime(make_settings(tmp_path, sim_faults=f"{fault}=fail"))
    rt.worker.start()
    try:
        dr = DR(create_app(runtime=rt).test_client(), rt)
        assert dr.provision_plan("pf-1", "ksys-managed-byok").status_code == 202
        result = dr.wait("pf-1")
        assert result["state"] == "failed"
        assert f"{fault} failed (injected permanent fault)" in result["description"]
        assert "cleaned up" in result["description"]
        assert dr.inventory("pf-1") == []
        # the platform's orphan mitigation: a DELETE cleans up and then the instance is gone
        assert dr.deprovision("pf-1", dr.pid("ksys-managed-byok")).status_code == 202
        assert dr.wait("pf-1")["state"] == "succeeded"
        assert dr.deprovision("pf-1", dr.pid("ksys-managed-byok")).status_code == 410
    finally:
        rt.worker.stop(10)


def test_bind_fault_in_wrap_key_fails_the_bind_and_revokes_what_it_made(tmp_path) -> None:
    from broker.app import build_runtime, create_app
    from tests.conftest import make_settings
    from tests.services.conftest import DR

    rt = build_runtime(make_settings(tmp_path, sim_faults="wrap_key=fail"))
    rt.worker.start()
    try:
        dr = DR(create_app(runtime=rt).test_client(), rt)
        dr.ready_plan("wk-1", "ksys-managed-byok")
        r = dr.bind("wk-1", "b", dr.pid("ksys-managed-byok"))
        assert r.status_code == 502
        assert "wrap_key failed" in r.json["description"]
        assert not [x for x in dr.inventory("wk-1") if x.binding_id]
    finally:
        rt.worker.stop(10)


def test_sim_inventory_command_lists_owned_resources(dr: DR, monkeypatch) -> None:
    import json

    from click.testing import CliRunner

    from broker.cli import main

    dr.ready_plan("inv-1", "grs-async")
    monkeypatch.setenv("DRBROKER_DATABASE_URL", str(dr.runtime.store.engine.url))
    out = CliRunner().invoke(main, ["sim", "inventory", "--json"])
    assert out.exit_code == 0, out.output
    items = json.loads(out.output)
    assert {i["instance_id"] for i in items} == {"inv-1"}
    assert {"volume_group", "auxiliary_volume_group", "dr_policy"} <= {i["kind"] for i in items}
