"""The fake IBM Cloud platform services: global catalog, resource controller and usage metering.

The resource controller holds the DR Automation instances (``dra`` serves their API); usage metering keeps
the records the broker sends, with IBM's 409 for a record already accepted.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from flask import Flask, g, jsonify, request

from broker.fakecloud.common import json_body, need
from broker.fakecloud.state import (
    DRA_PLAN_ID,
    DRA_SERVICE_ID,
    FakeError,
    FakeState,
    iso,
)
from broker.orchestrators.simulated.seed import DEMO_ACCOUNT as DEMO_ACCOUNT_ID


def register(app: Flask, S: FakeState) -> None:
    """Add this service's routes to the fake's ``app``, serving from ``S``."""
    # global catalog -------------------------------------------------------------------------------
    def gc_entry(eid: str, name: str, kind: str, display: str, parent: str | None = None) -> dict[str, Any]:
        entry = {"id": eid, "name": name, "kind": kind, "active": True, "disabled": False,
                 "overview_ui": {"en": {"display_name": display, "description": display, "long_description": display}},
                 "images": {"image": "https://cache.globalcatalog.cloud.ibm.com/static/cache/power-dr.svg"},
                 "tags": ["ibm_created", "power"], "provider": {"email": "dra@ibm.com", "name": "IBM"},
                 "url": f"{request.host_url}api/v1/{eid}", "children_url": f"{request.host_url}api/v1/{eid}/%2A"}
        if parent:
            entry["parent_id"] = parent
        return entry

    def gc_page(entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {"offset": 0, "limit": 50, "count": len(entries), "resource_count": len(entries), "resources": entries}

    @app.get("/api/v1/")
    @app.get("/api/v1")
    def gc_list() -> Any:
        q = request.args.get("q") or ""
        entries = [gc_entry(DRA_SERVICE_ID, "power-dr-automation", "service", "PowerVS DR Automation")]
        m = re.match(r"name:(\S+)", q)
        if m:
            entries = [e for e in entries if e["name"] == m.group(1)]
        return jsonify(gc_page(entries))

    @app.get("/api/v1/<entry>/<kind>")
    def gc_children(entry: str, kind: str) -> Any:
        if entry != DRA_SERVICE_ID:
            raise FakeError(404, "not_found", f"catalog entry {entry} not found")
        plans = [gc_entry(DRA_PLAN_ID, "power-virtual-server-dr-automation", "plan", "DR Automation Public Plan",
                          parent=DRA_SERVICE_ID)]
        return jsonify(gc_page([p for p in plans if kind in ("*", p["kind"])]))

    # resource controller --------------------------------------------------------------------------
    # An instance's states are IBM's: active, inactive, failed, provisioning, pre_provisioning,
    # pending_reclamation, removed (the SDK's enum also has pending_removal). A deleted instance goes to
    # ``pending_reclamation`` (reclamation keeps it restorable for a while) and stays there until it is
    # reclaimed; its DR Automation deployment is torn down at once. The list answers only ``active`` and
    # ``provisioning`` instances unless ``state`` names another, and pages with ``limit``/``start``.
    def rc_find(ident: str) -> dict[str, Any]:
        inst = S.resource_instances.get(ident) or next(
            (r for r in S.resource_instances.values() if r["crn"] == ident or r["id"] == ident), None)
        if inst is None:
            raise FakeError(404, "not_found", f"resource instance {ident} not found")
        return inst

    def rc_view(inst: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in inst.items() if k != "tags"}  # tags are the tagging service's, not RC's

    def rc_op(kind: str, state: str, description: str) -> dict[str, Any]:
        return {"type": kind, "state": state, "async": state == "in progress", "description": description,
                "cancelable": False, "poll": state == "in progress"}

    @app.post("/v2/resource_instances")
    def rc_create() -> Any:
        body = json_body()
        need(body, "name", "target", "resource_group", "resource_plan_id")
        if body["resource_plan_id"] != DRA_PLAN_ID:
            raise FakeError(400, "invalid_plan", f"plan {body['resource_plan_id']} is not in the catalog")
        if body["target"] != "global":
            raise FakeError(400, "invalid_target", "power-dr-automation deploys to target 'global'")
        guid = str(uuid.uuid4())
        acct = g.claims.get("account", {}).get("bss", DEMO_ACCOUNT_ID)
        crn = f"crn:v1:bluemix:public:power-dr-automation:global:a/{acct}:{guid}::"
        now = iso(time.time())
        inst = {"id": crn, "guid": guid, "url": f"/v2/resource_instances/{guid}", "created_at": now,
                "updated_at": now, "created_by": g.claims.get("iam_id", ""), "crn": crn, "name": body["name"],
                "region_id": "global", "account_id": acct, "resource_plan_id": DRA_PLAN_ID,
                "resource_group_id": body["resource_group"], "resource_id": DRA_SERVICE_ID,
                "target_crn": "crn:v1:bluemix:public:globalcatalog::::deployment:power-dr-automation-global",
                "state": "active", "type": "service_instance", "allow_cleanup": bool(body.get("allow_cleanup")),
                "locked": False, "last_operation": rc_op("create", "succeeded", "Completed create instance "
                                                                                   "operation"),
                "tags": body.get("tags") or []}
        S.resource_instances[guid] = inst
        return jsonify(rc_view(inst)), 201

    @app.get("/v2/resource_instances")
    def rc_list() -> Any:
        wanted = request.args.get("state")
        states = {wanted} if wanted else {"active", "provisioning"}
        rows = [rc_view(r) for r in S.resource_instances.values()
                if (not request.args.get("name") or r["name"] == request.args["name"]) and r["state"] in states]
        try:
            limit = int(request.args.get("limit") or 100)
            offset = int(request.args.get("start") or 0)
        except ValueError:
            raise FakeError(400, "invalid_parameter", "limit and start must be integers") from None
        page = rows[offset:offset + limit]
        next_url = ""  # IBM's model requires the field as a string; an empty one: no more pages
        if offset + limit < len(rows):
            next_url = f"/v2/resource_instances?{urlencode({**request.args, 'start': str(offset + limit)})}"
        return jsonify({"rows_count": len(page), "next_url": next_url, "resources": page})

    @app.get("/v2/resource_instances/<ident>")
    def rc_get(ident: str) -> Any:
        return jsonify(rc_view(rc_find(ident)))

    @app.delete("/v2/resource_instances/<ident>")
    def rc_delete(ident: str) -> Any:
        inst = rc_find(ident)
        if inst["state"] in ("removed", "pending_removal", "pending_reclamation"):
            raise FakeError(410, "gone", f"resource instance {ident} is already deleted ({inst['state']})")
        now = time.time()
        S.remove_deployment(inst["guid"])
        inst.update(state="pending_reclamation", updated_at=iso(now), deleted_at=iso(now),
                    deleted_by=g.claims.get("iam_id", ""), scheduled_reclaim_at=iso(now + 7 * 86400),
                    last_operation=rc_op("delete", "succeeded", "Completed delete instance operation"))
        return "", 202

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
