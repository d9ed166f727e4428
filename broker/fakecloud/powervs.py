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


def _present(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` without the fields IBM's server leaves out: nulls and the zero values of ``omitempty`` fields
    (go-swagger models marshal those away; none of the fields passed here is ``x-nullable``)."""
    return {k: v for k, v in d.items() if v is not None and (v is False or v not in ("", [], 0))}


# Volume's omitempty fields (power-go-client models/volume.go); VolumeReference (the list) makes
# diskType, state and wwn required and adds href.
_VOLUME_OMITEMPTY = ("auxVolumeName", "consistencyGroupName", "diskType", "groupID", "masterVolumeName",
                     "primaryRole", "replicationSites", "replicationStatus", "replicationType", "state",
                     "volumePool", "wwn")


def volume_view(guid: str, vol: dict[str, Any], *, reference: bool = False) -> dict[str, Any]:
    """A volume as ``Volume`` (GET one) or ``VolumeReference`` (in ``Volumes``, with its ``href``)."""
    out = {k: v for k, v in vol.items() if not (k in _VOLUME_OMITEMPTY and (v is None or v in ("", [])))
           and v is not None}
    if reference:
        out["href"] = f"/pcloud/v1/cloud-instances/{guid}/volumes/{vol['volumeID']}"
    return out


def vm_view(guid: str, vm: dict[str, Any], *, reference: bool = False) -> dict[str, Any]:
    """A VM as ``PVMInstance`` (GET one) or ``PVMInstanceReference`` (lists, with its ``href``): the
    required fields of each, no internal ones (``owner``)."""
    out = {"pvmInstanceID": vm["pvmInstanceID"], "serverName": vm["serverName"], "status": vm["status"],
           "processors": vm["processors"], "memory": vm["memory"], "osType": vm["osType"],
           "procType": vm.get("procType", "shared"), "diskSize": vm.get("diskSize", 100),
           "imageID": vm.get("imageID", "fake-aix-7300-image"), "storageType": vm.get("storageType", "tier1")}
    if reference:
        out["href"] = f"/pcloud/v1/cloud-instances/{guid}/pvm-instances/{vm['pvmInstanceID']}"
    else:
        out.update(networkIDs=list(vm.get("networkIDs") or []), volumeIDs=list(vm.get("volumeIDs") or []))
    return out


def register(app: Flask, S: FakeState) -> None:
    """Add this service's routes to the fake's ``app``, serving from ``S``."""
    # PowerVS --------------------------------------------------------------------------------------
    def ws(guid: str) -> dict[str, Any]:
        return S.workspace(guid, request.headers.get("CRN"))

    P = "/pcloud/v1/cloud-instances/<guid>"

    @app.get(P)
    def pv_workspace(guid: str) -> Any:
        w = ws(guid)
        vms = list(S.vms[guid].values())
        # CloudInstance: limits and usage are required (CloudInstanceUsageLimits), the VMs as references
        limits = {"instances": 50, "memory": 2048, "procUnits": 200, "processors": 200, "storage": 100000}
        usage = {"instances": len(vms), "memory": sum(v["memory"] for v in vms),
                 "procUnits": sum(v["processors"] for v in vms), "processors": sum(v["processors"] for v in vms),
                 "storage": sum(v["size"] for v in S.volumes[guid].values())}
        return jsonify({"cloudInstanceID": guid, "name": w["name"], "region": w["zone"], "enabled": True,
                        "initialized": True, "tenantID": w["account"], "openstackID": guid,
                        "capabilities": ["grs"], "limits": limits, "usage": usage,
                        "pvmInstances": [vm_view(guid, v, reference=True) for v in vms]})

    def _site(zone: str, partner: str, pool_map: list[dict[str, str]] | None) -> dict[str, Any]:
        # Site: IBM spells ``ReplicationPoolMap`` capitalised; ``isActive`` is omitempty, so an inactive
        # site comes without it (Go never encodes false there).
        site: dict[str, Any] = {"location": partner}
        if (zone, partner) not in S.inactive_sites:
            site["isActive"] = True
        if pool_map:
            site["ReplicationPoolMap"] = pool_map
        return site

    @app.get(P + "/locations/disaster-recovery")
    def pv_dr_location(guid: str) -> Any:
        w = ws(guid)
        pool_map = [{"volumePool": p["poolName"], "remotePool": p["poolName"]}
                    for p in S.pools[guid] if p["replicationEnabled"]]
        sites = [_site(w["zone"], z, pool_map)
                 for pair in GRS_PAIRS if w["zone"] in pair for z in pair if z != w["zone"]]
        return jsonify({"location": w["zone"], "replicationSites": sites})

    @app.get("/pcloud/v1/locations/disaster-recovery")
    def pv_dr_locations() -> Any:
        zones = sorted({z for pair in GRS_PAIRS for z in pair})
        return jsonify({"disasterRecoveryLocations": [
            {"location": z, "replicationSites": [_site(z, p, None) for pair in GRS_PAIRS
                                                 if z in pair for p in pair if p != z]} for z in zones]})

    @app.get(P + "/storage-capacity/storage-pools")
    def pv_pools(guid: str) -> Any:
        ws(guid)
        return jsonify({"storagePoolsCapacity": S.pools[guid],
                        "maximumStorageAllocation": {"maxAllocationSize": 20000, "storagePool": "Tier1-Flash-1",
                                                     "storageType": "Tier1"}})

    @app.get(P + "/volumes")
    def pv_volumes(guid: str) -> Any:
        ws(guid)
        return jsonify({"volumes": [volume_view(guid, v, reference=True) for v in S.volumes[guid].values()]})

    @app.get(P + "/volumes/<vid>")
    def pv_volume(guid: str, vid: str) -> Any:
        ws(guid)
        return jsonify(volume_view(guid, S.volume(guid, vid)))

    @app.delete(P + "/volumes/<vid>")
    def pv_volume_delete(guid: str, vid: str) -> Any:
        ws(guid)
        S.delete_volume(guid, vid)  # 404 unknown, 410 while a deletion is under way
        return jsonify({}), 200  # pcloud.cloudinstances.volumes.delete answers 200 (Object)

    @app.post(P + "/volumes/<vid>/action")
    def pv_volume_action(guid: str, vid: str) -> Any:
        ws(guid)
        S.volume_action(guid, vid, json_body())
        return jsonify({}), 202

    @app.post(P + "/volumes/onboarding")
    def pv_onboard(guid: str) -> Any:
        ws(guid)
        task = S.onboard(guid, json_body())
        # VolumeOnboardingCreateResponse: the task's id and description, nothing more
        return jsonify(_present({"description": task["description"], "id": task["id"]})), 202

    @app.get(P + "/volumes/onboarding")
    def pv_onboardings(guid: str) -> Any:
        ws(guid)
        # VolumeOnboardings lists VolumeOnboardingCommon under ``onboardings``
        return jsonify({"onboardings": [_present({k: t[k] for k in ("id", "description", "status", "inputVolumes")})
                                        for t in S.onboardings[guid].values()]})

    @app.get(P + "/volumes/onboarding/<oid>")
    def pv_onboarding(guid: str, oid: str) -> Any:
        ws(guid)
        task = S.onboardings[guid].get(oid)
        if task is None:
            raise FakeError(404, "not found", f"volume onboarding {oid} not found")
        return jsonify(_present(task))  # progress 0 is omitted (omitempty), as IBM's server encodes it

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

    def _group_view(grp: dict[str, Any], details: bool = False) -> dict[str, Any]:
        # VolumeGroup has no member list: only VolumeGroupDetails (``.../details``) carries volumeIDs.
        view = {k: grp[k] for k in ("id", "name", "auxiliary", "replicationSites", "statusDescription")}
        view.update(_present({k: grp[k] for k in ("status", "consistencyGroupName", "replicationStatus",
                                                  "storagePool")}))
        if details:
            view["volumeIDs"] = list(grp["volumeIDs"])
        return view

    def _groups(guid: str) -> list[dict[str, Any]]:
        return [x for x in S.groups[guid].values() if not x.get("deleted")]

    @app.get(P + "/volume-groups")
    def pv_groups(guid: str) -> Any:
        ws(guid)
        return jsonify({"volumeGroups": [_group_view(x) for x in _groups(guid)]})

    @app.get(P + "/volume-groups/details")
    def pv_groups_details(guid: str) -> Any:
        ws(guid)
        return jsonify({"volumeGroups": [_group_view(x, details=True) for x in _groups(guid)]})

    @app.post(P + "/volume-groups")
    def pv_group_create(guid: str) -> Any:
        ws(guid)
        grp, partial = S.create_group(guid, json_body())
        answer = {"id": grp["id"], "name": grp["name"], "status": grp["status"]}
        if partial:  # 206 Partial Content: created, but not with every volume asked for
            return jsonify({**answer, "statusDetail": grp["statusDetail"]}), 206
        return jsonify(answer), 202

    @app.get(P + "/volume-groups/<gid>")
    def pv_group(guid: str, gid: str) -> Any:
        ws(guid)
        return jsonify(_group_view(S.group(guid, gid)))

    @app.get(P + "/volume-groups/<gid>/details")
    def pv_group_details(guid: str, gid: str) -> Any:
        ws(guid)
        return jsonify(_group_view(S.group(guid, gid), details=True))

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
        # VolumeGroupStorageDetails: numOfvols and sync are omitempty (absent at 0 / "")
        return jsonify({"consistencyGroupName": grp["consistencyGroupName"],
                        **_present({"cyclePeriodSeconds": rel["cycle"], "cyclingMode": "multi",
                                    "numOfvols": len(grp["volumeIDs"]), "primaryRole": rel["primaryRole"],
                                    "replicationType": "global", "state": state}),
                        "remoteCopyRelationshipNames": [f"rcrel-{v[:12]}" for v in grp["volumeIDs"]]})

    @app.get(P + "/volume-groups/<gid>/remote-copy-relationships")
    def pv_relationships(guid: str, gid: str) -> Any:
        ws(guid)
        grp = S.group(guid, gid)
        rel = S.relations[grp["consistencyGroupName"]]
        rows = []
        for vid in grp["volumeIDs"]:
            vol = S.volumes[guid].get(vid) or {}
            rows.append({"name": f"rcrel-{vid[:12]}", "remoteCopyID": vid, **_present({
                "consistencyGroupName": grp["consistencyGroupName"], "copyType": "global", "cyclingMode": "multi",
                "masterVolumeName": vol.get("masterVolumeName") or vol.get("name"),
                "auxVolumeName": vol.get("auxVolumeName"), "primaryRole": rel["primaryRole"],
                "state": rel["state"], "progress": rel["progress"], "freezeTime": iso(S.freeze_time(rel))})})
        return jsonify({"id": gid, "remoteCopyRelationships": rows})

    @app.get(P + "/pvm-instances")
    def pv_vms(guid: str) -> Any:
        ws(guid)
        return jsonify({"pvmInstances": [vm_view(guid, vm, reference=True) for vm in S.vms[guid].values()]})

    @app.post(P + "/pvm-instances")
    def pv_vm_create(guid: str) -> Any:
        ws(guid)
        # pcloud.pvminstances.post answers a PVMInstanceList (201: created, still BUILD)
        return jsonify([vm_view(guid, vm) for vm in S.create_vms(guid, json_body())]), 201

    @app.delete(P + "/pvm-instances/<vm_id>")
    def pv_vm_delete(guid: str, vm_id: str) -> Any:
        ws(guid)
        S.delete_vm(guid, vm_id)  # 404 unknown, 410 while a deletion is under way
        return jsonify({}), 200  # pcloud.pvminstances.delete answers 200 (Object)

    @app.get(P + "/pvm-instances/<vm_id>")
    def pv_vm(guid: str, vm_id: str) -> Any:
        ws(guid)
        vm = S.vms[guid].get(vm_id)
        if vm is None:
            raise FakeError(404, "not found", f"pvm-instance {vm_id} not found")
        return jsonify(vm_view(guid, vm))

    @app.post(P + "/pvm-instances/<vm_id>/action")
    def pv_vm_action(guid: str, vm_id: str) -> Any:
        ws(guid)
        S.vm_action(guid, vm_id, json_body().get("action"))
        return jsonify({}), 200  # pcloud.pvminstances.action.post answers 200 (Object)

    @app.get(P + "/jobs/<job_id>")
    def pv_job(guid: str, job_id: str) -> Any:
        ws(guid)
        job = S.jobs[guid].get(job_id)
        if job is None:
            raise FakeError(404, "not found", f"job {job_id} not found")
        return jsonify(job)
