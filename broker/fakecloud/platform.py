"""The fake IBM Cloud platform services: global catalog, resource controller and usage metering.

The resource controller holds the DR Automation instances (``dra`` serves their API); usage metering keeps
the records the broker sends, with IBM's 409 for a record already accepted.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

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
        body = json_body()
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
