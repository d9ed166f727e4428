"""Request parsing at the HTTP edge: ids, query flags, JSON bodies and their OSB shape.

Every failure is a ``BadRequest`` whose description names the field; values are never echoed, since a
body may carry secrets.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

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


_TYPES = {"string": str, "object": dict, "boolean": bool}


def field(body: Mapping[str, Any], name: str, kind: str, *, required: bool = False,
          prefix: str = "") -> Any:
    """One typed field of a body; absent optional fields are None."""
    value = body.get(name)
    where = f"{prefix}{name}"
    if value is None:
        if required:
            raise BadRequest(f"{where}: is required")
        return None
    if not isinstance(value, _TYPES[kind]):
        raise BadRequest(f"{where}: must be a{'n' if kind == 'object' else ''} {kind}")
    if kind == "string":
        if required and not value:
            raise BadRequest(f"{where}: must not be empty")
        if len(value) > MAX_ID_LENGTH and name.endswith(("_id", "_guid")):
            raise BadRequest(f"{where}: longer than {MAX_ID_LENGTH} characters")
    return value


def maintenance_version(body: Mapping[str, Any]) -> str | None:
    info = field(body, "maintenance_info", "object")
    if info is None:
        return None
    return field(info, "version", "string", required=True, prefix="maintenance_info.")


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
