"""The fake Key Protect: key rings, root keys, wrap and unwrap, rotation and dual-authorisation policies.

Under ``/api/v2/...``; the ``Bluemix-Instance`` header names the Key Protect instance.
"""

from __future__ import annotations

import re
import time
from typing import Any

from flask import Flask, g, jsonify, request

from broker.fakecloud.common import json_body
from broker.fakecloud.state import (
    FakeError,
    FakeState,
    iso,
)


def register(app: Flask, S: FakeState) -> None:
    """Add this service's routes to the fake's ``app``, serving from ``S``."""
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
        return json_body()

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
        body = json_body()
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
