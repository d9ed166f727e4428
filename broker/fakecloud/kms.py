"""The fake Key Protect: key rings, root keys, wrap and unwrap, rotation and dual-authorisation policies.

Under ``/api/v2/...``; the ``Bluemix-Instance`` header names the Key Protect instance. As IBM documents it
(ibm-cloud-docs/key-protect; the ``keyprotect`` SDK's models give the answers' fields):

- ``GET /keys`` lists keys sorted by id, ``limit`` of them (default 200, 1-5000) from ``offset``;
  ``collectionTotal`` counts the keys of this page. ``GET /key_rings`` likewise (default 100, the ``default``
  ring included) and adds ``totalCount`` (all rings) when asked with ``totalCount=true``.
- Dual-authorisation delete: ``setKeyForDeletion`` is the first approver's authorisation, for seven days
  (``FakeState.kms_dual_auth_seconds``); the key shows it as ``dualAuthDelete.keySetForDeletion`` and
  ``authExpiration``. ``DELETE`` then succeeds only for another identity (another IAM id in the token);
  without an authorisation, after it expired, or by the identity that gave it: ``409 AUTHORIZATIONS_NOT_MET``.
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

# Key Protect's page sizes: GET /keys and GET /key_rings without ``limit``, and the largest ``limit``
KEYS_PAGE, RINGS_PAGE, MAX_PAGE = 200, 100, 5000


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

    def deletion_auth(key: dict[str, Any]) -> dict[str, Any] | None:
        """The first approver's authorisation to delete ``key`` while it lasts: {"by": iam_id, "until": ts}."""
        auth = key.get("deletion_auth")
        return auth if auth and auth["until"] > time.time() else None

    def key_view(key: dict[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in key.items() if k not in ("versions", "rotation", "deletion_auth")
                and v is not None}
        view["keyVersion"] = {"id": key["versions"][-1]["id"], "creationDate": key["versions"][-1]["creationDate"]}
        dual: dict[str, Any] = {"enabled": key["dualAuthDelete"]["enabled"]}
        if dual["enabled"]:
            auth = deletion_auth(key)
            dual["keySetForDeletion"] = auth is not None
            if auth is not None:
                dual["authExpiration"] = iso(auth["until"])
        view["dualAuthDelete"] = dual
        return view

    def page_args(default: int) -> tuple[int, int]:
        try:
            limit = int(request.args.get("limit", default))
            offset = int(request.args.get("offset", 0))
        except ValueError:
            limit = offset = -1
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise FakeError(400, "BAD_PARAM_ERR", f"Bad Request: limit must be 1-{MAX_PAGE} and offset at least 0")
        return limit, offset

    @app.get("/api/v2/key_rings")
    def kp_rings() -> Any:
        kp = S.kp(kp_id())
        limit, offset = page_args(RINGS_PAGE)
        rings = [{"id": "default", "createdBy": "IBM"}, *kp["rings"].values()]
        body = kp_collection("application/vnd.ibm.kms.key_ring+json", rings[offset:offset + limit])
        if request.args.get("totalCount") == "true":
            body["metadata"]["totalCount"] = len(rings)
        return jsonify(body)

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
        key = S.create_key(inst, request.headers.get("X-Kms-Key-Ring") or "default", res, g.claims["iam_id"])
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
        limit, offset = page_args(KEYS_PAGE)
        ring = request.headers.get("X-Kms-Key-Ring")
        keys = sorted((k for k in kp["keys"].values() if k["state"] in states and (not ring or k["keyRingID"] == ring)
                       and request.args.get("extractable") in (None, str(k["extractable"]).lower())),
                      key=lambda k: k["id"])
        return jsonify(kp_collection("application/vnd.ibm.kms.key+json",
                                     [key_view(k) for k in keys[offset:offset + limit]]))

    @app.get("/api/v2/keys/<key_id>")
    def kp_key(key_id: str) -> Any:
        return jsonify(kp_collection("application/vnd.ibm.kms.key+json", [key_view(S.kp_key(kp_id(), key_id))]))

    @app.get("/api/v2/keys/<key_id>/metadata")
    def kp_key_metadata(key_id: str) -> Any:
        view = {k: v for k, v in key_view(S.kp_key(kp_id(), key_id)).items() if k != "payload"}
        return jsonify(kp_collection("application/vnd.ibm.kms.key+json", [view]))

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
                raise FakeError(409, "NOT_DUAL_AUTH_ERR", "Conflict: The key is not dual auth enabled and cannot be "
                                                          "set for deletion")
            key["deletion_auth"] = ({"by": g.claims["iam_id"], "until": time.time() + S.kms_dual_auth_seconds}
                                    if action == "setKeyForDeletion" else None)
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
        caller = g.claims["iam_id"]
        if key["dualAuthDelete"]["enabled"]:
            auth = deletion_auth(key)
            if auth is None or auth["by"] == caller:
                # IBM counts the authorisations of distinct identities: the first approver's DELETE adds none
                raise FakeError(409, "AUTHORIZATIONS_NOT_MET", "Conflict: 1 prior authorization(s) are required for "
                                                               "deletion: Key could not be deleted. Please see "
                                                               "`reasons` for more details.")
        key.update(state=5, deleted=True, deletionDate=iso(time.time()), deletedBy=caller, deletion_auth=None)
        return jsonify(kp_collection("application/vnd.ibm.kms.key+json", [key_view(key)]))
