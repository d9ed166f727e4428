"""The fake DR Automation API: ``manage_dr`` deployments, their last operation, GRS pairs, managed VMs.

A DR Automation instance is a resource-controller instance (``platform``) whose deployment lives here.
"""

from __future__ import annotations

import hashlib
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
        password = str(body["orchestrator_password"])
        if not (8 <= len(password) <= 256 and re.search(r"[a-z]", password) and re.search(r"[A-Z]", password)
                and re.search(r"[0-9]", password)):
            raise FakeError(400, "invalid_password", "orchestrator_password: 8 to 256 characters with an upper-case "
                                                     "letter, a lower-case letter and a digit")
        if body["orchestrator_location_type"] not in ("off-premises", "on-premises"):
            raise FakeError(400, "invalid_location_type", "orchestrator_location_type: off-premises or on-premises")
        if not body.get("ssh_key_name") and not (body.get("secret") and body.get("secret_group")):
            raise FakeError(400, "missing_credentials", "ssh_key_name, or secret and secret_group (Secrets Manager), "
                                                        "is required to deploy the orchestrator")
        ha = bool(body.get("orchestrator_ha"))
        for field, wanted in (("orchestrator_network_ids", True), ("standby_orchestrator_network_ids", ha)):
            ids = body.get(field)
            if wanted and (not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids)):
                raise FakeError(400, "missing_network", f"{field}: the network IDs of the "
                                                        f"{'standby ' if field.startswith('standby') else ''}"
                                                        "orchestrator VM are required")
        if ha and not body.get("standby_orchestrator_name"):
            raise FakeError(400, "missing_parameter", "standby_orchestrator_name is required with orchestrator_ha")
        return jsonify(S.deploy(guid, body, request.args.get("stand_by_redeploy") == "true")), 202

    @app.put("/drautomation/v1/apikey/<guid>")
    def dra_apikey(guid: str) -> Any:
        """The customer API key the orchestrator works with (``update_apikey``): kept as a fingerprint only."""
        dra_instance(guid)
        body = json_body()
        need(body, "api_key")
        key = str(body["api_key"])
        if not key or key.startswith("invalid"):
            raise FakeError(400, "invalid_api_key", "api_key: the API key could not be validated")
        dep = S.deployments.get(guid)
        if dep is None:
            raise FakeError(404, "deployment_not_found", f"DR Automation instance {guid} has no orchestrator")
        dep["api_key_sha256"] = hashlib.sha256(key.encode()).hexdigest()
        dep["api_key_updates"] = int(dep.get("api_key_updates") or 0) + 1
        return jsonify({"id": f"apikey-{guid[:8]}", "status": "Active", "description": "API key validated"})

    # every field of IBM's ServiceInstanceStatus is required: before a deployment they are empty
    STATUS_FIELDS = ("deployment_name", "last_updated_orchestrator_deployment_time",
                     "last_updated_standby_orchestrator_deployment_time", "orch_standby_node_addition_status",
                     "orchestrator_cluster_message", "orchestrator_config_status", "primary_description",
                     "primary_error_description", "primary_ip_address", "primary_orchestrator_status",
                     "recovery_location", "standby_description", "standby_error_description", "standby_ip_address",
                     "standby_status")

    @app.get("/drautomation/v1/last_operation/<guid>")
    def dra_last_operation(guid: str) -> Any:
        inst = dra_instance(guid)
        dep = S.deployments.get(guid) or {}
        out: dict[str, Any] = {"crn": inst["crn"], **{f: "" for f in STATUS_FIELDS}, "mfa_enabled": "false",
                               "orchestrator_ha": False, "plan_name": "DR Automation Public Plan",
                               "resource_group": inst["resource_group_id"], "status": "Provisioned",
                               "is_api_key_expired": False}
        out.update({k: v for k, v in dep.items() if k in out and v is not None})
        if dep:
            ws = S.workspaces.get(dep["orchestrator_workspace"]) or {}
            out["recovery_location"] = ws.get("zone", "")
            out["orchestrator_cluster_message"] = "cluster healthy" if dep.get("status") == "Active" else ""
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
