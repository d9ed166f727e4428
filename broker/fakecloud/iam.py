"""The fake IAM: tokens (``POST /identity/token``), service IDs and API keys (IAM identity), access policies.

Registered on the fake's app by ``app.create_app``; the token route is the one the middleware does not
check a token on.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from flask import Flask, g, jsonify, request

from broker.fakecloud.common import json_body, need
from broker.fakecloud.state import (
    FakeError,
    FakeState,
    iso,
)
from broker.orchestrators.simulated.seed import DEMO_ACCOUNT as DEMO_ACCOUNT_ID

# IAM resource attribute names (IamPolicyManagementV1 ``ResourceAttribute.name``; IBM Cloud docs, "Assigning
# access by using the API"), and the roles the services the broker grants on define: a role a service does not
# define is refused (400), as IAM does.
RESOURCE_ATTRIBUTES = {"accountId", "serviceName", "serviceInstance", "region", "resourceType", "resource",
                       "resourceGroupId", "serviceType", "organizationId", "spaceId"}
PLATFORM_ROLES = {"Viewer", "Operator", "Editor", "Administrator"}
SERVICE_ROLES: dict[str, set[str] | None] = {
    "power-iaas": {"Reader", "Manager"},
    "kms": {"Reader", "ReaderPlus", "Writer", "Manager", "KeyPurge"},
}


def register(app: Flask, S: FakeState) -> None:
    """Add this service's routes to the fake's ``app``, serving from ``S``."""
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

    # IAM identity -----------------------------------------------------------------------------------
    # Lists page as IAM does: ``pagesize`` (default 20, 1-100) and an opaque ``pagetoken``; an answer with
    # more to come carries ``next``, the URL of the next page (``pagetoken=...``).
    @app.post("/v1/serviceids/")
    def iam_sid_create() -> Any:
        body = json_body()
        need(body, "account_id", "name")
        sid = f"ServiceId-{uuid.uuid4()}"
        now = iso(time.time())
        rec = {"id": sid, "iam_id": f"iam-{sid}", "account_id": body["account_id"], "name": body["name"],
               "description": body.get("description") or "",
               "unique_instance_crns": body.get("unique_instance_crns") or [],
               "crn": f"crn:v1:bluemix:public:iam-identity::a/{body['account_id']}::serviceid:{sid}",
               "entity_tag": "1-fake", "locked": False, "created_at": now, "modified_at": now}
        S.service_ids[sid] = rec
        return jsonify(rec), 201

    @app.get("/v1/serviceids/")
    def iam_sids() -> Any:
        need(request.args, "account_id")
        rows = [s for s in S.service_ids.values() if s["account_id"] == request.args["account_id"]
                and (not request.args.get("name") or s["name"] == request.args["name"])]
        return jsonify(_identity_page(rows, "serviceids"))

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
        body = json_body()
        need(body, "name", "iam_id")
        owner = next((s for s in S.service_ids.values() if s["iam_id"] == body["iam_id"]), None)
        if body["iam_id"].startswith("iam-ServiceId-") and owner is None:
            raise FakeError(404, "not_found", f"identity {body['iam_id']} not found")
        kid = f"ApiKey-{uuid.uuid4()}"
        account = body.get("account_id") or (owner or {}).get("account_id") or DEMO_ACCOUNT_ID
        now = iso(time.time())
        rec = {"id": kid, "entity_tag": "1-fake",
               "crn": f"crn:v1:bluemix:public:iam-identity::a/{account}::apikey:{kid}",
               "locked": False, "disabled": False, "created_at": now, "created_by": g.claims.get("iam_id", ""),
               "modified_at": now, "name": body["name"], "description": body.get("description") or "",
               "iam_id": body["iam_id"], "account_id": account,
               "apikey": body.get("apikey") or uuid.uuid4().hex + uuid.uuid4().hex,
               "store_value": bool(body.get("store_value"))}
        S.api_keys[kid] = rec
        return jsonify(_api_key(rec, with_value=True)), 201

    @app.get("/v1/apikeys")
    def iam_keys() -> Any:
        rows = [_api_key(rec) for rec in S.api_keys.values()
                if (not request.args.get("iam_id") or rec["iam_id"] == request.args["iam_id"])
                and (not request.args.get("account_id") or rec["account_id"] == request.args["account_id"])]
        return jsonify(_identity_page(rows, "apikeys"))

    @app.delete("/v1/apikeys/<kid>")
    def iam_key_delete(kid: str) -> Any:
        if S.api_keys.pop(kid, None) is None:
            raise FakeError(404, "not_found", f"API key {kid} not found")
        return "", 204

    # IAM policies ---------------------------------------------------------------------------------
    # The list pages with ``limit`` (default 50, 1-100) and ``start``; an answer with more to come
    # carries ``next: {href, start}``.
    @app.post("/v1/policies")
    def pol_create() -> Any:
        body = json_body()
        need(body, "type", "subjects", "roles", "resources")
        if body["type"] not in ("access", "authorization"):
            raise FakeError(400, "invalid_type", "type must be access or authorization")
        subject = {a.get("name"): a.get("value") for a in (body["subjects"][0].get("attributes") or [])}
        resource = {a.get("name"): a.get("value") for a in (body["resources"][0].get("attributes") or [])}
        if not subject.get("iam_id") and not subject.get("access_group_id"):
            raise FakeError(400, "invalid_subject", "subjects[0] needs an iam_id or access_group_id attribute")
        if not resource.get("accountId"):
            raise FakeError(400, "invalid_resource", "resources[0] needs an accountId attribute")
        unknown = sorted(set(resource) - RESOURCE_ATTRIBUTES)
        if unknown:
            raise FakeError(400, "invalid_resource", f"resources[0].attributes: unknown attribute name(s) "
                                                     f"{', '.join(unknown)}")
        roles = [r.get("role_id") for r in body["roles"]]
        if not roles or not all(str(r).startswith("crn:v1:bluemix:public:iam::::") for r in roles):
            raise FakeError(400, "invalid_role", "roles[].role_id must be IAM role CRNs")
        service = resource.get("serviceName")
        for role in roles:
            kind, _, name = str(role).removeprefix("crn:v1:bluemix:public:iam::::").partition(":")
            allowed = PLATFORM_ROLES if kind == "role" else SERVICE_ROLES.get(str(service)) if kind == "serviceRole" \
                else set()
            if allowed is not None and name not in allowed:
                raise FakeError(400, "invalid_role", f"role {role} is not a role of service {service}")
        for p in S.policies.values():
            if (p["subjects"], p["resources"], p["roles"]) == (body["subjects"], body["resources"], body["roles"]):
                raise FakeError(409, "policy_conflict_error", f"Failed to create policy: an identical policy {p['id']} "
                                                              "exists")
        pid = str(uuid.uuid4())
        now = iso(time.time())
        who = g.claims.get("iam_id", "")
        rec = {"id": pid, "type": body["type"], "subjects": body["subjects"], "roles": body["roles"],
               "resources": body["resources"], "description": body.get("description") or "", "state": "active",
               "href": f"{request.host_url}v1/policies/{pid}", "created_at": now, "created_by_id": who,
               "last_modified_at": now, "last_modified_by_id": who}
        S.policies[pid] = rec
        S.policy_accounts[pid] = resource["accountId"]
        return jsonify(rec), 201

    @app.get("/v1/policies")
    def pol_list() -> Any:
        need(request.args, "account_id")
        rows = [p for p in S.policies.values() if S.policy_accounts.get(p["id"]) == request.args["account_id"]
                and (not request.args.get("type") or p["type"] == request.args["type"])]
        limit = _size("limit", 50)
        offset = _offset("start")
        out: dict[str, Any] = {"limit": limit, "first": {"href": _link(limit=limit, start=None)},
                               "policies": rows[offset:offset + limit]}
        if offset > 0:
            prev = _token(max(0, offset - limit))
            out["previous"] = {"href": _link(start=prev), "start": prev}
        if offset + limit < len(rows):
            nxt = _token(offset + limit)
            out["next"] = {"href": _link(start=nxt), "start": nxt}
        return jsonify(out)

    @app.delete("/v1/policies/<pid>")
    def pol_delete(pid: str) -> Any:
        if S.policies.pop(pid, None) is None:
            raise FakeError(404, "policy_not_found", f"policy {pid} not found")
        S.policy_accounts.pop(pid, None)
        return "", 204


# paging -------------------------------------------------------------------------------------------
def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _offset(arg: str) -> int:
    token = request.args.get(arg)
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        return max(0, int(text.removeprefix("offset:")))
    except (ValueError, UnicodeDecodeError):
        raise FakeError(400, "invalid_token", f"{arg}: not a page token of this collection") from None


def _size(arg: str, default: int) -> int:
    raw = request.args.get(arg)
    try:
        size = default if raw in (None, "") else int(raw)
    except ValueError:
        raise FakeError(400, "invalid_parameter", f"{arg} must be an integer") from None
    if not 1 <= size <= 100:
        raise FakeError(400, "invalid_parameter", f"{arg} must be between 1 and 100")
    return size


def _link(**changes: Any) -> str:
    """This request's URL with some query arguments changed (``None``: removed)."""
    args = {k: v for k, v in request.args.items()}
    for k, v in changes.items():
        if v is None:
            args.pop(k, None)
        else:
            args[k] = str(v)
    return request.base_url + ("?" + urlencode(args) if args else "")


def _identity_page(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    size = _size("pagesize", 20)
    offset = _offset("pagetoken")
    out: dict[str, Any] = {"offset": offset, "limit": size, "first": _link(pagetoken=None)}
    if offset > 0:
        out["previous"] = _link(pagetoken=_token(max(0, offset - size)))
    if offset + size < len(rows):
        out["next"] = _link(pagetoken=_token(offset + size))
    out[key] = rows[offset:offset + size]
    return out


def _api_key(rec: dict[str, Any], with_value: bool = False) -> dict[str, Any]:
    """An API key as IAM answers: its value only at creation (and later only if it was stored)."""
    out = {k: v for k, v in rec.items() if k != "store_value"}
    if not (with_value or rec.get("store_value")):
        out["apikey"] = ""
    return out
