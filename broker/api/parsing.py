"""Request parsing at the HTTP edge: ids, query flags, JSON bodies and their OSB shape.

Every failure is a ``BadRequest`` whose description names the field; values are never echoed, since a
body may carry secrets.

The OSB bodies' shapes are JSON schemas (``PROVISION_BODY``, ``UPDATE_BODY``, ``BIND_BODY``), checked with
``jsonschema`` and published as they are in ``/openapi.json``. They stay within what OpenAPI 3.0 reads, so
``null`` is not a type: a field sent as ``null`` counts as absent (``_present``), as OSB platforms send it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from jsonschema import Draft202012Validator, ValidationError

from broker.domain.errors import BadRequest

MAX_ID_LENGTH = 255
MAX_DEPTH = 32
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_VERSION = re.compile(r"^(\d+)\.(\d+)$")


def decode_id(raw: str, field: str) -> str:
    try:
        value = unquote(raw, errors="strict") if "%" in raw else raw
    except UnicodeDecodeError:
        raise BadRequest(f"{field}: percent-encoding is not valid UTF-8") from None
    if not value:
        raise BadRequest(f"{field}: must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"{field}: longer than {MAX_ID_LENGTH} characters")
    if _CONTROL.search(value):
        raise BadRequest(f"{field}: contains control characters")
    return value


def parse_version(header: str | None) -> tuple[int, int] | None:
    match = _VERSION.match((header or "").strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def require_version(header: str | None, least: tuple[int, int], field: str) -> None:
    """A request field the request's ``X-Broker-API-Version`` does not define yet is a 400 naming both: a
    platform speaking an older version would otherwise get a silently different outcome."""
    version = parse_version(header)
    if version is None or version < least:
        raise BadRequest(f"{field}: defined by OSB {least[0]}.{least[1]}; send X-Broker-API-Version: "
                         f"{least[0]}.{least[1]} or later")


def flag(args: Mapping[str, str], name: str) -> bool:
    raw = args.get(name)
    if raw is None:
        return False
    if raw in ("true", "false"):
        return raw == "true"
    raise BadRequest(f"{name}: must be true or false")


def required_arg(args: Mapping[str, str], name: str) -> str:
    value = args.get(name)
    if not value:
        raise BadRequest(f"{name}: query parameter is required")
    if len(value) > MAX_ID_LENGTH or _CONTROL.search(value):
        raise BadRequest(f"{name}: not a valid id")
    return value


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def json_body(data: bytes, *, required: bool = True) -> dict[str, Any]:
    if not data.strip():
        if required:
            raise BadRequest("body: a JSON object is required")
        return {}
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise BadRequest("body: not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body: must be a JSON object")
    if _depth(body) > MAX_DEPTH:
        raise BadRequest(f"body: nested deeper than {MAX_DEPTH} levels")
    try:
        # JSON allows "\ud800" escapes that are not Unicode; such a string cannot be stored as UTF-8.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("body: contains an unpaired surrogate escape (not valid Unicode)") from None
    return body


def _id(**extra: Any) -> dict[str, Any]:
    return {"type": "string", "maxLength": MAX_ID_LENGTH, **extra}


_REQUIRED_ID = _id(minLength=1)
_OBJECT: dict[str, Any] = {"type": "object"}
_MAINTENANCE_INFO = {"type": "object", "required": ["version"], "properties": {"version": {"type": "string"}}}

# Property order is the order fields are checked in: a body with several faults is told about the first.
PROVISION_BODY: dict[str, Any] = {"type": "object", "required": ["service_id", "plan_id"], "properties": {
    "service_id": _REQUIRED_ID, "plan_id": _REQUIRED_ID, "organization_guid": _id(), "space_guid": _id(),
    "context": _OBJECT, "parameters": _OBJECT, "maintenance_info": _MAINTENANCE_INFO}}
UPDATE_BODY: dict[str, Any] = {"type": "object", "required": ["service_id"], "properties": {
    "service_id": _REQUIRED_ID, "plan_id": _id(), "parameters": _OBJECT, "context": _OBJECT,
    "maintenance_info": _MAINTENANCE_INFO, "previous_values": _OBJECT}}
BIND_BODY: dict[str, Any] = {"type": "object", "required": ["service_id", "plan_id"], "properties": {
    "service_id": _REQUIRED_ID, "plan_id": _REQUIRED_ID, "parameters": _OBJECT, "context": _OBJECT,
    "app_guid": _id(), "bind_resource": {"type": "object", "properties": {
        "app_guid": _id(), "route": {"type": "string"},
        "serviceid_crn": {"type": "string", "description": "IBM Cloud: bind this service ID"}}}}}

# OSB 2.17 "Request (Rotating a Service Binding)": the body is ``predecessor_binding_id*``; the successor
# inherits service_id, plan_id, parameters and bind_resource (broker/services/rotation.py), so they are optional.
ROTATE_BODY: dict[str, Any] = {"type": "object", "required": ["predecessor_binding_id"], "properties": {
    "predecessor_binding_id": _REQUIRED_ID, **BIND_BODY["properties"]}}

_VALIDATORS = {id(s): Draft202012Validator(s) for s in (PROVISION_BODY, UPDATE_BODY, BIND_BODY, ROTATE_BODY)}
_ARTICLE = {"object": "an", "array": "an"}


def _present(value: Any, schema: Mapping[str, Any]) -> Any:
    """``value`` without its ``null`` fields, wherever the schema describes the fields (not inside
    ``parameters`` or ``context``, which are checked elsewhere)."""
    props = schema.get("properties")
    if not isinstance(value, dict) or not props:
        return value
    return {k: _present(v, props.get(k, {})) for k, v in value.items() if v is not None}


def _order(schema: Mapping[str, Any], err: ValidationError) -> tuple[int, ...]:
    keys, props, out = list(err.absolute_path), schema.get("properties") or {}, []
    if err.validator == "required":
        keys.append(_missing(err))
    for key in keys:
        names = list(props)
        out.append(names.index(key) if key in names else len(names))
        props = (props.get(key) or {}).get("properties") or {}
    return tuple(out)


def _missing(err: ValidationError) -> str:
    instance = err.instance if isinstance(err.instance, dict) else {}
    return next((name for name in err.validator_value if name not in instance), "")


def _describe(err: ValidationError) -> str:
    """``<dotted field>: <what is wrong>``, never the value."""
    path = [str(k) for k in err.absolute_path]
    if err.validator == "required":
        return ".".join([*path, _missing(err)]) + ": is required"
    where = ".".join(path) or "body"
    if err.validator == "type":
        kind = str(err.validator_value)
        return f"{where}: must be {_ARTICLE.get(kind, 'a')} {kind}"
    if err.validator == "minLength":
        return f"{where}: must not be empty"
    if err.validator == "maxLength":
        return f"{where}: longer than {err.validator_value} characters"
    return f"{where}: is not valid ({err.validator})"


def check_body(body: Mapping[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``body`` checked against one of the OSB body schemas; the first fault, in the schema's property order,
    is a ``BadRequest`` naming the field. Returns ``body`` as it came."""
    errors = list(_VALIDATORS[id(schema)].iter_errors(_present(body, schema)))
    if errors:
        raise BadRequest(_describe(min(errors, key=lambda e: _order(schema, e))))
    return dict(body)


def maintenance_version(body: Mapping[str, Any]) -> str | None:
    """The ``maintenance_info.version`` of a body ``check_body`` accepted."""
    return (body.get("maintenance_info") or {}).get("version")


def originating_identity(header: str | None) -> dict[str, Any] | None:
    """Decode ``X-Broker-API-Originating-Identity: <platform> <base64 JSON>``; malformed is a 400."""
    if header is None:
        return None
    platform, _, encoded = header.strip().partition(" ")
    if not platform or not encoded.strip():
        raise BadRequest("X-Broker-API-Originating-Identity: must be '<platform> <base64 JSON>'")
    try:
        value = json.loads(base64.b64decode(encoded.strip(), validate=True))
    except (binascii.Error, ValueError, RecursionError):
        raise BadRequest("X-Broker-API-Originating-Identity: the value is not base64-encoded JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("X-Broker-API-Originating-Identity: the value must be a JSON object")
    return {"platform": platform, "value": value}
