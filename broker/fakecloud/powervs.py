"""The fake PowerVS: workspaces, volumes, onboarding, clones, volume groups and their replication, VMs, jobs.

Under ``/pcloud/v1/cloud-instances/{id}/...`` (and ``/pcloud/v2`` for volume clones); every route checks
the ``CRN`` header names the workspace, as PowerVS does.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request

from broker.domain.sites import GRS_PAIRS
from broker.fakecloud.common import json_body
from broker.fakecloud.state import (
    FakeError,
    FakeState,
    iso,
)


def register(app: Flask, S: FakeState) -> None:
    """Add this service's routes to the fake's ``app``, serving from ``S``."""
    # PowerVS --------------------------------------------------------------------------------------
    def ws(guid: str) -> dict[str, Any]:
        return S.workspace(guid, request.headers.get("CRN"))

    P = "/pcloud/v1/cloud-instances/<guid>"

    @app.get(P)
    def pv_workspace(guid: str) -> Any:
        w = ws(guid)
        return jsonify({"cloudInstanceID": guid, "name": w["name"], "region": w["zone"], "enabled": True,
                        "initialized": True, "tenantID": w["account"], "openstackID": guid,
                        "capabilities": ["grs"], "pvmInstances": [{"pvmInstanceID": v["pvmInstanceID"],
                                                                   "serverName": v["serverName"]}
                                                                  for v in S.vms[guid].values()]})

    @app.get(P + "/locations/disaster-recovery")
    def pv_dr_location(guid: str) -> Any:
        w = ws(guid)
        pool_map = [{"volumePool": p["poolName"], "remotePool": p["poolName"]}
                    for p in S.pools[guid] if p["replicationEnabled"]]
        sites = [{"location": z, "isActive": True, "replicationPoolMap": pool_map}
                 for pair in GRS_PAIRS if w["zone"] in pair for z in pair if z != w["zone"]]
        return jsonify({"location": w["zone"], "replicationSites": sites})

    @app.get("/pcloud/v1/locations/disaster-recovery")
    def pv_dr_locations() -> Any:
        zones = sorted({z for pair in GRS_PAIRS for z in pair})
        return jsonify({"disasterRecoveryLocations": [
            {"location": z, "replicationSites": [{"location": p, "isActive": True} for pair in GRS_PAIRS
                                                 if z in pair for p in pair if p != z]} for z in zones]})

    @app.get(P + "/storage-capacity/storage-pools")
    def pv_pools(guid: str) -> Any:
        ws(guid)
        return jsonify({"storagePoolsCapacity": S.pools[guid],
                        "maximumStorageAllocation": {"maxAllocationSize": 20000, "storagePool": "Tier1-Flash-1",
                                                     "storageType": "Tier1"}})

    def _vol_view(v: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in v.items() if v is not None or k in ("groupID",)}

    @app.get(P + "/volumes")
    def pv_volumes(guid: str) -> Any:
        ws(guid)
        href = f"/pcloud/v1/cloud-instances/{guid}/volumes/"
        return jsonify({"volumes": [dict(_vol_view(v), href=href + v["volumeID"]) for v in S.volumes[guid].values()]})

    @app.get(P + "/volumes/<vid>")
    def pv_volume(guid: str, vid: str) -> Any:
        ws(guid)
        return jsonify(_vol_view(S.volume(guid, vid)))

    @app.delete(P + "/volumes/<vid>")
    def pv_volume_delete(guid: str, vid: str) -> Any:
        ws(guid)
        S.delete_volume(guid, vid)
        return jsonify({}), 202

    @app.post(P + "/volumes/<vid>/action")
    def pv_volume_action(guid: str, vid: str) -> Any:
        ws(guid)
        S.volume_action(guid, vid, json_body())
        return jsonify({}), 202

    @app.post(P + "/volumes/onboarding")
    def pv_onboard(guid: str) -> Any:
        ws(guid)
        task = S.onboard(guid, json_body())
        return jsonify({"description": task["description"], "id": task["id"],
                        "summary": f"onboarding {len(task['inputVolumes'])} volume(s)"}), 202

    @app.get(P + "/volumes/onboarding")
    def pv_onboardings(guid: str) -> Any:
        ws(guid)
        return jsonify({"volumeOnboardings": [{k: t[k] for k in ("id", "description", "status", "inputVolumes")}
                                              for t in S.onboardings[guid].values()]})

    @app.get(P + "/volumes/onboarding/<oid>")
    def pv_onboarding(guid: str, oid: str) -> Any:
        ws(guid)
        task = S.onboardings[guid].get(oid)
        if task is None:
            raise FakeError(404, "not found", f"volume onboarding {oid} not found")
        return jsonify(task)

    @app.post("/pcloud/v2/cloud-instances/<guid>/volumes/clone")
    def pv_clone(guid: str) -> Any:
        ws(guid)
        return jsonify(S.clone(guid, json_body())), 202

    @app.get("/pcloud/v2/cloud-instances/<guid>/volumes/clone-tasks/<tid>")
    def pv_clone_task(guid: str, tid: str) -> Any:
        ws(guid)
        task = S.clone_tasks[guid].get(tid)
        if task is None:
            raise FakeError(404, "not found", f"clone task {tid} not found")
        return jsonify(task)

    def _group_view(grp: dict[str, Any]) -> dict[str, Any]:
        return {k: grp[k] for k in ("id", "name", "status", "consistencyGroupName", "replicationStatus",
                                    "auxiliary", "storagePool", "replicationSites", "statusDescription")}

    @app.get(P + "/volume-groups")
    def pv_groups(guid: str) -> Any:
        ws(guid)
        return jsonify({"volumeGroups": [_group_view(x) for x in S.groups[guid].values() if not x.get("deleted")]})

    @app.post(P + "/volume-groups")
    def pv_group_create(guid: str) -> Any:
        ws(guid)
        grp = S.create_group(guid, json_body())
        return jsonify({"id": grp["id"], "name": grp["name"], "status": grp["status"]}), 202

    @app.get(P + "/volume-groups/<gid>")
    def pv_group(guid: str, gid: str) -> Any:
        ws(guid)
        grp = S.group(guid, gid)
        return jsonify({**_group_view(grp), "volumeIDs": list(grp["volumeIDs"])})

    @app.put(P + "/volume-groups/<gid>")
    def pv_group_update(guid: str, gid: str) -> Any:
        ws(guid)
        S.update_group(guid, gid, json_body())
        return jsonify({}), 202

    @app.delete(P + "/volume-groups/<gid>")
    def pv_group_delete(guid: str, gid: str) -> Any:
        ws(guid)
        S.delete_group(guid, gid)
        return jsonify({}), 202

    @app.post(P + "/volume-groups/<gid>/action")
    def pv_group_action(guid: str, gid: str) -> Any:
        ws(guid)
        S.group_action(guid, gid, json_body())
        return jsonify({}), 202

    @app.get(P + "/volume-groups/<gid>/storage-details")
    def pv_storage_details(guid: str, gid: str) -> Any:
        ws(guid)
        grp = S.group(guid, gid)
        rel = S.relations[grp["consistencyGroupName"]]
        state = rel["state"] if grp["volumeIDs"] else "empty"
        return jsonify({"consistencyGroupName": grp["consistencyGroupName"], "cyclePeriodSeconds": rel["cycle"],
                        "cyclingMode": "multi", "numOfvols": len(grp["volumeIDs"]), "primaryRole": rel["primaryRole"],
                        "remoteCopyRelationshipNames": [f"rcrel-{v[:12]}" for v in grp["volumeIDs"]],
                        "replicationType": "global", "state": state, "sync": ""})

    @app.get(P + "/volume-groups/<gid>/remote-copy-relationships")
    def pv_relationships(guid: str, gid: str) -> Any:
        ws(guid)
        grp = S.group(guid, gid)
        rel = S.relations[grp["consistencyGroupName"]]
        rows = []
        for vid in grp["volumeIDs"]:
            vol = S.volumes[guid].get(vid) or {}
            rows.append({"name": f"rcrel-{vid[:12]}", "remoteCopyID": vid, "consistencyGroupName":
                         grp["consistencyGroupName"], "copyType": "global", "cyclingMode": "multi",
                         "masterVolumeName": vol.get("masterVolumeName") or vol.get("name"),
                         "auxVolumeName": vol.get("auxVolumeName"), "primaryRole": rel["primaryRole"],
                         "state": rel["state"], "progress": rel["progress"], "freezeTime": iso(S.freeze_time(rel))})
        return jsonify({"id": gid, "remoteCopyRelationships": rows})

    @app.get(P + "/pvm-instances")
    def pv_vms(guid: str) -> Any:
        ws(guid)
        return jsonify({"pvmInstances": [{k: v for k, v in vm.items() if k != "owner"} for vm in S.vms[guid].values()]})

    @app.get(P + "/pvm-instances/<vm_id>")
    def pv_vm(guid: str, vm_id: str) -> Any:
        ws(guid)
        vm = S.vms[guid].get(vm_id)
        if vm is None:
            raise FakeError(404, "not found", f"pvm-instance {vm_id} not found")
        return jsonify({k: v for k, v in vm.items() if k != "owner"})

    @app.post(P + "/pvm-instances/<vm_id>/action")
    def pv_vm_action(guid: str, vm_id: str) -> Any:
        ws(guid)
        S.vm_action(guid, vm_id, json_body().get("action"))
        return jsonify({}), 202

    @app.get(P + "/jobs/<job_id>")
    def pv_job(guid: str, job_id: str) -> Any:
        ws(guid)
        job = S.jobs[guid].get(job_id)
        if job is None:
            raise FakeError(404, "not found", f"job {job_id} not found")
        return jsonify(job)
