"""Every promise about the instance's root key kept, through the OSB API on both backends:

- the simulated Key Protect rotates root keys at their policy interval (a periodic job), once per interval;
  new bindings get the new key version, data keys wrapped before still unwrap;
- ``encryption`` in an update is applied fully or refused before any operation is accepted:
  ``rotation_interval_months`` and enabling ``dual_auth_delete`` are applied to the key's policy;
  removing a dual-authorisation policy (Key Protect cannot) and changing ``key_ring_id`` are 422;
- deprovisioning never deletes a key ring the broker did not create (ibmcloud, against the fake).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from broker.app import Runtime, build_runtime, create_app
from broker.fakecloud.state import DEMO_KMS_INSTANCE_ID
from broker.orchestrators.ibmcloud.naming import Names
from broker.orchestrators.simulated.cloud import SimulatedCloud
from tests.conftest import SERVICE_ID, make_settings
from tests.e2e.conftest import wait_until
from tests.ibmfake import FakeAdmin, fake_cloud, ibmcloud_env
from tests.services.conftest import DR, params_for

PLAN = "ksys-managed-byok"
MONTH = 100.0  # seconds in a simulated month


def _start(tmp_path: Path, made: list[Runtime], **overrides: Any) -> DR:
    rt = build_runtime(make_settings(tmp_path, **overrides))
    made.append(rt)
    rt.worker.start()
    return DR(create_app(runtime=rt).test_client(), rt)


@pytest.fixture
def sim(tmp_path: Path, made: list[Runtime]) -> DR:
    return _start(tmp_path, made, sim_month_seconds=MONTH)


def _key(dr: DR, iid: str) -> Any:
    return SimulatedCloud(dr.runtime.store.engine).get("root_key", iid)


def _update(dr: DR, iid: str, encryption: dict[str, Any]) -> Any:
    return dr.patch(f"/v2/service_instances/{iid}?accepts_incomplete=true",
                    {"service_id": SERVICE_ID, "parameters": {"encryption": encryption}})


def _refused(r: Any, field: str) -> str:
    assert r.status_code == 422, r.get_data(as_text=True)
    body = r.json
    assert set(body) >= {"error", "description"}, body
    assert f"parameters.encryption.{field}" in body["description"], body
    return str(body["description"])


# rotation on the simulated Key Protect ------------------------------------------------------------------
def test_simulated_root_keys_rotate_once_per_interval_and_old_data_keys_still_unwrap(sim: DR) -> None:
    params = params_for(PLAN)
    params["encryption"] = {**params["encryption"], "rotation_interval_months": 1}
    sim.ready_plan("rot-1", PLAN, params)
    first = sim.bind("rot-1", "b1", sim.pid(PLAN)).json["credentials"]["kms"]
    job = sim.runtime.key_rotation
    start = _key(sim, "rot-1").data["versions"][-1]["created"]

    def at(offset: float) -> int:
        job.clock = lambda: start + offset
        return int(job.run_once())

    assert at(MONTH * 0.5) == 0
    assert len(_key(sim, "rot-1").data["versions"]) == 1
    assert at(MONTH * 1.01) == 1
    assert at(MONTH * 1.02) == 0 and at(MONTH * 1.9) == 0  # once per interval, not more
    assert len(_key(sim, "rot-1").data["versions"]) == 2
    assert at(MONTH * 2.02) == 1
    key = _key(sim, "rot-1")
    assert len(key.data["versions"]) == 3
    second = sim.bind("rot-1", "b2", sim.pid(PLAN)).json["credentials"]["kms"]
    assert second["key_version_id"] == key.data["versions"][-1]["id"] != first["key_version_id"]
    kp = sim.runtime.orchestrator.kp
    assert len(kp.unwrap(key.id, first["wrapped_dek"], first["aad"])) == 32
    assert len(kp.unwrap(key.id, second["wrapped_dek"], second["aad"])) == 32


def test_the_rotation_job_runs_in_the_broker_at_the_simulated_month(tmp_path: Path, made: list[Runtime]) -> None:
    month = 0.5  # the job's rounds are 0.2 s apart (its shortest): a month is still a few rounds
    dr = _start(tmp_path, made, sim_month_seconds=month)
    params = params_for(PLAN)
    params["encryption"] = {**params["encryption"], "rotation_interval_months": 1}
    dr.ready_plan("rot-2", PLAN, params)
    dr.runtime.key_rotation.start()
    try:
        wait_until(lambda: len(_key(dr, "rot-2").data["versions"]) >= 3, 10, "two rotations a month apart")
    finally:
        dr.runtime.key_rotation.stop()
    created = [v["created"] for v in _key(dr, "rot-2").data["versions"]]
    assert all(b - a >= month for a, b in itertools.pairwise(created)), created


# encryption in an update: the simulated backend --------------------------------------------------------
def test_sim_update_applies_the_rotation_interval_to_the_key(sim: DR) -> None:
    sim.ready_plan("up-1", PLAN)
    assert _key(sim, "up-1").data["rotation_interval_months"] == 3
    r = _update(sim, "up-1", {"rotation_interval_months": 6})
    assert r.status_code == 202, r.get_data(as_text=True)
    assert sim.wait("up-1")["state"] == "succeeded"
    key = _key(sim, "up-1")
    assert key.data["rotation_interval_months"] == 6
    assert key.data["key_ring"] == "dr-test"  # the fields not sent keep their values
    with sim.runtime.store.read() as tx:
        inst = tx.get_instance("up-1")
    assert inst is not None and inst.parameters["encryption"] == \
        {"key_ring_id": "dr-test", "rotation_interval_months": 6, "dual_auth_delete": False}


def test_sim_update_enables_dual_authorisation_on_the_key(sim: DR) -> None:
    sim.ready_plan("up-2", PLAN)
    assert _key(sim, "up-2").data["dual_auth_delete"] is False
    r = _update(sim, "up-2", {"dual_auth_delete": True})
    assert r.status_code == 202, r.get_data(as_text=True)
    assert sim.wait("up-2")["state"] == "succeeded"
    assert _key(sim, "up-2").data["dual_auth_delete"] is True
    sim.deprovision("up-2", plan=sim.pid(PLAN))
    wait_until(lambda: "approve-deletion" in sim.get("/v2/service_instances/up-2/last_operation").json[
        "description"], 20, "the deprovision waits for a second approver")
    assert _key(sim, "up-2") is not None


def test_sim_update_refuses_to_remove_dual_authorisation(sim: DR) -> None:
    params = params_for(PLAN)
    params["encryption"] = {**params["encryption"], "dual_auth_delete": True}
    sim.ready_plan("up-3", PLAN, params)
    text = _refused(_update(sim, "up-3", {"dual_auth_delete": False}), "dual_auth_delete")
    assert "cannot be removed" in text, text
    assert _key(sim, "up-3").data["dual_auth_delete"] is True
    assert sim.get("/v2/service_instances/up-3/last_operation").json["state"] == "succeeded"  # no new operation


def test_sim_update_refuses_a_new_key_ring(sim: DR) -> None:
    sim.ready_plan("up-4", PLAN)
    text = _refused(_update(sim, "up-4", {"key_ring_id": "another-ring"}), "key_ring_id")
    assert "dr-test" in text and "another-ring" in text, text
    assert _key(sim, "up-4").data["key_ring"] == "dr-test"
    assert sim.deprovision("up-4", plan=sim.pid(PLAN)).status_code == 202
    assert sim.wait("up-4")["state"] == "succeeded"
    assert sim.inventory("up-4") == []


# encryption in an update: IBM Cloud (the fake) ----------------------------------------------------------
@pytest.fixture
def fake() -> Iterator[Any]:
    with fake_cloud() as server:
        yield server


@pytest.fixture
def ibm(tmp_path: Path, made: list[Runtime], fake: Any) -> DR:
    return _start(tmp_path, made, orchestrator="ibmcloud",
                  ibmcloud_env=ibmcloud_env(fake.url, DRBROKER_IBMCLOUD_APPROVAL_POLL_SECONDS="0.2"))


def _fake_key(fake: Any, iid: str) -> dict[str, Any]:
    (key,) = [k for k in fake.state.kms[DEMO_KMS_INSTANCE_ID]["keys"].values()
              if k["name"] == Names(iid).root_key and k["state"] != 5]
    return dict(key)


def _violations(fake: Any) -> list[str]:
    return [v["text"] for v in requests.get(f"{fake.url}/_fake/contract", timeout=30).json()["violations"]]


def test_ibm_update_applies_rotation_and_dual_authorisation_to_the_key(ibm: DR, fake: Any) -> None:
    ibm.ready_plan("iu-1", PLAN)
    assert _fake_key(fake, "iu-1")["dualAuthDelete"]["enabled"] is False
    r = _update(ibm, "iu-1", {"rotation_interval_months": 7, "dual_auth_delete": True})
    assert r.status_code == 202, r.get_data(as_text=True)
    assert ibm.wait("iu-1", timeout=30)["state"] == "succeeded"
    key = _fake_key(fake, "iu-1")
    assert key["rotation"]["interval_month"] == 7
    assert key["dualAuthDelete"]["enabled"] is True
    assert key["keyRingID"] == "dr-test"
    puts = [x for x in FakeAdmin(fake.url).requests() if x["method"] == "PUT" and x["path"].endswith("/policies")]
    assert len(puts) >= 2, puts
    assert _violations(fake) == []


def test_ibm_update_refuses_to_remove_dual_authorisation_and_a_new_key_ring(ibm: DR, fake: Any) -> None:
    params = params_for(PLAN)
    params["encryption"] = {**params["encryption"], "dual_auth_delete": True}
    ibm.ready_plan("iu-2", PLAN, params)
    _refused(_update(ibm, "iu-2", {"dual_auth_delete": False}), "dual_auth_delete")
    _refused(_update(ibm, "iu-2", {"key_ring_id": "another-ring"}), "key_ring_id")
    assert "another-ring" not in {r["id"] for r in FakeAdmin(fake.url).state()["key_rings"]}
    assert ibm.get("/v2/service_instances/iu-2/last_operation").json["state"] == "succeeded"


def _other_person_token(url: str) -> str:
    from tests.contracts.test_keyprotect import other_person

    return other_person(url)


def test_ibm_deprovision_keeps_a_key_ring_the_broker_did_not_create(ibm: DR, fake: Any) -> None:
    tok = _other_person_token(fake.url)
    r = requests.post(f"{fake.url}/api/v2/key_rings/customer-ring",
                      headers={"Authorization": f"Bearer {tok}", "Bluemix-Instance": DEMO_KMS_INSTANCE_ID}, timeout=10)
    assert r.status_code == 201, r.text
    params = params_for(PLAN)
    params["encryption"] = {**params["encryption"], "key_ring_id": "customer-ring"}
    ibm.ready_plan("iu-3", PLAN, params)
    assert _fake_key(fake, "iu-3")["keyRingID"] == "customer-ring"
    assert ibm.deprovision("iu-3", plan=ibm.pid(PLAN)).status_code == 202
    assert ibm.wait("iu-3", timeout=30)["state"] == "succeeded"
    state = FakeAdmin(fake.url).state()
    assert [k["state"] for k in state["keys"] if k["name"] == Names("iu-3").root_key] == [5]
    assert [ring["id"] for ring in state["key_rings"]] == ["customer-ring"]
    assert _violations(fake) == []


def test_ibm_deprovision_deletes_the_ring_it_created(ibm: DR, fake: Any) -> None:
    ibm.ready_plan("iu-4", PLAN)
    assert "dr-test" in {r["id"] for r in FakeAdmin(fake.url).state()["key_rings"]}
    assert ibm.deprovision("iu-4", plan=ibm.pid(PLAN)).status_code == 202
    assert ibm.wait("iu-4", timeout=30)["state"] == "succeeded"
    assert FakeAdmin(fake.url).state()["key_rings"] == []
