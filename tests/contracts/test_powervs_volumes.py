"""PowerVS volumes, onboarding, clones and VMs held to IBM's definitions (power-go-client, as generated into
``broker.fakecloud.contracts``): the fake's own behaviour over HTTP, and the ibmcloud backend through the real
app and worker against it, including answers lost after IBM acted (the retry must find, not duplicate).

Every expectation here comes from IBM's models and their documentation strings, never from our client:
``VolumeOnboardings.onboardings``, ``VolumeOnboardingCreate.Volumes``, ``VolumeOnboardingCreateResponse``
(``id``, ``description``), ``VolumesCloneAsyncRequest.name`` ("for multiple volume clone, the provided name will
be truncated to the first 20 characters"; clones named ``clone-<name>-<5 random digits>[-<n>]``;
``targetReplicationEnabled`` defaults to the source's replication) and the DELETE volume answers (200; 410 gone
while deleting; 404 unknown).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from broker.app import build_runtime, create_app
from broker.fakecloud.contracts import load
from broker.orchestrators.ibmcloud.naming import Names
from tests.conftest import GRS_PARAMS, PRIMARY, SECONDARY, make_settings
from tests.ibmfake import FAST_STEP, FakeAdmin, fake_cloud, ibmcloud_env
from tests.services.conftest import DR

# The operations of this area (the rest of PowerVS belongs to other tests).
MINE = {
    "pcloud.cloudinstances.volumes.getall", "pcloud.cloudinstances.volumes.get",
    "pcloud.cloudinstances.volumes.delete", "pcloud.cloudinstances.volumes.action.post",
    "pcloud.volume.onboarding.getall", "pcloud.volume.onboarding.post", "pcloud.volume.onboarding.get",
    "pcloud.v2.volumes.clone.post", "pcloud.v2.volumes.clonetasks.get",
    "pcloud.pvminstances.getall", "pcloud.pvminstances.get", "pcloud.pvminstances.action.post",
    "pcloud.pvminstances.post", "pcloud.pvminstances.delete", "pcloud.cloudinstances.jobs.get",
}


def _guid(crn: str) -> str:
    return crn.rstrip(":").rsplit(":", 1)[-1]


class Pvs:
    """Bare HTTP to the fake's PowerVS, as any client of IBM's API would send it (token + CRN header)."""

    def __init__(self, url: str) -> None:
        self.url = url
        r = requests.post(f"{url}/identity/token", data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey",
                                                         "apikey": "contract-test"}, timeout=10)
        assert r.status_code == 200, r.text
        self.token = r.json()["access_token"]

    def __call__(self, method: str, crn: str, sub: str, body: Any = None, version: str = "v1") -> requests.Response:
        return requests.request(method, f"{self.url}/pcloud/{version}/cloud-instances/{_guid(crn)}{sub}", json=body,
                                headers={"Authorization": f"Bearer {self.token}", "CRN": crn}, timeout=10)


def _violations(url: str, operations: set[str] = MINE) -> list[str]:
    summary = requests.get(f"{url}/_fake/contract", timeout=10).json()
    return [v["text"] for v in summary["violations"] if v["operation"] in operations]


def _exchanges(url: str, method: str, pattern: str) -> list[dict[str, Any]]:
    ex = requests.get(f"{url}/_fake/exchanges", timeout=30).json()["exchanges"]
    return [e for e in ex if e["method"] == method and re.search(pattern, e["path"])]


def _wait_for(probe: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(FAST_STEP / 2)
    raise AssertionError("timed out")


@pytest.fixture
def fake() -> Iterator[Any]:
    with fake_cloud() as server:
        yield server


@pytest.fixture
def pvs(fake: Any) -> Pvs:
    return Pvs(fake.url)


class IbmDR(DR):
    def __init__(self, client: Any, runtime: Any, fake: Any) -> None:
        super().__init__(client, runtime)
        self.fake = fake
        self.admin = FakeAdmin(fake.url)

    def outputs(self, op_id: str, step: str) -> dict[str, Any]:
        with self.runtime.store.read() as tx:
            return next(s for s in tx.steps(op_id) if s.name == step).outputs

    def act(self, iid: str, kind: str, mode: str | None = None) -> str:
        r = self.action(iid, kind, mode)
        assert r.status_code == 202, r.get_data(as_text=True)
        result = self.wait(iid, timeout=60)
        assert result["state"] == "succeeded", result
        return r.json["operation"]

    def volumes(self, crn: str) -> list[dict[str, Any]]:
        with self.fake.state.lock:
            return [dict(v) for v in self.fake.state.volumes[_guid(crn)].values()]


@pytest.fixture
def ibm(tmp_path: Path, fake: Any) -> Iterator[IbmDR]:
    rt = build_runtime(make_settings(tmp_path, orchestrator="ibmcloud", ibmcloud_env=ibmcloud_env(fake.url)))
    rt.worker.start()
    try:
        yield IbmDR(create_app(runtime=rt).test_client(), rt, fake)
    finally:
        rt.worker.stop(10)
        rt.store.engine.dispose()


def _replicate(pvs: Pvs, vol_id: str) -> str:
    """Enable replication on a primary volume; its auxiliary volume's name once PowerVS made it."""
    r = pvs("POST", PRIMARY, f"/volumes/{vol_id}/action", {"replicationEnabled": True})
    assert r.status_code == 202, r.text
    return _wait_for(lambda: pvs("GET", PRIMARY, f"/volumes/{vol_id}").json().get("auxVolumeName"))


# item 2 --------------------------------------------------------------------------------------------------------
def test_onboarding_list_answers_under_onboardings(fake: Any, pvs: Pvs) -> None:
    with fake.state.lock:  # an onboarding task as the fake keeps it, without going through the POST
        fake.state.onboardings[_guid(SECONDARY)]["t-1"] = {
            "id": "t-1", "description": "drb-abc", "status": "InProgress", "progress": 10, "inputVolumes": ["a"],
            "creationTimestamp": "2024-01-01T00:00:00.000Z", "results": {"onboardedVolumes": [],
                                                                         "volumeOnboardingFailures": []}}
    r = pvs("GET", SECONDARY, "/volumes/onboarding")
    assert r.status_code == 200
    assert [o["id"] for o in r.json()["onboardings"]] == ["t-1"]
    assert _violations(fake.url) == []


# item 3 --------------------------------------------------------------------------------------------------------
def test_onboarding_create_takes_Volumes_and_answers_id_and_description(fake: Any, pvs: Pvs) -> None:
    aux = _replicate(pvs, "vol-app-data-1")
    body = {"Volumes": [{"sourceCRN": PRIMARY, "auxiliaryVolumes": [{"auxVolumeName": aux, "name": "onb-1"}]}],
            "description": "contract-onboarding"}
    r = pvs("POST", SECONDARY, "/volumes/onboarding", body)
    assert r.status_code == 202, r.text
    assert set(r.json()) == {"id", "description"} and r.json()["description"] == "contract-onboarding"
    task_id = r.json()["id"]
    first = pvs("GET", SECONDARY, f"/volumes/onboarding/{task_id}").json()
    assert first["id"] == task_id and first["status"] not in ("Success", "Failure")
    done = _wait_for(lambda: (lambda t: t if t["status"] == "Success" else None)(
        pvs("GET", SECONDARY, f"/volumes/onboarding/{task_id}").json()))
    assert done["progress"] == 100 and len(done["results"]["onboardedVolumes"]) == 1
    names = [v["name"] for v in pvs("GET", SECONDARY, "/volumes").json()["volumes"]]
    assert "onb-1" in names
    assert _violations(fake.url) == []
    # the lower-case key is not IBM's: the model refuses a body without ``Volumes``
    assert pvs("POST", SECONDARY, "/volumes/onboarding", {"volumes": body["Volumes"]}).status_code == 400


def test_provision_onboards_with_IBMs_body_once(ibm: IbmDR) -> None:
    ibm.ready_plan("c-onb", "grs-async")
    posts = _exchanges(ibm.fake.url, "POST", r"/volumes/onboarding$")
    assert len(posts) == 1 and set(posts[0]["request"]) == {"Volumes", "description"}
    assert {a["name"] for a in posts[0]["request"]["Volumes"][0]["auxiliaryVolumes"]} == {
        Names("c-onb").aux_volume(v) for v in GRS_PARAMS["protected_volumes"]}
    assert _violations(ibm.fake.url) == []


# item 4 --------------------------------------------------------------------------------------------------------
def test_clone_names_truncation_digits_and_replication_as_ibm_documents(fake: Any, pvs: Pvs) -> None:
    _replicate(pvs, "vol-app-data-1")
    _replicate(pvs, "vol-app-log-1")
    name = "a-base-name-longer-than-twenty"
    r = pvs("POST", PRIMARY, "/volumes/clone", {"name": name, "volumeIDs": ["vol-app-data-1", "vol-app-log-1"]},
            version="v2")
    assert r.status_code == 202, r.text
    task = r.json()["cloneTaskID"]
    # the clones are volumes from the moment the task starts (a client that lost the answer finds them)
    listed = [v for v in pvs("GET", PRIMARY, "/volumes").json()["volumes"] if v["name"].startswith("clone-")]
    assert len(listed) == 2
    assert all(re.fullmatch(rf"clone-{name[:20]}-\d{{5}}-[12]", v["name"]) for v in listed), listed
    assert len({v["name"].rsplit("-", 2)[1] for v in listed}) == 1  # one random number per request
    status = _wait_for(lambda: (lambda t: t if t["status"] == "completed" else None)(
        pvs("GET", PRIMARY, f"/volumes/clone-tasks/{task}", version="v2").json()))
    ids = {c["clonedVolumeID"] for c in status["clonedVolumes"]}
    assert ids == {v["volumeID"] for v in listed}
    # replicated sources make replicated clones unless the request says otherwise
    assert all(pvs("GET", PRIMARY, f"/volumes/{i}").json()["replicationEnabled"] is True for i in ids)

    r = pvs("POST", PRIMARY, "/volumes/clone", {"name": name, "volumeIDs": ["vol-app-data-1"],
                                                "targetReplicationEnabled": False}, version="v2")
    assert r.status_code == 202, r.text
    single = [v for v in pvs("GET", PRIMARY, "/volumes").json()["volumes"]
              if v["name"].startswith("clone-") and v["volumeID"] not in ids]
    assert len(single) == 1 and re.fullmatch(rf"clone-{name}-\d{{5}}", single[0]["name"]), single
    assert single[0]["replicationEnabled"] is False
    assert _violations(fake.url) == []


def _clone_posts(ibm: IbmDR) -> list[dict[str, Any]]:
    return _exchanges(ibm.fake.url, "POST", r"/pcloud/v2/.*/volumes/clone$")


def _clones(ibm: IbmDR, iid: str) -> list[dict[str, Any]]:
    return [v for v in ibm.volumes(SECONDARY) if v["name"].startswith("clone-")
            and v["name"][len("clone-"):].startswith(Names(iid).rehearsal[:20])]


def test_rehearsal_clones_are_unreplicated_found_recorded_and_cleaned_up(ibm: IbmDR) -> None:
    ibm.ready_plan("c-rh", "grs-async")
    op = ibm.act("c-rh", "test_failover")
    posts = _clone_posts(ibm)
    assert len(posts) == 1
    sent = posts[0]["request"]
    assert sent["targetReplicationEnabled"] is False and len(sent["name"]) <= 20
    clones = _clones(ibm, "c-rh")
    assert len(clones) == len(GRS_PARAMS["protected_volumes"])
    assert all(not c["replicationEnabled"] for c in clones)
    out = ibm.outputs(op, "start_rehearsal")
    assert out["clone_task_id"] == posts[0]["response"]["cloneTaskID"]
    assert sorted(out["rehearsal_volumes"]) == sorted(c["volumeID"] for c in clones)
    ibm.act("c-rh", "cleanup_test")
    assert _clones(ibm, "c-rh") == []
    assert _violations(ibm.fake.url) == []


# item 9 --------------------------------------------------------------------------------------------------------
def test_delete_volume_answers_200_then_410_while_deleting_and_404_unknown(fake: Any, pvs: Pvs) -> None:
    with fake.state.lock:
        fake.state.step_seconds = 10  # the deletion stays under way for the test
    r = pvs("DELETE", PRIMARY, "/volumes/vol-app-data-1")
    assert r.status_code == 200, r.text
    assert pvs("GET", PRIMARY, "/volumes/vol-app-data-1").json()["state"] == "deleting"
    assert pvs("DELETE", PRIMARY, "/volumes/vol-app-data-1").status_code == 410
    assert pvs("DELETE", PRIMARY, "/volumes/no-such-volume").status_code == 404
    assert _violations(fake.url) == []


def test_cleanup_treats_410_as_already_being_deleted(ibm: IbmDR) -> None:
    ibm.ready_plan("c-410", "grs-async")
    ibm.act("c-410", "test_failover")
    # the first DELETE's answer is lost after PowerVS started the deletion; the deletion takes long enough for
    # the step's retry to meet the volume still ``deleting``: its DELETE answers 410
    ibm.admin.fault(method="DELETE", path=r"/volumes/[^/]+$", after=True, drop=True)
    with ibm.fake.state.lock:
        ibm.fake.state.step_seconds = 1.0
    ibm.act("c-410", "cleanup_test")
    deletes = [e["status"] for e in _exchanges(ibm.fake.url, "DELETE", r"/volumes/[^/]+$")]
    assert 410 in deletes, deletes
    assert _clones(ibm, "c-410") == []


# lost answers --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lost", [{"drop": True}, {"status": 503}], ids=["dropped", "503"])
def test_a_lost_onboarding_answer_is_found_by_its_description(ibm: IbmDR, lost: dict[str, Any]) -> None:
    ibm.admin.fault(method="POST", path=r"/volumes/onboarding$", after=True, **lost)
    with ibm.fake.state.lock:  # the task outlasts the step's first retry: the retry meets it InProgress
        ibm.fake.state.step_seconds = 0.5
    ibm.ready_plan("c-lost-onb", "grs-async")
    with ibm.fake.state.lock:
        tasks = list(ibm.fake.state.onboardings[_guid(SECONDARY)].values())
        ibm.fake.state.step_seconds = FAST_STEP
    assert len(tasks) == 1, tasks
    assert len(_exchanges(ibm.fake.url, "POST", r"/volumes/onboarding$")) == 1
    aux = [v for v in ibm.volumes(SECONDARY) if v["name"].startswith(Names("c-lost-onb").aux_prefix)]
    assert len(aux) == len(GRS_PARAMS["protected_volumes"])
    r = ibm.deprovision("c-lost-onb", plan=ibm.pid("grs-async"))
    assert r.status_code == 202 and ibm.wait("c-lost-onb", timeout=60)["state"] == "succeeded"
    assert [v for v in ibm.volumes(SECONDARY) if v["name"].startswith("drb-")] == []


@pytest.mark.parametrize("lost", [{"drop": True}, {"status": 503}], ids=["dropped", "503"])
def test_a_lost_clone_answer_is_found_by_the_name_prefix(ibm: IbmDR, lost: dict[str, Any]) -> None:
    ibm.ready_plan("c-lost-cl", "grs-async")
    ibm.admin.fault(method="POST", path=r"/volumes/clone$", after=True, **lost)
    with ibm.fake.state.lock:  # the clones are still ``creating`` when the step's retry finds them
        ibm.fake.state.step_seconds = 0.5
    op = ibm.act("c-lost-cl", "test_failover")
    with ibm.fake.state.lock:
        tasks = list(ibm.fake.state.clone_tasks[_guid(SECONDARY)].values())
        ibm.fake.state.step_seconds = FAST_STEP
    assert len(tasks) == 1, tasks
    assert len(_clone_posts(ibm)) == 1
    clones = _clones(ibm, "c-lost-cl")
    assert len(clones) == len(GRS_PARAMS["protected_volumes"])
    assert sorted(ibm.outputs(op, "start_rehearsal")["rehearsal_volumes"]) == sorted(c["volumeID"] for c in clones)
    r = ibm.deprovision("c-lost-cl", plan=ibm.pid("grs-async"))
    assert r.status_code == 202 and ibm.wait("c-lost-cl", timeout=60)["state"] == "succeeded"
    assert _clones(ibm, "c-lost-cl") == []
    assert [v for v in ibm.volumes(SECONDARY) if v["name"].startswith("drb-")] == []


# every answer of these routes keeps its model ------------------------------------------------------------------
def test_volume_and_vm_answers_keep_their_models(ibm: IbmDR) -> None:
    # a KSYS plan: only its moves power VMs (grs-async touches none) and its rehearsals create VMs
    ibm.ready_plan("c-shape", "ksys-managed")
    for kind, mode in (("test_failover", None), ("cleanup_test", None), ("failover", "planned"),
                       ("failback", None)):
        ibm.act("c-shape", kind, mode)
    r = ibm.deprovision("c-shape", plan=ibm.pid("ksys-managed"))
    assert r.status_code == 202 and ibm.wait("c-shape", timeout=60)["state"] == "succeeded"
    ex = requests.get(f"{ibm.fake.url}/_fake/exchanges", timeout=30).json()["exchanges"]
    contract = load()
    seen, found = set(), []
    for e in ex:
        op, bad = contract.check(e["method"], e["path"], e["request"], e["status"], e["response"])
        if op is not None and op.id in MINE:
            seen.add(op.id)
            found += [f"{v} ({e['method']} {e['path']} -> {e['status']})" for v in bad]
    assert not found, "\n".join(found[:30])
    assert _violations(ibm.fake.url) == []
    assert {"pcloud.cloudinstances.volumes.getall", "pcloud.cloudinstances.volumes.delete",
            "pcloud.volume.onboarding.post", "pcloud.v2.volumes.clone.post", "pcloud.pvminstances.action.post",
            "pcloud.pvminstances.get", "pcloud.pvminstances.post", "pcloud.pvminstances.delete"} <= seen, seen
