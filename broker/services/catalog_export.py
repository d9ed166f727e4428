"""Export the catalog as the IBM Global Catalog entries Partner Center needs: service -> plan -> deployment,
with the ids from ``catalog/`` and the create schema's properties as console custom parameters.

IBM shows none of the broker's ``/v2/catalog``; the console renders what Partner Center stored in the Global
Catalog, and IBM does not render OSB ``schemas``. So the same source produces both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from broker.domain.catalog import Catalog, Plan, Service


def _parameter(name: str, prop: Mapping[str, Any], required: bool, plan_ids: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "displayname": name.replace("_", " ").capitalize(),
        "description": prop.get("description", ""),
        "required": required,
        "associations": {"plan": {"showFor": plan_ids}},
    }
    if prop.get("writeOnly"):
        entry["type"] = "password"
    elif "enum" in prop:
        entry["type"] = "dropdown"
        entry["options"] = [{"displayname": str(v), "value": v} for v in prop["enum"]]
    else:
        entry["type"] = "text"
        if prop.get("type") in ("object", "array"):
            entry["description"] = (entry["description"] + " (JSON)").strip()
        if "pattern" in prop:
            entry["pattern"] = prop["pattern"]
    if "default" in prop:
        entry["value"] = prop["default"]
    return entry


def _custom_parameters(service: Service) -> list[dict[str, Any]]:
    params: dict[str, dict[str, Any]] = {}
    for plan in service.plans:
        schema = plan.parameter_schema("provision") or {}
        required = set(schema.get("required") or [])
        for name, prop in (schema.get("properties") or {}).items():
            if name == "location":
                continue  # IBM sends the location itself
            if name in params:
                params[name]["associations"]["plan"]["showFor"].append(plan.id)
                params[name]["required"] = params[name]["required"] and name in required
            else:
                params[name] = _parameter(name, prop, name in required, [plan.id])
    return list(params.values())


def _plan_entry(plan: Plan, service: Service, locations: Iterable[str], broker: Mapping[str, str],
                parameters: list[dict[str, Any]]) -> dict[str, Any]:
    raw = plan.raw
    meta = raw.get("metadata") or {}
    plan_params = [p for p in parameters if plan.id in p["associations"]["plan"]["showFor"]]
    return {
        "kind": "plan",
        "id": plan.id,
        "name": plan.name,
        "active": True,
        "disabled": False,
        "overview_ui": {"en": {"display_name": meta.get("displayName", plan.name),
                               "description": raw["description"],
                               "long_description": "\n".join(meta.get("bullets") or [])}},
        "metadata": {
            "rc_compatible": True,
            "pricing": {"type": "free" if raw.get("free", True) else "paid", "origin": "pricing_catalog"},
            "plan": {"bindable": service.bindable(plan), "reservable": False, "allow_internal_users": True,
                     "provision_type": "ibm_cloud"},
        },
        "children": [
            {"kind": "deployment", "name": f"{plan.name}-{location}", "active": True, "disabled": False,
             "metadata": {"rc_compatible": True,
                          "deployment": {"location": location, "broker": dict(broker)},
                          "service": {"parameters": plan_params}}}
            for location in locations
        ],
    }


def ibm_global_catalog(catalog: Catalog, *, locations: Iterable[str], broker_name: str,
                       broker_guid: str) -> list[dict[str, Any]]:
    """One Global Catalog service entry (with plans and deployments) per service in the catalog."""
    locations = list(locations)
    broker = {"name": broker_name, "guid": broker_guid}
    entries = []
    for service in catalog.services:
        raw = service.raw
        meta = raw.get("metadata") or {}
        parameters = _custom_parameters(service)
        entries.append({
            "kind": "service",
            "id": service.id,
            "name": service.name,
            "active": True,
            "disabled": False,
            "tags": list(raw.get("tags") or []),
            "overview_ui": {"en": {"display_name": meta.get("displayName", service.name),
                                   "description": raw["description"],
                                   "long_description": meta.get("longDescription", raw["description"])}},
            "provider": {"name": meta.get("providerDisplayName", "powervs-dr-broker")},
            "metadata": {
                "rc_compatible": True,
                "service": {"rc_provisionable": True, "iam_compatible": True, "bindable": bool(raw["bindable"]),
                            "plan_updateable": bool(raw.get("plan_updateable", False)),
                            "service_key_supported": bool(raw["bindable"]), "parameters": parameters},
                "ui": {"urls": {"doc_url": meta.get("documentationUrl", "")}},
            },
            "children": [_plan_entry(p, service, locations, broker, parameters) for p in service.plans],
        })
    return entries
