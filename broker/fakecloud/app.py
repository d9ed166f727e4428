"""The fake IBM Cloud's HTTP surface: the subset of IBM's APIs the ibmcloud backend uses, each under its real
path, with the documented request checks, status codes and each service's own error body:

- IAM token: ``POST /identity/token`` (API key and trusted-profile assume grants)
- PowerVS: ``/pcloud/v1/cloud-instances/{id}/...`` (+ ``/pcloud/v2`` volume clones); ``CRN`` header required
- Key Protect: ``/api/v2/key_rings``, ``/api/v2/keys...``; ``Bluemix-Instance`` header required
- IAM identity and policies: ``/v1/serviceids/``, ``/v1/apikeys``, ``/v1/policies``
- resource controller ``/v2/resource_instances``; global catalog ``/api/v1``
- DR Automation ``/drautomation/v1/...``; usage metering ``/v4/metering/resources/{id}/usage``

Not IBM's: ``/_fake/...`` to inject faults (``POST /_fake/faults``), read the state and the request log.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from flask import Flask, Response, g, jsonify, request

from broker.domain.sites import GRS_PAIRS
from broker.fakecloud.state import (
    CYCLE_PERIOD_SECONDS,
    DEMO_KMS_INSTANCE_ID,
    DRA_PLAN_ID,
    DRA_SERVICE_ID,
    FakeError,
    FakeState,
    Fault,
    iso,
)
from broker.orchestrators.simulated.seed import DEMO_ACCOUNT as DEMO_ACCOUNT_ID

_SERVICES = (
    ("/identity/", "iam_token"), ("/pcloud/", "powervs"), ("/api/v2/", "kms"), ("/v1/serviceids", "iam_identity"),
    ("/v1/apikeys", "iam_identity"), ("/v1/policies", "iam_policy"), ("/v2/resource_instances", "resource_controller"),
    ("/api/v1", "global_catalog"), ("/drautomation/", "dra"), ("/v4/metering/", "metering"), ("/_fake/", "admin"),
)


def service_of(path: str) -> str:
    return next((svc for prefix, svc in _SERVICES if path.startswith(prefix)), "unknown")


def error_body(service: str, status: int, code: str, message: str, tid: str) -> dict[str, Any]:
    if service == "powervs":
        return {"code": status, "description": message, "error": code, "message": message}
    if service == "kms":
        return {"metadata": {"collectionType": "application/vnd.ibm.kms.error+json", "collectionTotal": 1},
                "resources": [{"errorMsg": message, "reasons": [
                    {"code": code, "message": message, "status": status,
                     "moreInfo": "https://cloud.ibm.com/apidocs/key-protect"}]}]}
    if service == "iam_token":
        return {"errorCode": code, "errorMessage": message, "context": {"requestId": tid}}
    return {"trace": tid, "errors": [{"code": code, "message": message}], "status_code": status}


def _json() -> dict[str, Any]:
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise FakeError(400, "bad_request", "the body must be a JSON object")
    return body


def create_app(state: FakeState) -> Flask:
    app = Flask("fakecloud")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    S = state

    # middleware -----------------------------------------------------------------------------------
    @app.before_request
    def _enter() -> Any:
        g.tid = f"fake-{uuid.uuid4()}"
        g.service = service_of(request.path)
        if g.service == "admin":
            return None
        with S.lock:
            fault = next((f for f in S.faults if f.matches(g.service, request.method, request.path)), None)
            if fault is not None:
                fault.count -= 1
                fault.hits += 1
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status:
                headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
                raise FakeError(fault.status, "injected_fault", f"injected fault {fault.id}: HTTP {fault.status}",
                                headers)
        S.lock.acquire()
        g.locked = True
        S.tick()
        if g.service not in ("iam_token", "unknown"):
            g.claims = S.check_token(request.headers.get("Authorization"))
        return None

    @app.teardown_request
    def _leave(_exc: BaseException | None) -> None:
        if g.get("locked"):
            g.locked = False
            S.lock.release()

    @app.after_request
    def _tag(response: Response) -> Response:
        tid = g.get("tid") or f"fake-{uuid.uuid4()}"
        response.headers["X-Global-Transaction-Id"] = tid
        if request.headers.get("Transaction-Id"):
            response.headers["Transaction-Id"] = request.headers["Transaction-Id"]
        if g.get("service") == "kms":
            response.headers["Correlation-Id"] = request.headers.get("Correlation-Id") or tid
        if g.get("service") != "admin":
            S.requests.append({"method": request.method, "path": request.path, "status": response.status_code,
                               "transaction_id": tid, "service": g.get("service"), "at": time.time()})
            del S.requests[:-2000]
        return response

    @app.errorhandler(FakeError)
    def _fake_error(exc: FakeError) -> Any:
        body = error_body(g.get("service") or service_of(request.path), exc.status, exc.code, exc.message,
                          g.get("tid", ""))
        resp = jsonify(body)
        resp.status_code = exc.status
        for k, v in exc.headers.items():
            resp.headers[k] = v
        return resp

    @app.errorhandler(404)
    def _not_found(_e: Any) -> Any:
        return _fake_error(FakeError(404, "not_found", f"no route {request.method} {request.path}"))

    @app.errorhandler(405)
    def _not_allowed(_e: Any) -> Any:
        return _fake_error(FakeError(405, "method_not_allowed", f"{request.method} not allowed on {request.path}"))

    # IAM token ------------------------------------------------------------------------------------
    @app.post("/identity/token")
    def iam_token() -> Any:
        if not request.content_type or "application/x-www-form-urlencoded" not in request.content_type:
            raise FakeError(400, "BXNIM0109E", "Property missing or empty: the body must be form-encoded")
        form = request.form
        grant = form.get("grant_type")
        if grant == "urn:ibm:params:oauth:grant-type:apikey":
            key = form.get("apikey") or ""
            if not key:
                raise FakeError(400, "BXNIM0109E", "Property missing or empty. Property name: apikey")
            if key.startswith("invalid"):
                raise FakeError(400, "BXNIM0415E", "Provided API key could not be found.")
            owner = next((k for k in S.api_keys.values() if k["apikey"] == key), None)
            iam_id = owner["iam_id"] if owner else "iam-ServiceId-fake-broker"
            return jsonify(S.issue_token(iam_id, DEMO_ACCOUNT_ID, iam_id))
        if grant == "urn:ibm:params:oauth:grant-type:assume":
            S.check_token("Bearer " + (form.get("access_token") or ""))
            profile = form.get("profile_id") or form.get("profile_crn") or form.get("profile_name")
            if not profile:
                raise FakeError(400, "BXNIM0109E", "Property missing or empty: profile_id")
            if not str(profile).startswith(("Profile-", "crn:")) and not form.get("account"):
                raise FakeError(400, "BXNIM0513E", f"Trusted profile {profile} not found")
            return jsonify(S.issue_token(f"iam-{profile}", DEMO_ACCOUNT_ID, str(profile)))
        raise FakeError(400, "BXNIM0109E", f"unsupported grant_type {grant!r}")

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
        S.volume_action(guid, vid, _json())
        return jsonify({}), 202

    @app.post(P + "/volumes/onboarding")
    def pv_onboard(guid: str) -> Any:
        ws(guid)
        task = S.onboard(guid, _json())
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
        return jsonify(S.clone(guid, _json())), 202

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
        grp = S.create_group(guid, _json())
        return jsonify({"id": grp["id"], "name": grp["name"], "status": grp["status"]}), 202

    @app.get(P + "/volume-groups/<gid>")
    def pv_group(guid: str, gid: str) -> Any:
        ws(guid)
        grp = S.group(guid, gid)
        return jsonify({**_group_view(grp), "volumeIDs": list(grp["volumeIDs"])})

    @app.put(P + "/volume-groups/<gid>")
    def pv_group_update(guid: str, gid: str) -> Any:
        ws(guid)
        S.update_group(guid, gid, _json())
        return jsonify({}), 202

    @app.delete(P + "/volume-groups/<gid>")
    def pv_group_delete(guid: str, gid: str) -> Any:
        ws(guid)
        S.delete_group(guid, gid)
        return jsonify({}), 202

    @app.post(P + "/volume-groups/<gid>/action")
    def pv_group_action(guid: str, gid: str) -> Any:
        ws(guid)
        S.group_action(guid, gid, _json())
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
        S.vm_action(guid, vm_id, _json().get("action"))
        return jsonify({}), 202

    @app.get(P + "/jobs/<job_id>")
    def pv_job(guid: str, job_id: str) -> Any:
        ws(guid)
        job = S.jobs[guid].get(job_id)
        if job is None:
            raise FakeError(404, "not found", f"job {job_id} not found")
        return jsonify(job)

    # Key Protect ----------------------------------------------------------------------------------
    def kp_id() -> str:
        inst = request.headers.get("Bluemix-Instance")
        S.kp(inst)
        return str(inst)

    def kp_collection(kind: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
        return {"metadata": {"collectionType": kind, "collectionTotal": len(resources)}, "resources": resources}

    def kp_body(content_type: str) -> dict[str, Any]:
        if (request.content_type or "").split(";")[0].strip() != content_type:
            raise FakeError(415, "UNSUPPORTED_MEDIA_TYPE_ERR", f"Unsupported Media Type: want {content_type}")
        return _json()

    def key_view(key: dict[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in key.items() if k not in ("versions", "rotation")}
        view["keyVersion"] = {"id": key["versions"][-1]["id"], "creationDate": key["versions"][-1]["creationDate"]}
        return view

    @app.get("/api/v2/key_rings")
    def kp_rings() -> Any:
        kp = S.kp(kp_id())
        return jsonify(kp_collection("application/vnd.ibm.kms.key_ring+json",
                                     [{"id": "default", "creationDate": None, "createdBy": "IBM"},
                                      *kp["rings"].values()]))

    @app.post("/api/v2/key_rings/<ring>")
    def kp_ring_create(ring: str) -> Any:
        kp = S.kp(kp_id())
        if not re.fullmatch(r"[a-zA-Z0-9-]{2,100}", ring):
            raise FakeError(400, "KEY_RING_ID_INVALID_ERR", "Bad Request: key ring id must be 2-100 of a-zA-Z0-9-")
        if ring == "default" or ring in kp["rings"]:
            raise FakeError(409, "KEY_RING_CONFLICT_ERR", f"Conflict: key ring {ring} already exists")
        if len(kp["rings"]) >= 50:
            raise FakeError(400, "KEY_RING_LIMIT_EXCEEDED_ERR", "Bad Request: at most 50 key rings per instance")
        kp["rings"][ring] = {"id": ring, "creationDate": iso(time.time()), "createdBy": g.claims["iam_id"]}
        return "", 201

    @app.delete("/api/v2/key_rings/<ring>")
    def kp_ring_delete(ring: str) -> Any:
        kp = S.kp(kp_id())
        if ring not in kp["rings"]:
            raise FakeError(404, "KEY_RING_NOT_FOUND_ERR", f"Not Found: key ring {ring} does not exist")
        keys = [k for k in kp["keys"].values() if k["keyRingID"] == ring]
        if any(k["state"] != 5 for k in keys) or (keys and request.args.get("force") != "true"):
            raise FakeError(409, "KEY_RING_KEYS_NOT_DELETED", f"Conflict: key ring {ring} still holds keys that are "
                                                              "not destroyed (or destroyed keys without force=true)")
        del kp["rings"][ring]
        for k in keys:
            k["keyRingID"] = "default"
        return "", 204

    def _create_key() -> Any:
        inst = kp_id()
        body = kp_body("application/vnd.ibm.kms.key+json")
        res = (body.get("resources") or [None])[0]
        if (body.get("metadata") or {}).get("collectionType") != "application/vnd.ibm.kms.key+json" or not res:
            raise FakeError(400, "BAD_BODY_ERR", "Bad Request: metadata.collectionType and resources[0] are required")
        key = S.create_key(inst, request.headers.get("X-Kms-Key-Ring") or "default", res)
        prefer = request.headers.get("Prefer") or "return=representation"
        return jsonify(kp_collection("application/vnd.ibm.kms.key+json",
                                     [key_view(key)] if "representation" in prefer else [{"id": key["id"]}])), 201

    app.post("/api/v2/keys")(_create_key)
    app.add_url_rule("/api/v2/keys_with_policy_overrides", "kp_create_with_policies", _create_key,
                     methods=["POST"])

    @app.get("/api/v2/keys")
    def kp_keys() -> Any:
        kp = S.kp(kp_id())
        states = {int(s) for s in (request.args.get("state") or "0,1,2,3").split(",") if s.strip().isdigit()}
        keys = [key_view(k) for k in kp["keys"].values() if k["state"] in states]
        return jsonify(kp_collection("application/vnd.ibm.kms.key+json", keys))

    @app.get("/api/v2/keys/<key_id>")
    def kp_key(key_id: str) -> Any:
        return jsonify(kp_collection("application/vnd.ibm.kms.key+json", [key_view(S.kp_key(kp_id(), key_id))]))

    @app.post("/api/v2/keys/<key_id>/actions/<action>")
    def kp_action(key_id: str, action: str) -> Any:
        inst = kp_id()
        if action == "wrap":
            return jsonify(S.wrap(inst, key_id, kp_body("application/vnd.ibm.kms.key_action_wrap+json")))
        if action == "unwrap":
            return jsonify(S.unwrap(inst, key_id, kp_body("application/vnd.ibm.kms.key_action_unwrap+json")))
        key = S.kp_key(inst, key_id, active=True)
        if action == "rotate":
            if key["extractable"]:
                raise FakeError(400, "KEY_ACTION_INVALID_ERR", "Bad Request: only root keys can be rotated")
            S._new_version(key)
            return "", 204
        if action in ("setKeyForDeletion", "unsetKeyForDeletion"):
            if not key["dualAuthDelete"]["enabled"]:
                raise FakeError(409, "NOT_DUAL_AUTH_ERR", "Conflict: the key has no dual authorization policy")
            key["dualAuthDelete"]["keySetForDeletion"] = action == "setKeyForDeletion"
            return "", 204
        raise FakeError(400, "INVALID_ACTION_ERR", f"Bad Request: unknown key action {action}")

    @app.put("/api/v2/keys/<key_id>/policies")
    def kp_policies(key_id: str) -> Any:
        key = S.kp_key(kp_id(), key_id)
        body = _json()
        res = (body.get("resources") or [{}])[0]
        rotation = res.get("rotation") or {}
        months = rotation.get("interval_month")
        if request.args.get("policy") not in (None, "rotation", "dualAuthDelete") or \
                (months is not None and (not isinstance(months, int) or not 1 <= months <= 12)):
            raise FakeError(400, "BAD_BODY_ERR", "Bad Request: rotation.interval_month must be 1-12")
        if months is not None:
            key["rotation"] = {"enabled": bool(rotation.get("enabled", True)), "interval_month": months}
        if "dualAuthDelete" in res:
            if key["dualAuthDelete"]["enabled"] and not res["dualAuthDelete"].get("enabled"):
                raise FakeError(409, "POLICY_DUAL_AUTH_ERR", "Conflict: a dual authorization policy cannot be removed")
            key["dualAuthDelete"]["enabled"] = bool(res["dualAuthDelete"].get("enabled"))
        return jsonify(kp_collection("application/vnd.ibm.kms.policy+json",
                                     [{"type": "application/vnd.ibm.kms.policy+json", "rotation": key["rotation"],
                                       "dualAuthDelete": {"enabled": key["dualAuthDelete"]["enabled"]}}]))

    @app.delete("/api/v2/keys/<key_id>")
    def kp_key_delete(key_id: str) -> Any:
        key = S.kp_key(kp_id(), key_id)
        if key["state"] == 5:
            raise FakeError(410, "KEY_DELETED_ERR", f"Gone: key {key_id} has already been deleted")
        if key["dualAuthDelete"]["enabled"] and not key["dualAuthDelete"]["keySetForDeletion"]:
            raise FakeError(409, "PREV_KEY_DEL_AUTH_REQ_ERR", "Conflict: the key has a dual authorization policy and "
                                                              "was not set for deletion")
        key.update(state=5, deleted=True, deletionDate=iso(time.time()))
        return jsonify(kp_collection("application/vnd.ibm.kms.key+json", [key_view(key)]))

    # IAM identity -----------------------------------------------------------------------------------
    def need(args: dict[str, Any], *names: str) -> None:
        missing = [n for n in names if not args.get(n)]
        if missing:
            raise FakeError(400, "missing_parameter", f"missing required parameter(s): {', '.join(missing)}")

    @app.post("/v1/serviceids/")
    def iam_sid_create() -> Any:
        body = _json()
        need(body, "account_id", "name")
        sid = f"ServiceId-{uuid.uuid4()}"
        rec = {"id": sid, "iam_id": f"iam-{sid}", "account_id": body["account_id"], "name": body["name"],
               "description": body.get("description"), "unique_instance_crns": body.get("unique_instance_crns") or [],
               "crn": f"crn:v1:bluemix:public:iam-identity::a/{body['account_id']}::serviceid:{sid}",
               "entity_tag": "1-fake", "locked": False, "created_at": iso(time.time())}
        S.service_ids[sid] = rec
        return jsonify(rec), 201

    @app.get("/v1/serviceids/")
    def iam_sids() -> Any:
        need(request.args, "account_id")
        rows = [s for s in S.service_ids.values() if s["account_id"] == request.args["account_id"]
                and (not request.args.get("name") or s["name"] == request.args["name"])]
        return jsonify({"offset": 0, "limit": len(rows), "serviceids": rows})

    @app.delete("/v1/serviceids/<sid>")
    def iam_sid_delete(sid: str) -> Any:
        rec = S.service_ids.pop(sid, None)
        if rec is None:
            raise FakeError(404, "not_found", f"service ID {sid} not found")
        for kid in [k for k, v in S.api_keys.items() if v["iam_id"] == rec["iam_id"]]:
            del S.api_keys[kid]
        return "", 204

    @app.post("/v1/apikeys")
    def iam_key_create() -> Any:
        body = _json()
        need(body, "name", "iam_id")
        if body["iam_id"].startswith("iam-ServiceId-") and not any(s["iam_id"] == body["iam_id"]
                                                                    for s in S.service_ids.values()):
            raise FakeError(404, "not_found", f"identity {body['iam_id']} not found")
        kid = f"ApiKey-{uuid.uuid4()}"
        rec = {"id": kid, "name": body["name"], "iam_id": body["iam_id"], "account_id": body.get("account_id"),
               "description": body.get("description"), "apikey": uuid.uuid4().hex + uuid.uuid4().hex,
               "crn": f"crn:v1:bluemix:public:iam-identity::a/{body.get('account_id')}::apikey:{kid}",
               "created_at": iso(time.time()), "locked": False}
        S.api_keys[kid] = rec
        return jsonify(rec), 201

    @app.get("/v1/apikeys")
    def iam_keys() -> Any:
        rows = [{k: v for k, v in rec.items() if k != "apikey"} for rec in S.api_keys.values()
                if (not request.args.get("iam_id") or rec["iam_id"] == request.args["iam_id"])
                and (not request.args.get("account_id") or rec["account_id"] == request.args["account_id"])]
        return jsonify({"offset": 0, "limit": len(rows), "apikeys": rows})

    @app.delete("/v1/apikeys/<kid>")
    def iam_key_delete(kid: str) -> Any:
        if S.api_keys.pop(kid, None) is None:
            raise FakeError(404, "not_found", f"API key {kid} not found")
        return "", 204

    # IAM policies ---------------------------------------------------------------------------------
    @app.post("/v1/policies")
    def pol_create() -> Any:
        body = _json()
        need(body, "type", "subjects", "roles", "resources")
        if body["type"] not in ("access", "authorization"):
            raise FakeError(400, "invalid_type", "type must be access or authorization")
        subject = {a.get("name"): a.get("value") for a in (body["subjects"][0].get("attributes") or [])}
        resource = {a.get("name"): a.get("value") for a in (body["resources"][0].get("attributes") or [])}
        if not subject.get("iam_id") and not subject.get("access_group_id"):
            raise FakeError(400, "invalid_subject", "subjects[0] needs an iam_id or access_group_id attribute")
        if not resource.get("accountId"):
            raise FakeError(400, "invalid_resource", "resources[0] needs an accountId attribute")
        roles = [r.get("role_id") for r in body["roles"]]
        if not roles or not all(str(r).startswith("crn:v1:bluemix:public:iam::::") for r in roles):
            raise FakeError(400, "invalid_role", "roles[].role_id must be IAM role CRNs")
        for p in S.policies.values():
            if (p["subjects"], p["resources"], p["roles"]) == (body["subjects"], body["resources"], body["roles"]):
                raise FakeError(409, "policy_conflict_error", f"Failed to create policy: an identical policy {p['id']} "
                                                              "exists")
        pid = str(uuid.uuid4())
        rec = {"id": pid, "type": body["type"], "subjects": body["subjects"], "roles": body["roles"],
               "resources": body["resources"], "description": body.get("description"), "state": "active",
               "href": f"/v1/policies/{pid}", "created_at": iso(time.time()), "account_id": resource["accountId"]}
        S.policies[pid] = rec
        return jsonify(rec), 201

    @app.get("/v1/policies")
    def pol_list() -> Any:
        need(request.args, "account_id")
        rows = [p for p in S.policies.values() if p["account_id"] == request.args["account_id"]
                and (not request.args.get("type") or p["type"] == request.args["type"])]
        return jsonify({"policies": rows})

    @app.delete("/v1/policies/<pid>")
    def pol_delete(pid: str) -> Any:
        if S.policies.pop(pid, None) is None:
            raise FakeError(404, "policy_not_found", f"policy {pid} not found")
        return "", 204

    # global catalog -------------------------------------------------------------------------------
    @app.get("/api/v1/")
    @app.get("/api/v1")
    def gc_list() -> Any:
        q = request.args.get("q") or ""
        entries = [{"id": DRA_SERVICE_ID, "name": "power-dr-automation", "kind": "service", "active": True,
                    "overview_ui": {"en": {"display_name": "PowerVS DR Automation"}}}]
        m = re.match(r"name:(\S+)", q)
        if m:
            entries = [e for e in entries if e["name"] == m.group(1)]
        return jsonify({"offset": 0, "limit": 50, "count": len(entries), "resource_count": len(entries),
                        "resources": entries})

    @app.get("/api/v1/<entry>/<kind>")
    def gc_children(entry: str, kind: str) -> Any:
        if entry != DRA_SERVICE_ID:
            raise FakeError(404, "not_found", f"catalog entry {entry} not found")
        plans = [{"id": DRA_PLAN_ID, "name": "power-virtual-server-dr-automation", "kind": "plan", "active": True,
                  "parent_id": DRA_SERVICE_ID}]
        return jsonify({"offset": 0, "limit": 50, "count": 1, "resource_count": 1,
                        "resources": [p for p in plans if kind in ("*", p["kind"])]})

    # resource controller --------------------------------------------------------------------------
    def rc_find(ident: str) -> dict[str, Any]:
        inst = S.resource_instances.get(ident) or next(
            (r for r in S.resource_instances.values() if r["crn"] == ident or r["id"] == ident), None)
        if inst is None:
            raise FakeError(404, "not_found", f"resource instance {ident} not found")
        return inst

    @app.post("/v2/resource_instances")
    def rc_create() -> Any:
        body = _json()
        need(body, "name", "target", "resource_group", "resource_plan_id")
        if body["resource_plan_id"] != DRA_PLAN_ID:
            raise FakeError(400, "invalid_plan", f"plan {body['resource_plan_id']} is not in the catalog")
        if body["target"] != "global":
            raise FakeError(400, "invalid_target", "power-dr-automation deploys to target 'global'")
        guid = str(uuid.uuid4())
        acct = g.claims.get("account", {}).get("bss", DEMO_ACCOUNT_ID)
        crn = f"crn:v1:bluemix:public:power-dr-automation:global:a/{acct}:{guid}::"
        inst = {"id": crn, "guid": guid, "crn": crn, "name": body["name"], "state": "active",
                "type": "service_instance", "resource_plan_id": DRA_PLAN_ID, "resource_id": DRA_SERVICE_ID,
                "resource_group_id": body["resource_group"], "account_id": acct, "tags": body.get("tags") or [],
                "target_crn": "crn:v1:bluemix:public:globalcatalog::::deployment:power-dr-automation-global",
                "created_at": iso(time.time()), "last_operation": {"type": "create", "state": "succeeded"}}
        S.resource_instances[guid] = inst
        return jsonify(inst), 201

    @app.get("/v2/resource_instances")
    def rc_list() -> Any:
        rows = [r for r in S.resource_instances.values()
                if (not request.args.get("name") or r["name"] == request.args["name"])
                and (r["state"] != "removed" or request.args.get("state") == "removed")]
        return jsonify({"rows_count": len(rows), "next_url": None, "resources": rows})

    @app.get("/v2/resource_instances/<ident>")
    def rc_get(ident: str) -> Any:
        return jsonify(rc_find(ident))

    @app.delete("/v2/resource_instances/<ident>")
    def rc_delete(ident: str) -> Any:
        inst = rc_find(ident)
        if inst["state"] in ("removed", "pending_removal"):
            raise FakeError(410, "gone", f"resource instance {ident} is already removed")
        inst.update(state="pending_removal", last_operation={"type": "delete", "state": "in progress"})

        def removed() -> None:
            S.remove_deployment(inst["guid"])
            inst.update(state="removed", last_operation={"type": "delete", "state": "succeeded"})
        S.schedule(1, removed)
        return "", 202

    # DR Automation --------------------------------------------------------------------------------
    def dra_instance(guid: str) -> dict[str, Any]:
        inst = S.resource_instances.get(guid)
        if inst is None or inst["state"] != "active":
            raise FakeError(404, "instance_not_found", f"DR Automation instance {guid} not found")
        return inst

    @app.post("/drautomation/v1/manage_dr/<guid>")
    def dra_manage(guid: str) -> Any:
        dra_instance(guid)
        if request.args.get("accepts_incomplete") != "true":
            raise FakeError(422, "AsyncRequired", "This service plan requires client support for asynchronous "
                                                  "service operations (accepts_incomplete=true)")
        body = _json()
        need(body, "location_id", "machine_type", "orchestrator_location_type", "orchestrator_name",
             "orchestrator_password", "orchestrator_workspace_id")
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", str(body["orchestrator_name"])):
            raise FakeError(400, "invalid_name", "orchestrator_name: letters, digits, - and _; at most 64")
        if len(str(body["orchestrator_password"])) > 256:
            raise FakeError(400, "invalid_password", "orchestrator_password: at most 256 characters")
        if body["orchestrator_location_type"] not in ("off-premises", "on-premises"):
            raise FakeError(400, "invalid_location_type", "orchestrator_location_type: off-premises or on-premises")
        return jsonify(S.deploy(guid, body, request.args.get("stand_by_redeploy") == "true")), 202

    @app.get("/drautomation/v1/last_operation/<guid>")
    def dra_last_operation(guid: str) -> Any:
        inst = dra_instance(guid)
        dep = S.deployments.get(guid)
        out = {"crn": inst["crn"], "plan_name": "DR Automation Public Plan",
               "resource_group": inst["resource_group_id"], "deployment_name": None,
               "status": "Provisioned", "mfa_enabled": "false"}
        if dep is not None:
            out.update({k: v for k, v in dep.items() if k not in ("managed", "backups", "orchestrator_workspace",
                                                                  "standby_workspace")})
        return jsonify(out)

    @app.get("/drautomation/v1/dr_grs_location_pairs/<guid>")
    def dra_pairs(guid: str) -> Any:
        dra_instance(guid)
        pairs: dict[str, str] = {}
        for pair in GRS_PAIRS:
            a, b = sorted(pair)
            pairs.setdefault(a, b)
            pairs.setdefault(b, a)
        return jsonify({"location_pairs": pairs})

    @app.get("/drautomation/v1/dr_managed_vms/<guid>")
    def dra_vms(guid: str) -> Any:
        dra_instance(guid)
        dep = S.deployments.get(guid) or {"managed": {}}
        return jsonify({"managed_vm_list": dep["managed"]})

    # usage metering -------------------------------------------------------------------------------
    @app.post("/v4/metering/resources/<resource_id>/usage")
    def metering(resource_id: str) -> Any:
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, list) or not body:
            raise FakeError(400, "invalid_body", "the body must be a non-empty array of resource usage records")
        results = []
        for rec in body:
            ok = (isinstance(rec, dict) and rec.get("resource_instance_id") and rec.get("plan_id")
                  and isinstance(rec.get("start"), int) and isinstance(rec.get("end"), int)
                  and rec["start"] <= rec["end"] and isinstance(rec.get("measured_usage"), list)
                  and all(isinstance(m, dict) and m.get("measure") and "quantity" in m for m in rec["measured_usage"]))
            if not ok:
                results.append({"status": 400, "location": "", "code": "invalid_usage",
                                "message": "each record needs resource_instance_id, plan_id, start <= end (ms) and "
                                           "measured_usage[{measure, quantity}]"})
                continue
            key = (resource_id, rec["resource_instance_id"], rec["start"], rec["end"])
            if key in S.usage:
                results.append({"status": 409, "location": S.usage[key]["location"], "code": "duplicate_usage",
                                "message": "a usage record for this instance and period was already accepted"})
                continue
            location = f"/v4/metering/resources/{resource_id}/usage/{uuid.uuid4()}"
            S.usage[key] = {"resource_id": resource_id, **rec, "location": location}
            results.append({"status": 201, "location": location})
        return jsonify({"resources": results}), 202

    # admin (not IBM's) ----------------------------------------------------------------------------
    @app.post("/_fake/faults")
    def add_fault() -> Any:
        body = _json()
        with S.lock:
            if body.get("expire_tokens"):
                S.revoked_before = time.time()
                return jsonify({"expired_tokens": True}), 201
            if body.get("fail_next"):
                kind = body["fail_next"]
                if kind not in ("onboarding", "clone", "dra_deploy", "volume_group"):
                    raise FakeError(400, "bad_fault", "fail_next: onboarding, clone, dra_deploy or volume_group")
                S.fail_next[kind] = S.fail_next.get(kind, 0) + int(body.get("count", 1))
                return jsonify({"fail_next": S.fail_next}), 201
            fault = Fault(id=len(S.faults) + 1, status=int(body.get("status", 503)), count=int(body.get("count", 1)),
                          service=body.get("service"), method=body.get("method"), path=body.get("path"),
                          retry_after=body.get("retry_after"), delay=float(body.get("delay", 0)))
            S.faults.append(fault)
            return jsonify(fault.__dict__), 201

    @app.get("/_fake/faults")
    def list_faults() -> Any:
        with S.lock:
            return jsonify({"faults": [f.__dict__ for f in S.faults], "fail_next": S.fail_next})

    @app.delete("/_fake/faults")
    def clear_faults() -> Any:
        with S.lock:
            S.faults.clear()
            S.fail_next.clear()
        return "", 204

    @app.post("/_fake/config")
    def config() -> Any:
        body = _json()
        with S.lock:
            if "step_seconds" in body:
                S.step_seconds = float(body["step_seconds"])
            if "token_ttl" in body:
                S.token_ttl = int(body["token_ttl"])
        return jsonify({"step_seconds": S.step_seconds, "token_ttl": S.token_ttl})

    @app.get("/_fake/requests")
    def requests_log() -> Any:
        with S.lock:
            return jsonify({"requests": list(S.requests)})

    @app.get("/_fake/usage")
    def usage_log() -> Any:
        with S.lock:
            return jsonify({"usage": list(S.usage.values())})

    @app.get("/_fake/state")
    def dump() -> Any:
        with S.lock:
            S.tick()
            return Response(json.dumps(S.snapshot(), default=str, indent=1), mimetype="application/json")

    @app.get("/_fake/healthz")
    def healthz() -> Any:
        return jsonify({"ok": True, "kms_instance_id": DEMO_KMS_INSTANCE_ID, "cycle_period_seconds":
                        CYCLE_PERIOD_SECONDS})

    return app

