"""The audit record of each mutating request, taken at the HTTP edge after the response is decided.

Every PUT, PATCH, DELETE and POST is recorded: who (principal, originating identity), what (action, ids,
parameter *names*, plan), which request identity and the outcome (status, OSB error code, description after
redaction). No value from a body is recorded.

Requests refused before anyone was authenticated (``broker.api.audit_refusals``: 401, 403, 404, 405, 412, 413
...) are also counted in ``drbroker_refused_requests_total`` and logged in one line (method, route, status,
error code, client address; never the path, a header or the body), and recorded in bounded form at a bounded
rate per client; their body is not read (the view never read it either). An error answered to an authenticated
principal (4xx, 5xx) is recorded in bounded form, never suppressed; accepted requests are recorded whole.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from typing import Any

from flask import Response, current_app, g, request

from broker.api import metrics
from broker.api import parsing as p
from broker.domain.errors import BrokerError
from broker.security.audit import AuditEvent, bounded
from broker.security.redaction import redact

log = logging.getLogger(__name__)
refused_log = logging.getLogger("drbroker.refused")

MUTATING = frozenset({"PUT", "PATCH", "DELETE", "POST"})
_ACTIONS = {"osb.provision": "provision", "osb.update": "update", "osb.deprovision": "deprovision",
            "osb.bind": "bind", "osb.unbind": "unbind", "ibm.put_state": "bluemix_v1"}
_OUTCOME = {200: "ok", 201: "created", 202: "accepted", 204: "ok"}
_WORD = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")
_MAX_NAMES = 100
_MAX_BODY = 1024 * 1024


def _names(value: Any, prefix: str = "", depth: int = 0) -> list[str]:
    """Dotted key paths of a JSON object (names only, never values), bounded in count and length."""
    out: list[str] = []
    if not isinstance(value, dict) or depth > 4:
        return out
    for key, sub in value.items():
        name = f"{prefix}{str(key)[:64]}"
        out.append(name)
        out.extend(_names(sub, name + ".", depth + 1))
        if len(out) >= _MAX_NAMES:
            break
    return sorted(out[:_MAX_NAMES])


def _body() -> dict[str, Any] | None:
    if (request.content_length or 0) > _MAX_BODY:
        return None  # the size limit refused it; do not read it
    try:
        body = json.loads(request.get_data(cache=True) or b"null")
    except Exception:  # not JSON, too deep, or a chunked body over the limit: nothing to record from it
        return None
    return body if isinstance(body, dict) else None


def _id(name: str) -> tuple[str | None, bool]:
    raw = (request.view_args or {}).get(name)
    if raw is None:
        return None, True
    try:
        return p.decode_id(raw, name), True
    except BrokerError:
        return None, False


def _originating_identity() -> dict[str, Any] | None:
    if "originating_identity" in g:
        return g.originating_identity
    try:
        return p.originating_identity(request.headers.get("X-Broker-API-Originating-Identity"))
    except BrokerError:
        return {"malformed": True}


def _action(body: dict[str, Any] | None) -> str:
    action = _ACTIONS.get(request.endpoint or "")
    if action is None:
        return f"unrouted:{request.method}"
    params = body.get("parameters") if body else None
    if action == "update" and isinstance(params, dict) and isinstance(params.get("dr_action"), dict):
        kind = params["dr_action"].get("type")
        return f"dr_action:{kind if isinstance(kind, str) and _WORD.match(kind) else 'invalid'}"
    if action == "bluemix_v1":
        enabled = body.get("enabled") if body else None
        return {True: "bluemix_v1:enable", False: "bluemix_v1:disable"}.get(enabled, "bluemix_v1:invalid") \
            if isinstance(enabled, bool) else "bluemix_v1:invalid"
    return action


def is_refused(response: Response) -> bool:
    """A mutating request answered 4xx before (or at) authentication: nobody was authenticated."""
    return request.method in MUTATING and 400 <= response.status_code < 500 and not g.get("principal")


def route() -> str:
    """The URL rule that matched (bounded: the app's own rules), never the path the client sent."""
    return request.url_rule.rule if request.url_rule is not None else "unrouted"


def _error_code(response: Response) -> str:
    data = response.get_json(silent=True) if response.is_json else None
    code = data.get("error") if isinstance(data, dict) else None
    return code[:64] if isinstance(code, str) and _CODE.match(code) else str(response.status_code)


def event_for(response: Response, *, read_body: bool = True) -> AuditEvent:
    body = _body() if read_body else None
    instance_id, ok_instance = _id("instance_id")
    binding_id, ok_binding = _id("binding_id")
    detail: dict[str, Any] = {"method": request.method,
                              "path": redact(request.path.encode("ascii", "backslashreplace").decode()[:300])}
    if not (ok_instance and ok_binding):
        detail["invalid_id"] = True
    if body is not None:
        # predecessor_binding_id: a rotation's record names the binding it succeeds
        for key in ("service_id", "plan_id", "predecessor_binding_id"):
            if isinstance(body.get(key), str):
                detail[key] = body[key][: p.MAX_ID_LENGTH]
        if isinstance(body.get("parameters"), dict):
            detail["parameter_names"] = _names(body["parameters"])
        if isinstance(body.get("context"), dict) and isinstance(body["context"].get("platform"), str):
            detail["platform"] = body["context"]["platform"][:64]
    for key in ("service_id", "plan_id", "accepts_incomplete"):
        if key in request.args and key not in detail:
            detail[key] = request.args[key][: p.MAX_ID_LENGTH]
    status = response.status_code
    outcome = _OUTCOME.get(status)
    operation_id = None
    if response.is_json:
        data = response.get_json(silent=True)
        if isinstance(data, dict):
            if isinstance(data.get("operation"), str):
                operation_id = data["operation"][:64]
            if status >= 400:
                outcome = str(data.get("error") or status)[:64]
                if isinstance(data.get("description"), str):
                    detail["description"] = redact(data["description"])[:500]
    ident = g.get("request_identity")
    return AuditEvent(
        action=_action(body), principal=g.get("principal"), originating_identity=_originating_identity(),
        request_identity=ident[: p.MAX_ID_LENGTH] if ident else None, instance_id=instance_id,
        binding_id=binding_id, operation_id=operation_id, status=status, outcome=outcome or str(status),
        detail=detail)


def record(response: Response) -> Response:
    """The ``after_request`` hook. A failure to record is logged, never turned into the client's error."""
    if request.method not in MUTATING:
        return response
    runtime = current_app.extensions["drbroker"]
    refused = is_refused(response)
    client = (request.remote_addr or "unknown")[:64]
    if refused:
        metrics.refused(response.status_code, request.method, route())
        refused_log.info("refused %s %s -> %s %s from %s", request.method, route(), response.status_code,
                         _error_code(response), client)
    if runtime.audit is None:
        return response
    try:
        limiter = getattr(runtime, "refusals", None)
        if refused and limiter is not None and not limiter.admit(client, response.status_code):
            metrics.AUDIT_SUPPRESSED.inc()
            return response
        event = event_for(response, read_body=not refused)
        if refused:  # nobody to name but the address the refusal went to
            event = replace(event, detail={**(event.detail or {}), "client": client})
        runtime.audit.append(bounded(event) if response.status_code >= 400 else event)
    except Exception:
        log.exception("could not append the audit record of %s %s", request.method, request.endpoint)
    return response
