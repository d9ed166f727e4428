"""``GET /openapi.json``: the broker's own API, the DR-action extension included, as OpenAPI 3.0.

The DR actions travel as OSB update parameters (``{"dr_action": {...}}``), so the extension is documented
on the PATCH operation with the schema the catalog enforces, and each plan's catalog metadata links here
(after the OSB "generic extensions" proposal: an ``extensions`` entry naming the document).
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from broker import __version__
from broker.api import parsing as p

bp = Blueprint("openapi", __name__)

_ERROR = {"type": "object", "required": ["error", "description"],
          "properties": {"error": {"type": "string"}, "description": {"type": "string"},
                         "instance_usable": {"type": "boolean"}, "update_repeatable": {"type": "boolean"}}}
_OP = {"type": "object", "properties": {"operation": {"type": "string", "maxLength": 10000}}}
_LAST_OP = {"type": "object", "required": ["state"],
            "properties": {"state": {"type": "string", "enum": ["in progress", "succeeded", "failed"]},
                           "description": {"type": "string"}, "instance_usable": {"type": "boolean"},
                           "update_repeatable": {"type": "boolean"}}}


def _json(schema: dict[str, Any] | str, description: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed request or invalid parameters (the description names the field)",
            401: "No or wrong credentials", 403: "A bearer token that is not this broker's",
            404: "No such instance or binding", 409: "Exists with different attributes",
            410: "Gone", 412: "X-Broker-API-Version missing or not 2.12-2.17", 413: "Body over 1 MiB",
            422: "AsyncRequired, ConcurrencyError, MaintenanceInfoConflict, or a state that forbids it",
            502: "The backend failed", 503: "Unavailable"}
    return {str(c): _json("Error", text[c]) for c in codes}


def build_document(dr_action_schema: dict[str, Any] | None) -> dict[str, Any]:
    common = [{"$ref": "#/components/parameters/Version"}, {"$ref": "#/components/parameters/RequestIdentity"},
              {"$ref": "#/components/parameters/OriginatingIdentity"}]
    iid = {"name": "instance_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 255},
           "description": "Instance id; IBM Cloud's URL-encoded CRNs (with %2F) are accepted"}
    bid = {**iid, "name": "binding_id", "description": "Binding id"}
    accepts = {"name": "accepts_incomplete", "in": "query", "schema": {"type": "boolean"}}
    sid_q = {"name": "service_id", "in": "query", "required": True, "schema": {"type": "string"}}
    pid_q = {"name": "plan_id", "in": "query", "required": True, "schema": {"type": "string"}}
    op_q = {"name": "operation", "in": "query", "schema": {"type": "string"}}
    retry_after = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds until the running "
                                                                                 "step should finish"}}
    # the schemas the broker checks the bodies with (broker/api/parsing.py), not a restatement of them
    update_body: dict[str, Any] = copy.deepcopy(p.UPDATE_BODY)
    if dr_action_schema:
        update_body["x-dr-action"] = {"description": "A day-2 DR action: send parameters {\"dr_action\": {...}} "
                                                     "alone; it runs asynchronously like any update.",
                                      "schema": dr_action_schema}
    provision_body, bind_body = p.PROVISION_BODY, p.BIND_BODY
    inst_path = "/v2/service_instances/{instance_id}"
    bind_path = inst_path + "/service_bindings/{binding_id}"
    return {
        "openapi": "3.0.3",
        "info": {"title": "powervs-dr-broker", "version": __version__,
                 "description": "Open Service Broker API 2.12-2.17 for PowerVS disaster recovery, with IBM Cloud's "
                                "/bluemix_v1 extension and DR day-2 actions as update parameters."},
        "security": [{"basic": []}, {"bearerCrn": []}],
        "paths": {
            "/healthz": {"get": {"summary": "Liveness and readiness (no authentication)", "security": [],
                                 "responses": {"200": {"description": "Healthy"},
                                               "503": {"description": "Database unreachable"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (public when DRBROKER_METRICS_PUBLIC=true)",
                                 "responses": {"200": {"description": "Prometheus text format"},
                                               **_errors(401)}}},
            "/v2/catalog": {"get": {"summary": "Services and plans", "parameters": common,
                                    "responses": {"200": {"description": "The catalog"}, **_errors(401, 412)}}},
            inst_path: {
                "put": {"summary": "Provision (asynchronous)", "parameters": [*common, iid, accepts],
                        "requestBody": {"required": True, "content": {"application/json": {"schema": provision_body}}},
                        "responses": {"200": {"description": "Identical instance exists"},
                                      "202": _json(_OP, "Accepted; dashboard_url and operation"),
                                      **_errors(400, 401, 409, 412, 413, 422)}},
                "patch": {"summary": "Update parameters or plan, or run a DR action (asynchronous)",
                          "parameters": [*common, iid, accepts],
                          "requestBody": {"required": True, "content": {"application/json": {"schema": update_body}}},
                          "responses": {"200": {"description": "No change"}, "202": _json(_OP, "Accepted"),
                                        **_errors(400, 401, 404, 412, 413, 422)}},
                "delete": {"summary": "Deprovision (asynchronous)", "parameters": [*common, iid, sid_q, pid_q, accepts],
                           "responses": {"202": _json(_OP, "Accepted"), **_errors(400, 401, 410, 412, 422)}},
                "get": {"summary": "Fetch instance, with live DR state in metadata.attributes",
                        "parameters": [*common, iid],
                        "responses": {"200": {"description": "The instance"}, **_errors(401, 404, 412, 422)}},
            },
            inst_path + "/last_operation": {"get": {
                "summary": "Instance operation state", "parameters": [*common, iid, op_q],
                "responses": {"200": {**_json("LastOperation", "State"), "headers": retry_after},
                              **_errors(400, 401, 404, 412)}}},
            bind_path: {
                "put": {"summary": "Bind (synchronous; 202 with accepts_incomplete=true)",
                        "parameters": [*common, iid, bid, accepts],
                        "requestBody": {"required": True, "content": {"application/json": {"schema": bind_body}}},
                        "responses": {"200": {"description": "Identical binding exists"},
                                      "201": {"description": "Credentials"}, "202": _json(_OP, "Accepted"),
                                      **_errors(400, 401, 404, 409, 412, 422, 502, 503)}},
                "delete": {"summary": "Unbind", "parameters": [*common, iid, bid, sid_q, pid_q, accepts],
                           "responses": {"200": {"description": "Unbound"}, "202": _json(_OP, "Accepted"),
                                         **_errors(400, 401, 410, 412, 422)}},
                "get": {"summary": "Fetch binding", "parameters": [*common, iid, bid],
                        "responses": {"200": {"description": "The binding"}, **_errors(401, 404, 412)}},
            },
            bind_path + "/last_operation": {"get": {
                "summary": "Binding operation state", "parameters": [*common, iid, bid, op_q],
                "responses": {"200": {**_json("LastOperation", "State"), "headers": retry_after},
                              **_errors(400, 401, 404, 412)}}},
            "/bluemix_v1/service_instances/{instance_id}": {
                "get": {"summary": "IBM Cloud: enabled/active/last_active", "parameters": [iid],
                        "responses": {"200": {"description": "State"}, **_errors(401, 404)}},
                "put": {"summary": "IBM Cloud: enable or disable (a disabled instance keeps replicating)",
                        "parameters": [iid],
                        "requestBody": {"required": True, "content": {"application/json": {"schema": {
                            "type": "object", "required": ["enabled"], "properties": {
                                "enabled": {"type": "boolean"}, "initiator_id": {"type": "string"},
                                "reason_code": {"type": "string"}}}}}},
                        "responses": {"204": {"description": "Done"}, **_errors(400, 401, 404)}},
            },
            "/dashboard/instances/{instance_id}": {"get": {
                "summary": "The instance's DR dashboard (HTML)", "parameters": [iid],
                "responses": {"200": {"description": "HTML page"}, **_errors(401, 404)}}},
            "/dashboard/instances/{instance_id}/report": {"get": {
                "summary": "The instance's DR report over a period (docs/reports.md): printable HTML, JSON or CSV",
                "parameters": [iid, *({"name": n, "in": "query", "schema": {"type": "string"}, "description": d}
                                      for n, d in (("days", "the period: N days before until (default 30)"),
                                                   ("since", "start of the period, ISO 8601"),
                                                   ("until", "end of the period, ISO 8601 (default now)"),
                                                   ("format", "html (default), json or csv")))],
                "responses": {"200": {"description": "The report"}, **_errors(400, 401, 404)}}},
        },
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"},
                                "bearerCrn": {"type": "http", "scheme": "bearer", "bearerFormat": "IBM IAM JWT"}},
            "parameters": {
                "Version": {"name": "X-Broker-API-Version", "in": "header", "required": True,
                            "schema": {"type": "string", "example": "2.17"}},
                "RequestIdentity": {"name": "X-Broker-API-Request-Identity", "in": "header",
                                    "schema": {"type": "string"}, "description": "Echoed in the response"},
                "OriginatingIdentity": {"name": "X-Broker-API-Originating-Identity", "in": "header",
                                        "schema": {"type": "string"}, "description": "<platform> <base64 JSON>"},
            },
            "schemas": {"Error": _ERROR, "LastOperation": _LAST_OP},
        },
    }


@bp.before_request
def _before() -> None:
    current_app.extensions["drbroker"].authenticate()


@bp.get("/openapi.json")
def openapi() -> Response:
    runtime = current_app.extensions["drbroker"]
    schema = None
    for service in runtime.catalog.services:
        for plan in service.plans:
            update = plan.parameter_schema("update") or {}
            schema = schema or (update.get("properties") or {}).get("dr_action")
    return jsonify(build_document(schema))
