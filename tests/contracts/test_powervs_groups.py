"""PowerVS volume groups and GRS replication held to IBM's definitions (power-go-client models and the
power-iaas "Global Replication Services" docs), through the broker's real service layer and worker against
the fake, or over HTTP against the fake where the fake's own behaviour is the point:

- ``GET .../volume-groups/{id}`` is ``VolumeGroup`` (no members); only ``.../details`` lists ``volumeIDs``.
- Failback resyncs with ``start: {source: aux}`` on the *auxiliary* volume group, in the secondary workspace.
- ``Site.isActive`` is ``omitempty``: an inactive replication site comes without it.
- Volume-group ``PUT`` and ``DELETE`` are asynchronous; create may answer 206; the partner group's
  ``replicationStatus`` follows after a while; the auxiliary group is named like the consistency group;
  ``empty`` and the ``*_disconnected`` states are replication states.
- ``storage-details`` and ``remote-copy-relationships`` may answer 429.
- Lost answers of the create: the retry finds the group by name.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from broker.app import build_runtime, create_app
from broker.fakecloud.contracts import load
from broker.orchestrators.ibmcloud.naming import Names
from tests.conftest import GRS_PARAMS, PRIMARY, SECONDARY, SERVICE_ID, make_settings
from tests.e2e.conftest import wait_until
from tests.ibmfake import FakeAdmin, fake_cloud, ibmcloud_env
from tests.services.conftest import DR

P_GUID = PRIMARY.rstrip(":").rsplit(":", 1)[-1]
S_GUID = SECONDARY.rstrip(":").rsplit(":", 1)[-1]
MY_OPERATIONS = ("pcloud.volumegroups.", "pcloud.cloudinstances.get", "pcloud.locations.disasterrecovery.",
                 "pcloud.storagecapacity.pools.")


class IbmDR(DR):
    def __init__(self, client: Any, runtime: Any, fake: Any) -> None:
        super().__init__(client, runtime)
        self.fake = fake
        self.admin = FakeAdmin(fake.url)

    def steps(self, iid: str) -> dict[str, Any]:
        with self.runtime.store.read() as tx:
            op = tx.latest_instance_operation(iid)
            return {s.name: s for s in tx.steps(op.id)}

    def exchanges(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.fake.url}/_fake/exchanges", timeout=10).json()["exchanges"]

    def my_violations(self) -> list[dict[str, Any]]:
        found = requests.get(f"{self.fake.url}/_fake/contract", timeout=10).json()["violations"]
        return [v for v in found if str(v.get("operation")).startswith(MY_OPERATIONS)]

    def update(self, iid: str, params: dict[str, Any]) -> dict[str, Any]:
        r = self.patch(f"/v2/service_instances/{iid}?accepts_incomplete=true",
                       {"service_id": SERVICE_ID, "parameters": params})
        assert r.status_code == 202, r.get_data(as_text=True)
        return self.wait(iid, timeout=60)

    def run(self, iid: str, kind: str, mode: str | None = None) -> dict[str, Any]:
        r = self.action(iid, kind, mode)
        assert r.status_code == 202, r.get_data(as_text=True)
        return self.wait(iid, timeout=60)

    def remove(self, iid: str, plan: str = "grs-async") -> dict[str, Any]:
        r = self.delete(f"/v2/service_instances/{iid}?service_id={SERVICE_ID}&plan_id={self.pid(plan)}"
                        "&accepts_incomplete=true")
        assert r.status_code == 202, r.get_data(as_text=True)
        return self.wait(iid, timeout=60)


def _runtime(tmp_path: Path, url: str, **extra: str) -> Any:
    rt = build_runtime(make_settings(tmp_path, orchestrator="ibmcloud", ibmcloud_env=ibmcloud_env(url, **extra)))
    rt.worker.start()
    return rt


@pytest.fixture
def fake() -> Iterator[Any]:
    with fake_cloud() as server:
        yield server


@contextmanager
def _broker(tmp_path: Path, fake: Any, **env: str) -> Iterator[IbmDR]:
    rt = _runtime(tmp_path, fake.url, **env)
    try:
        yield IbmDR(create_app(runtime=rt).test_client(), rt, fake)
    finally:
        rt.worker.stop(10)
        rt.store.engine.dispose()


@pytest.fixture
def ibm(tmp_path: Path, fake: Any) -> Iterator[IbmDR]:
    with _broker(tmp_path, fake) as broker:
        yield broker


CACHE = 0.3  # seconds a replication status is reused, for the tests that look at a fresh read


@pytest.fixture
def ibm_fresh(tmp_path: Path, fake: Any) -> Iterator[IbmDR]:
    with _broker(tmp_path, fake, DRBROKER_IBMCLOUD_STATUS_CACHE_SECONDS=str(CACHE)) as broker:
        yield broker


class PV:
    """Plain HTTP to the fake's PowerVS, as any client of IBM's API would talk to it."""

    def __init__(self, url: str) -> None:
        self.url = url
        token = requests.post(f"{url}/identity/token", timeout=10, data={
            "grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": "test-pv-apikey"}).json()
        self.headers = {"Authorization": f"Bearer {token['access_token']}"}

    def __call__(self, method: str, crn: str, sub: str, body: Any = None) -> requests.Response:
        guid = crn.rstrip(":").rsplit(":", 1)[-1]
        return requests.request(method, f"{self.url}/pcloud/v1/cloud-instances/{guid}{sub}", json=body,
                                headers={**self.headers, "CRN": crn}, timeout=10)

    def until(self, probe: Any, timeout: float = 5.0) -> Any:
        return wait_until(probe, timeout, "the fake did not get there")

    def replicating_group(self, volumes: list[str], name: str = "g1") -> str:
        for v in volumes:
            assert self("POST", PRIMARY, f"/volumes/{v}/action", {"replicationEnabled": True}).status_code == 202
        self.until(lambda: all(self("GET", PRIMARY, f"/volumes/{v}").json().get("replicationEnabled")
                               for v in volumes))
        r = self("POST", PRIMARY, "/volume-groups", {"name": name, "volumeIDs": volumes})
        assert r.status_code == 202, r.text
        gid = r.json()["id"]
        self.until(lambda: self("GET", PRIMARY, f"/volume-groups/{gid}").json().get("status") == "available")
        return gid


def _check(status: int, method: str, path: str, body: Any) -> list[Any]:
    return load().check(method, path, None, status, body)[1]


# 1. VolumeGroup has no members; VolumeGroupDetails lists them ---------------------------------------
def test_fake_volume_group_get_has_no_members_and_details_lists_them(fake: Any) -> None:
    pv = PV(fake.url)
    gid = pv.replicating_group(["vol-db-1", "vol-db-2"])
    plain = pv("GET", PRIMARY, f"/volume-groups/{gid}")
    assert plain.status_code == 200 and "volumeIDs" not in plain.json(), plain.json()
    assert _check(200, "GET", f"/pcloud/v1/cloud-instances/{P_GUID}/volume-groups/{gid}", plain.json()) == []
    details = pv("GET", PRIMARY, f"/volume-groups/{gid}/details")
    assert details.status_code == 200, details.text
    assert sorted(details.json()["volumeIDs"]) == ["vol-db-1", "vol-db-2"]
    every = pv("GET", PRIMARY, "/volume-groups/details").json()["volumeGroups"]
    assert [sorted(g["volumeIDs"]) for g in every if g["id"] == gid] == [["vol-db-1", "vol-db-2"]]


def test_a_parameter_update_releases_a_removed_volume_and_deprovision_leaves_nothing(ibm: IbmDR) -> None:
    ibm.ready_plan("g-upd", "grs-async")
    keep, drop = GRS_PARAMS["protected_volumes"]
    result = ibm.update("g-upd", {"protected_volumes": [keep]})
    assert result["state"] == "succeeded", result
    groups = [g for g in ibm.admin.state()["volume_groups"] if not g["auxiliary"]]
    assert [g["volumeIDs"] for g in groups] == [[keep]]
    vols = {v["volumeID"]: v for v in ibm.admin.state()["volumes"]}
    assert drop not in vols, vols[drop]  # a seeded volume is listed while it replicates or is in a group
    result = ibm.remove("g-upd")
    assert result["state"] == "succeeded", result
    state = ibm.admin.state()
    assert state["volume_groups"] == [] and [v for v in state["volumes"] if v["replicationEnabled"]] == []
    assert ibm.my_violations() == []


# 10. failback resyncs from the auxiliary group, at the secondary -----------------------------------
def test_fake_refuses_start_from_aux_on_the_primary_group(ibm: IbmDR) -> None:
    ibm.ready_plan("g-aux", "grs-async")
    pv = PV(ibm.fake.url)
    gid = next(g["id"] for g in ibm.admin.state()["volume_groups"] if not g["auxiliary"])
    # fail over by hand: stop the auxiliary group with access at the secondary
    aux = next(g["id"] for g in ibm.admin.state()["volume_groups"] if g["auxiliary"])
    assert pv("POST", SECONDARY, f"/volume-groups/{aux}/action", {"stop": {"access": True}}).status_code == 202
    pv.until(lambda: pv("GET", PRIMARY, f"/volume-groups/{gid}").json()["replicationStatus"] == "disabled")
    refused = pv("POST", PRIMARY, f"/volume-groups/{gid}/action", {"start": {"source": "aux"}})
    assert refused.status_code == 400 and "auxiliary" in refused.json()["description"], refused.text
    started = pv("POST", SECONDARY, f"/volume-groups/{aux}/action", {"start": {"source": "aux"}})
    assert started.status_code == 202, started.text
    assert pv("GET", PRIMARY, f"/volume-groups/{gid}/storage-details").json()["primaryRole"] == "aux"


def test_failback_starts_the_auxiliary_group_in_the_secondary_workspace(ibm: IbmDR) -> None:
    ibm.ready_plan("g-fb", "grs-async")
    assert ibm.run("g-fb", "failover", "planned")["state"] == "succeeded"
    result = ibm.run("g-fb", "failback")
    assert result["state"] == "succeeded", result
    aux = next(g for g in ibm.admin.state()["volume_groups"] if g["auxiliary"])
    starts = [(x["path"], x["request"]["start"]["source"]) for x in ibm.exchanges()
              if x["path"].endswith("/action") and "start" in (x.get("request") or {}) and x["status"] == 202]
    assert (f"/pcloud/v1/cloud-instances/{S_GUID}/volume-groups/{aux['id']}/action", "aux") in starts, starts
    assert [u for u, src in starts if src == "aux" and P_GUID in u] == []
    attrs = ibm.attributes("g-fb")
    assert attrs["replication_state"] == "consistent_copying" and attrs["replication_primary_role"] == "master"
    assert ibm.remove("g-fb")["state"] == "succeeded"
    assert ibm.my_violations() == []


# 11. Site.isActive is omitted when false ----------------------------------------------------------
def test_fake_omits_is_active_of_an_inactive_site_and_capitalises_the_pool_map(fake: Any) -> None:
    fake.state.inactive_sites.add(("dal10", "wdc07"))
    body = PV(fake.url)("GET", PRIMARY, "/locations/disaster-recovery").json()
    site = next(s for s in body["replicationSites"] if s["location"] == "wdc07")
    assert "isActive" not in site and site["ReplicationPoolMap"], site
    assert _check(200, "GET", f"/pcloud/v1/cloud-instances/{P_GUID}/locations/disaster-recovery", body) == []


def test_a_replication_site_without_is_active_is_not_a_partner(ibm: IbmDR) -> None:
    ibm.fake.state.inactive_sites.add(("dal10", "wdc07"))
    r = ibm.provision_plan("g-site", "grs-async")
    assert r.status_code == 202, r.get_data(as_text=True)
    result = ibm.wait("g-site", timeout=60)
    assert result["state"] == "failed" and "no replication site wdc07" in result["description"], result


# 12. asynchronous updates and deletes, 206, the partner's status, names, replication states --------
def test_fake_group_update_and_delete_are_asynchronous(fake: Any) -> None:
    pv = PV(fake.url)
    gid = pv.replicating_group(["vol-db-1", "vol-db-2"])
    assert pv("PUT", PRIMARY, f"/volume-groups/{gid}", {"removeVolumes": ["vol-db-2"]}).status_code == 202
    assert pv("GET", PRIMARY, f"/volume-groups/{gid}").json()["status"] == "updating"
    assert "vol-db-2" in pv("GET", PRIMARY, f"/volume-groups/{gid}/details").json()["volumeIDs"]
    # still a member: replication cannot be disabled yet, nor another update started
    early = pv("POST", PRIMARY, "/volumes/vol-db-2/action", {"replicationEnabled": False})
    assert early.status_code == 400, early.text
    assert pv("PUT", PRIMARY, f"/volume-groups/{gid}", {"removeVolumes": ["vol-db-1"]}).status_code == 409
    pv.until(lambda: pv("GET", PRIMARY, f"/volume-groups/{gid}").json()["status"] == "available")
    assert pv("GET", PRIMARY, f"/volume-groups/{gid}/details").json()["volumeIDs"] == ["vol-db-1"]
    assert pv("PUT", PRIMARY, f"/volume-groups/{gid}", {"removeVolumes": ["vol-db-1"]}).status_code == 202
    pv.until(lambda: pv("GET", PRIMARY, f"/volume-groups/{gid}").json()["status"] == "available")
    sd = pv("GET", PRIMARY, f"/volume-groups/{gid}/storage-details").json()
    assert sd["state"] == "empty" and "numOfvols" not in sd, sd
    assert pv("DELETE", PRIMARY, f"/volume-groups/{gid}").status_code == 202
    assert pv("GET", PRIMARY, f"/volume-groups/{gid}").json()["status"] == "deleting"
    pv.until(lambda: pv("GET", PRIMARY, f"/volume-groups/{gid}").status_code == 404)


def test_a_partial_create_206_still_protects_every_volume(ibm: IbmDR) -> None:
    ibm.admin.fault(fail_next="volume_group_partial")
    ibm.ready_plan("g-206", "grs-async")
    creates = [x for x in ibm.exchanges() if x["method"] == "POST" and x["path"].endswith("/volume-groups")]
    assert [x["status"] for x in creates] == [206] and creates[0]["response"]["statusDetail"]
    groups = [g for g in ibm.admin.state()["volume_groups"] if not g["auxiliary"]]
    assert [sorted(g["volumeIDs"]) for g in groups] == [sorted(GRS_PARAMS["protected_volumes"])]
    assert ibm.my_violations() == []


def test_the_auxiliary_group_is_named_like_the_consistency_group_and_its_status_follows(ibm: IbmDR) -> None:
    ibm.ready_plan("g-name", "grs-async")
    pv = PV(ibm.fake.url)
    prim = pv("GET", PRIMARY, "/volume-groups").json()["volumeGroups"]
    mine = next(g for g in prim if g["name"] == Names("g-name").group)
    aux = next(g for g in pv("GET", SECONDARY, "/volume-groups").json()["volumeGroups"]
               if g.get("consistencyGroupName") == mine["consistencyGroupName"])
    assert aux["name"] == mine["consistencyGroupName"] and aux["auxiliary"] is True
    assert pv("POST", PRIMARY, f"/volume-groups/{mine['id']}/action", {"stop": {"access": False}}).status_code == 202
    assert pv("GET", PRIMARY, f"/volume-groups/{mine['id']}").json()["replicationStatus"] == "disabled"
    assert pv("GET", SECONDARY, f"/volume-groups/{aux['id']}").json()["replicationStatus"] == "enabled"
    pv.until(lambda: pv("GET", SECONDARY, f"/volume-groups/{aux['id']}").json()["replicationStatus"]
             == "disabled")
    # resync right after a failover: the broker waits for both groups to settle before it starts one
    assert ibm.run("g-name", "resync")["state"] == "succeeded"


def test_an_unplanned_failover_of_a_disconnected_group_ends_idling_disconnected(ibm_fresh: IbmDR) -> None:
    ibm = ibm_fresh
    ibm.ready_plan("g-dis", "grs-async")
    with ibm.fake.state.lock:
        cg = next(g["consistencyGroupName"] for grps in ibm.fake.state.groups.values() for g in grps.values()
                  if g["name"] == Names("g-dis").group)
        ibm.fake.state.disconnect(cg)  # the primary site is lost
    time.sleep(CACHE)
    assert ibm.attributes("g-dis")["replication_state"] == "inconsistent_disconnected"
    result = ibm.run("g-dis", "failover", "unplanned")
    assert result["state"] == "succeeded", result
    assert ibm.steps("g-dis")["failover_replication"].attempts == 1
    assert ibm.attributes("g-dis")["replication_state"] == "idling_disconnected"


# 13. 429 on the replication reads -----------------------------------------------------------------
def test_a_429_inside_a_wait_is_waited_out_not_a_failed_step(ibm: IbmDR) -> None:
    r = ibm.provision_plan("g-429", "grs-async")
    assert r.status_code == 202
    ibm.admin.fault(service="powervs", method="GET", path=r"/storage-details$", status=429, retry_after=0.2,
                    count=2)
    result = ibm.wait("g-429", timeout=60)
    assert result["state"] == "succeeded", result
    assert all(f["count"] == 0 for f in ibm.admin.faults())
    assert ibm.steps("g-429")["wait_consistent_copying"].attempts == 1


def test_a_429_on_the_status_read_is_not_cached(ibm_fresh: IbmDR) -> None:
    ibm = ibm_fresh
    ibm.ready_plan("g-st", "grs-async")
    time.sleep(CACHE)  # the status the provision's last read left is no longer reused
    ibm.admin.fault(service="powervs", method="GET", path=r"/remote-copy-relationships$", status=429,
                    retry_after=5, count=1)
    assert "replication_state" not in ibm.attributes("g-st")
    assert ibm.attributes("g-st")["replication_state"] == "consistent_copying"


# workspace, pools, DR locations: only the fields IBM's models define -------------------------------
def test_fake_workspace_pools_and_locations_keep_their_models(fake: Any) -> None:
    pv = PV(fake.url)
    for sub in ("", "/storage-capacity/storage-pools", "/locations/disaster-recovery"):
        r = pv("GET", PRIMARY, sub)
        assert r.status_code == 200, r.text
        assert _check(200, "GET", f"/pcloud/v1/cloud-instances/{P_GUID}{sub}", r.json()) == [], sub
    everywhere = requests.get(f"{fake.url}/pcloud/v1/locations/disaster-recovery", headers=pv.headers, timeout=10)
    assert _check(200, "GET", "/pcloud/v1/locations/disaster-recovery", everywhere.json()) == []


# lost answers of the create ------------------------------------------------------------------------
@pytest.mark.parametrize("lost", [{"drop": True}, {"status": 503}], ids=["dropped", "503-after"])
def test_a_lost_create_answer_is_found_by_name_on_retry(ibm: IbmDR, lost: dict[str, Any]) -> None:
    ibm.admin.fault(service="powervs", method="POST", path=r"/volume-groups$", after=True, **lost)
    ibm.ready_plan("g-lost", "grs-async")
    assert ibm.steps("g-lost")["create_replication_group"].attempts >= 2
    creates = [x for x in ibm.exchanges() if x["method"] == "POST" and x["path"].endswith("/volume-groups")]
    assert len(creates) == 1, creates  # the retry found the group by its name instead of creating another
    assert len([g for g in ibm.admin.state()["volume_groups"] if not g["auxiliary"]]) == 1
    assert ibm.remove("g-lost")["state"] == "succeeded"
    state = ibm.admin.state()
    assert state["volume_groups"] == [] and [v for v in state["volumes"] if v["replicationEnabled"]] == []
