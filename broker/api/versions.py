"""Which response fields each OSB version defines, and pruning a response body to the request's version.

FIELDS is data: for each response object, each field with the minor version (2.x) that first defines it.
Every boundary was read in the spec's own field tables, repository openservicebrokerapi/servicebroker:
v2.12 = edefb618af463dd7a6eec2f9da2bcb2ad8cc2055, v2.13 = 3230539cfe127ebef46b3dfe5adeadf91b716add,
v2.14 = e9b1ca9d0b9727ff7c51c65fc15c3fe23b0d9016, v2.15 = 2d52d4c27f5306d76037fc1bfa0bb3b0dbfd1d4c,
v2.16 = 9ff3ec9483f229a294cc6a4684e43bd71e630e08, v2.17 = ef303a9559f1fb3815ac9d47b27439058bf3fa7c
(spec.md at each tag; docs/osb-versions.md gives the sections). A field absent from a table is dropped for
every version. An endpoint newer than the request's version (fetch instance at 2.12) answers with the fields
of the version that introduced it. Plan-level ``plan_updateable`` before 2.15: see ``_older_plan_updateable``.
"""

from __future__ import annotations

import json
import weakref
from typing import Any

from broker.domain.catalog import Catalog

MIN_MINOR, MAX_MINOR = 12, 17

# object -> {field: first minor version defining it}; "obj:field" children name the object a field holds.
FIELDS: dict[str, dict[str, int]] = {
    "catalog": {"services": 12},
    "service": {"name": 12, "id": 12, "description": 12, "tags": 12, "requires": 12, "bindable": 12,
                "metadata": 12, "dashboard_client": 12, "plan_updateable": 12, "plans": 12,
                "instances_retrievable": 14, "bindings_retrievable": 14, "allow_context_updates": 15},
    "plan": {"id": 12, "name": 12, "description": 12, "metadata": 12, "free": 12, "bindable": 12,
             "schemas": 13, "plan_updateable": 15, "maximum_polling_duration": 15, "maintenance_info": 15,
             "binding_rotatable": 17},
    "schemas": {"service_instance": 13, "service_binding": 13},
    "service_instance_schema": {"create": 13, "update": 13},
    "service_binding_schema": {"create": 13},
    "input_parameters_schema": {"parameters": 13},
    "maintenance_info": {"version": 15, "description": 15},
    "provision": {"dashboard_url": 12, "operation": 12, "metadata": 16},
    "update": {"operation": 12, "dashboard_url": 14, "metadata": 16},
    "deprovision": {"operation": 12},
    "instance_metadata": {"labels": 16, "attributes": 17},
    "fetch_instance": {"service_id": 14, "plan_id": 14, "dashboard_url": 14, "parameters": 14,
                       "maintenance_info": 17, "metadata": 17},
    "last_operation": {"state": 12, "description": 12, "instance_usable": 16, "update_repeatable": 16},
    "binding_last_operation": {"state": 14, "description": 14},
    "bind": {"credentials": 12, "syslog_drain_url": 12, "route_service_url": 12, "volume_mounts": 12,
             "operation": 14, "endpoints": 15, "metadata": 16},
    "fetch_binding": {"credentials": 14, "syslog_drain_url": 14, "route_service_url": 14, "volume_mounts": 14,
                      "parameters": 14, "endpoints": 15, "metadata": 16},
    "binding_metadata": {"expires_at": 16, "renew_before": 17},
    "unbind": {"operation": 14},
    # 2.12 and 2.13 list only `description` in "Broker Errors" but mandate {"error": "AsyncRequired", ...}
    # in the status tables, so `error` counts from 2.12.
    "error": {"error": 12, "description": 12, "instance_usable": 16, "update_repeatable": 16},
}

# Fields holding an object (or a list of objects) that is itself in FIELDS; all other values are opaque.
CHILDREN: dict[tuple[str, str], str] = {
    ("catalog", "services"): "service",
    ("service", "plans"): "plan",
    ("plan", "schemas"): "schemas",
    ("plan", "maintenance_info"): "maintenance_info",
    ("schemas", "service_instance"): "service_instance_schema",
    ("schemas", "service_binding"): "service_binding_schema",
    ("service_instance_schema", "create"): "input_parameters_schema",
    ("service_instance_schema", "update"): "input_parameters_schema",
    ("service_binding_schema", "create"): "input_parameters_schema",
    ("provision", "metadata"): "instance_metadata",
    ("update", "metadata"): "instance_metadata",
    ("fetch_instance", "metadata"): "instance_metadata",
    ("fetch_instance", "maintenance_info"): "maintenance_info",
    ("bind", "metadata"): "binding_metadata",
    ("fetch_binding", "metadata"): "binding_metadata",
}

# The version that introduced an endpoint (the others exist since 2.12 or earlier).
INTRODUCED = {"fetch_instance": 14, "fetch_binding": 14, "binding_last_operation": 14}

NOT_UPDATEABLE_NOTE = " Plan changes from this plan are refused."


def prune(kind: str, body: Any, minor: int) -> Any:
    """``body`` (a ``kind`` object from FIELDS) keeping only the fields version 2.``minor`` defines."""
    minor = max(minor, INTRODUCED.get(kind, MIN_MINOR))
    if isinstance(body, list):
        return [prune(kind, item, minor) for item in body]
    if not isinstance(body, dict):
        return body
    table = FIELDS[kind]
    out: dict[str, Any] = {}
    for name, value in body.items():
        since = table.get(name)
        if since is None or since > minor:
            continue
        child = CHILDREN.get((kind, name))
        out[name] = prune(child, value, minor) if child else value
    return out


def _older_plan_updateable(document: dict[str, Any]) -> dict[str, Any]:
    """Before 2.15 only the service says ``plan_updateable``: "whether the service supports upgrade/downgrade
    for some plans" (2.12-2.14). So the service says true when any plan is updateable, and a plan that is
    not (a 2.17 plan-level false) says so in its description; the broker still answers 422 to its changes."""
    out = json.loads(json.dumps(document))
    for service in out.get("services", []):
        default = bool(service.get("plan_updateable", False))
        effective = [bool(p.get("plan_updateable", default)) for p in service.get("plans", [])]
        if "plan_updateable" in service or any("plan_updateable" in p for p in service.get("plans", [])):
            service["plan_updateable"] = any(effective)
        for plan, updateable in zip(service.get("plans", []), effective, strict=True):
            if service.get("plan_updateable") and not updateable:
                plan["description"] = plan["description"].rstrip() + NOT_UPDATEABLE_NOTE
    return out


_CATALOGS: weakref.WeakKeyDictionary[Catalog, dict[int, bytes]] = weakref.WeakKeyDictionary()


def catalog_json(catalog: Catalog, minor: int) -> bytes:
    """The catalog document for version 2.``minor``, rendered once per catalog and version."""
    cached = _CATALOGS.setdefault(catalog, {})
    if minor not in cached:
        document = catalog.document if minor >= 15 else _older_plan_updateable(catalog.document)
        cached[minor] = json.dumps(prune("catalog", document, minor), sort_keys=True).encode()
    return cached[minor]
