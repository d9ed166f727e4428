"""IBM Cloud's extension: ``GET/PUT /bluemix_v1/service_instances/{id}`` (enable/disable an instance).

A disabled instance refuses binds but keeps replicating: suspending an account for billing must not
lose anyone's disaster recovery.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, request

from broker.api import parsing as p
from broker.api.osb import caller, service
from broker.domain.errors import BadRequest

bp = Blueprint("ibm", __name__)


@bp.before_request
def _before() -> None:
    current_app.extensions["drbroker"].authenticate()
    g.originating_identity = p.originating_identity(request.headers.get("X-Broker-API-Originating-Identity"))


@bp.get("/bluemix_v1/service_instances/<instance_id>")
def get_state(instance_id: str) -> Response:
    return jsonify(service().instance_state(p.decode_id(instance_id, "instance_id")))


@bp.put("/bluemix_v1/service_instances/<instance_id>")
def put_state(instance_id: str) -> tuple[str, int]:
    iid = p.decode_id(instance_id, "instance_id")
    body = p.json_body(request.get_data())
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        raise BadRequest("enabled: is required and must be a boolean")
    details = {k: body.get(k) for k in ("initiator_id", "reason_code") if isinstance(body.get(k), str)}
    service().set_instance_state(iid, enabled, caller(), details)
    return "", 204
