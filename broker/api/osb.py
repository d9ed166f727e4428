"""The OSB HTTP surface (``/v2``): parse, call the service layer, shape the response. Nothing else.

Checks run in the order our checklist fixes: API version (412), then authentication (401), then the
request itself (400/422).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from broker.api import parsing as p
from broker.api import versions
from broker.api.hosts import trusted_base_url
from broker.domain.errors import VersionNotSupported
from broker.services.osb import BrokerService
from broker.services.requests import (
    BindRequest,
    Caller,
    DeprovisionRequest,
    LastOperation,
    ProvisionRequest,
    Result,
    UnbindRequest,
    UpdateRequest,
)
from broker.services.rotation import ROTATION_MIN_VERSION

MIN_MINOR, MAX_MINOR = versions.MIN_MINOR, versions.MAX_MINOR

_CODES = {"created": 201, "accepted": 202, "ok": 200}

bp = Blueprint("osb", __name__)


def service() -> BrokerService:
    return current_app.extensions["drbroker"].service


def check_version() -> None:
    header = request.headers.get("X-Broker-API-Version")
    version = p.parse_version(header)
    if version is None or version[0] != 2 or not MIN_MINOR <= version[1] <= MAX_MINOR:
        shown = "missing" if not header else "not supported"
        raise VersionNotSupported(f"X-Broker-API-Version is {shown}; this broker speaks 2.{MIN_MINOR} to "
                                  f"2.{MAX_MINOR} (use 2.{MAX_MINOR})")
    g.osb_minor = version[1]  # answers carry only the fields this version defines (broker/api/versions.py)


def minor() -> int:
    return g.get("osb_minor", MAX_MINOR)


@bp.before_request
def _before() -> None:
    check_version()
    current_app.extensions["drbroker"].authenticate()
    g.originating_identity = p.originating_identity(request.headers.get("X-Broker-API-Originating-Identity"))


def caller() -> Caller:
    # The request identity is echoed whole, but stored within its column (255 characters), which
    # PostgreSQL enforces: an over-long header must not turn an accepted request into a 500.
    ident = g.get("request_identity")
    return Caller(principal=g.get("principal"), originating_identity=g.get("originating_identity"),
                  request_identity=ident[:p.MAX_ID_LENGTH] if ident else None, base_url=trusted_base_url())


def respond(kind: str, result: Result) -> tuple[Response, int]:
    body = {k: v for k, v in result.body.items() if v is not None}
    return jsonify(versions.prune(kind, body, minor())), _CODES[result.status]


def respond_last_operation(kind: str, report: LastOperation) -> Response:
    body: dict[str, Any] = {"state": report.state}
    if report.description:
        body["description"] = report.description
    if report.instance_usable is not None:
        body["instance_usable"] = report.instance_usable
    if report.update_repeatable is not None:
        body["update_repeatable"] = report.update_repeatable
    response = jsonify(versions.prune(kind, body, minor()))
    if report.retry_after is not None:
        response.headers["Retry-After"] = str(report.retry_after)
    return response


@bp.get("/v2/catalog")
def catalog() -> Response:
    return Response(versions.catalog_json(service().catalog, minor()), mimetype="application/json")


@bp.put("/v2/service_instances/<instance_id>")
def provision(instance_id: str) -> tuple[Response, int]:
    iid = p.decode_id(instance_id, "instance_id")
    accepts = p.flag(request.args, "accepts_incomplete")
    body = p.check_body(p.json_body(request.get_data()), p.PROVISION_BODY)
    req = ProvisionRequest(
        instance_id=iid,
        service_id=body["service_id"],
        plan_id=body["plan_id"],
        accepts_incomplete=accepts,
        organization_guid=body.get("organization_guid"),
        space_guid=body.get("space_guid"),
        context=body.get("context") or {},
        parameters=body.get("parameters") or {},
        maintenance_version=p.maintenance_version(body),
        caller=caller(),
    )
    return respond("provision", service().provision(req))


@bp.patch("/v2/service_instances/<instance_id>")
def update(instance_id: str) -> tuple[Response, int]:
    iid = p.decode_id(instance_id, "instance_id")
    accepts = p.flag(request.args, "accepts_incomplete")
    body = p.check_body(p.json_body(request.get_data()), p.UPDATE_BODY)
    req = UpdateRequest(
        instance_id=iid,
        service_id=body["service_id"],
        plan_id=body.get("plan_id"),
        accepts_incomplete=accepts,
        parameters=body.get("parameters"),
        context=body.get("context") or {},
        maintenance_version=p.maintenance_version(body),
        previous_values=body.get("previous_values") or {},
        caller=caller(),
    )
    return respond("update", service().update(req))


@bp.delete("/v2/service_instances/<instance_id>")
def deprovision(instance_id: str) -> tuple[Response, int]:
    req = DeprovisionRequest(
        instance_id=p.decode_id(instance_id, "instance_id"),
        service_id=p.required_arg(request.args, "service_id"),
        plan_id=p.required_arg(request.args, "plan_id"),
        accepts_incomplete=p.flag(request.args, "accepts_incomplete"),
        caller=caller(),
    )
    return respond("deprovision", service().deprovision(req))


@bp.get("/v2/service_instances/<instance_id>/last_operation")
def last_operation(instance_id: str) -> Response:
    iid = p.decode_id(instance_id, "instance_id")
    report = service().last_operation(iid, request.args.get("operation") or None)
    return respond_last_operation("last_operation", report)


@bp.get("/v2/service_instances/<instance_id>")
def get_instance(instance_id: str) -> Response:
    body = service().get_instance(p.decode_id(instance_id, "instance_id"))
    return jsonify(versions.prune("fetch_instance", body, minor()))


@bp.put("/v2/service_instances/<instance_id>/service_bindings/<binding_id>")
def bind(instance_id: str, binding_id: str) -> tuple[Response, int]:
    iid = p.decode_id(instance_id, "instance_id")
    bid = p.decode_id(binding_id, "binding_id")
    accepts = p.flag(request.args, "accepts_incomplete")
    raw = p.json_body(request.get_data())
    rotating = raw.get("predecessor_binding_id") is not None  # OSB 2.17 rotation (broker/services/rotation.py)
    body = p.check_body(raw, p.ROTATE_BODY if rotating else p.BIND_BODY)
    if rotating:
        p.require_version(request.headers.get("X-Broker-API-Version"), ROTATION_MIN_VERSION,
                          "predecessor_binding_id")
    req = BindRequest(
        instance_id=iid,
        binding_id=bid,
        service_id=body.get("service_id", ""),
        plan_id=body.get("plan_id", ""),
        predecessor_binding_id=body.get("predecessor_binding_id"),
        accepts_incomplete=accepts,
        parameters=body.get("parameters") or {},
        bind_resource=body.get("bind_resource") or {},
        context=body.get("context") or {},
        app_guid=body.get("app_guid"),
        caller=caller(),
    )
    return respond("bind", service().bind(req))


@bp.delete("/v2/service_instances/<instance_id>/service_bindings/<binding_id>")
def unbind(instance_id: str, binding_id: str) -> tuple[Response, int]:
    req = UnbindRequest(
        instance_id=p.decode_id(instance_id, "instance_id"),
        binding_id=p.decode_id(binding_id, "binding_id"),
        service_id=p.required_arg(request.args, "service_id"),
        plan_id=p.required_arg(request.args, "plan_id"),
        accepts_incomplete=p.flag(request.args, "accepts_incomplete"),
        caller=caller(),
    )
    return respond("unbind", service().unbind(req))


@bp.get("/v2/service_instances/<instance_id>/service_bindings/<binding_id>/last_operation")
def last_binding_operation(instance_id: str, binding_id: str) -> Response:
    iid = p.decode_id(instance_id, "instance_id")
    bid = p.decode_id(binding_id, "binding_id")
    return respond_last_operation(
        "binding_last_operation", service().last_binding_operation(iid, bid, request.args.get("operation") or None))


@bp.get("/v2/service_instances/<instance_id>/service_bindings/<binding_id>")
def get_binding(instance_id: str, binding_id: str) -> Response:
    iid = p.decode_id(instance_id, "instance_id")
    bid = p.decode_id(binding_id, "binding_id")
    return jsonify(versions.prune("fetch_binding", service().get_binding(iid, bid), minor()))
