"""The fake DR Automation API: ``manage_dr`` deployments, their last operation, GRS pairs, managed VMs.

A DR Automation instance is a resource-controller instance (``platform``) whose deployment lives here.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, jsonify, request

from broker.domain.sites import GRS_PAIRS
from broker.fakecloud.common import json_body, need
from broker.fakecloud.state import (
    FakeError,
    FakeState,
)


def register(app: Flask, S: FakeState) -> None:
    """Add this service's routes to the fake's ``app``, serving from ``S``."""
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
        body = json_body()
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
