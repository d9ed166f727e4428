"""The service catalog: loaded from YAML files, validated once at start, then read-only.

A catalog file holds ``services: [...]`` in OSB 2.17 shape. Values may use ``${VAR}`` or
``${VAR:-default}`` so that the ids IBM Partner Center generates can be set per deployment without
editing the shipped files. Each plan may carry a private ``features`` mapping (what the workflows need to
know about the plan); it is stripped from what ``/v2/catalog`` returns.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator, validators
from jsonschema.exceptions import SchemaError

from broker.domain.errors import CatalogError

_ENV_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
)
MAX_SCHEMA_BYTES = 64 * 1024

_STRING = {"type": "string", "minLength": 1}
_PLAN_SCHEMA = {
    "type": "object",
    "required": ["id", "name", "description"],
    "properties": {
        "id": _STRING,
        "name": _STRING,
        "description": _STRING,
        "free": {"type": "boolean"},
        "bindable": {"type": "boolean"},
        "plan_updateable": {"type": "boolean"},
        "binding_rotatable": {"type": "boolean"},
        "maximum_polling_duration": {"type": "integer", "minimum": 1},
        "maintenance_info": {
            "type": "object",
            "required": ["version"],
            "properties": {"version": {"type": "string"}, "description": {"type": "string"}},
        },
        "metadata": {"type": "object"},
        "schemas": {"type": "object"},
        "features": {"type": "object"},
    },
}
_SERVICE_SCHEMA = {
    "type": "object",
    "required": ["id", "name", "description", "bindable", "plans"],
    "properties": {
        "id": _STRING,
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9.\-_]+$"},
        "description": _STRING,
        "bindable": {"type": "boolean"},
        "instances_retrievable": {"type": "boolean"},
        "bindings_retrievable": {"type": "boolean"},
        "allow_context_updates": {"type": "boolean"},
        "plan_updateable": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "requires": {
            "type": "array",
            "items": {"enum": ["syslog_drain", "route_forwarding", "volume_mount"]},
        },
        "metadata": {"type": "object"},
        "plans": {"type": "array", "minItems": 1, "items": _PLAN_SCHEMA},
    },
}
_FILE_SCHEMA = {
    "type": "object",
    "required": ["services"],
    "properties": {"services": {"type": "array", "items": _SERVICE_SCHEMA}},
}

# (schemas path, human name) of the three parameter schemas a plan may carry.
SCHEMA_SLOTS = (
    (("service_instance", "create"), "provision"),
    (("service_instance", "update"), "update"),
    (("service_binding", "create"), "bind"),
)


@dataclass(frozen=True)
class Plan:
    id: str
    name: str
    service_id: str
    raw: Mapping[str, Any]
    features: Mapping[str, Any] = field(default_factory=dict)

    @property
    def bindable(self) -> bool:
        return bool(self.raw.get("bindable", True))

    @property
    def maintenance_version(self) -> str | None:
        info = self.raw.get("maintenance_info") or {}
        return info.get("version")

    @property
    def maximum_polling_duration(self) -> int | None:
        return self.raw.get("maximum_polling_duration")

    def parameter_schema(self, slot: str) -> Mapping[str, Any] | None:
        """The JSON schema for ``provision``, ``update`` or ``bind`` parameters, if the plan has one."""
        for path, name in SCHEMA_SLOTS:
            if name == slot:
                node: Any = self.raw.get("schemas") or {}
                for key in path:
                    node = (node or {}).get(key)
                return (node or {}).get("parameters")
        raise KeyError(slot)


@dataclass(frozen=True)
class Service:
    id: str
    name: str
    raw: Mapping[str, Any]
    plans: tuple[Plan, ...]

    @property
    def instances_retrievable(self) -> bool:
        return bool(self.raw.get("instances_retrievable", False))

    @property
    def bindings_retrievable(self) -> bool:
        return bool(self.raw.get("bindings_retrievable", False))

    def plan_updateable(self, plan: Plan) -> bool:
        return bool(plan.raw.get("plan_updateable", self.raw.get("plan_updateable", False)))

    def bindable(self, plan: Plan) -> bool:
        return bool(plan.raw.get("bindable", self.raw.get("bindable", False)))


class Catalog:
    """Read-only view of every service and plan, with the OSB document built once."""

    def __init__(self, services: Iterable[Service]) -> None:
        self.services = tuple(services)
        self._services = {s.id: s for s in self.services}
        self._plans = {p.id: p for s in self.services for p in s.plans}
        self.document = {"services": [_public(s) for s in self.services]}
        self.document_json = json.dumps(self.document, sort_keys=True).encode()

    def service(self, service_id: str) -> Service | None:
        return self._services.get(service_id)

    def plan(self, plan_id: str) -> Plan | None:
        return self._plans.get(plan_id)

    def find_plan(self, name_or_id: str) -> Plan | None:
        return self._plans.get(name_or_id) or next(
            (p for p in self._plans.values() if p.name == name_or_id), None
        )


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _public(service: Service) -> dict[str, Any]:
    doc = copy.deepcopy(dict(service.raw))
    doc["plans"] = []
    for plan in service.plans:
        entry = copy.deepcopy(dict(plan.raw))
        entry.pop("features", None)
        doc["plans"].append(entry)
    return doc


def _interpolate(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env and env[name] != "":
                return env[name]
            if default is None:
                raise CatalogError(f"environment variable {name} is referenced but not set")
            return default
        return _ENV_REF.sub(sub, value)
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    return value


def _where(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _check_parameter_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict):
        raise CatalogError(f"{where}: must be a JSON schema object")
    if "$schema" not in schema:
        raise CatalogError(f"{where}: $schema is required (OSB)")
    if len(json.dumps(schema).encode()) > MAX_SCHEMA_BYTES:
        raise CatalogError(f"{where}: larger than 64 kB (OSB limit)")
    for ref in _refs(schema):
        if not ref.startswith("#"):
            raise CatalogError(f"{where}: external $ref {ref!r} is not allowed (OSB)")
    cls = validators.validator_for(schema, default=Draft7Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise CatalogError(f"{where}: not a valid JSON schema: {exc.message}") from None
    examples = schema.get("examples")
    if not isinstance(examples, list) or not examples:
        raise CatalogError(f"{where}.examples: at least one example is required")
    validator = cls(schema)
    for i, example in enumerate(examples):
        err = next(iter(validator.iter_errors(example)), None)
        if err is not None:
            raise CatalogError(f"{where}.examples[{i}]: does not validate: {_where(err.absolute_path)}: "
                               f"{err.message}")


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _files(location: Path) -> list[Path]:
    if location.is_dir():
        files = sorted([*location.glob("*.yaml"), *location.glob("*.yml")])
        if not files:
            raise CatalogError(f"{location}: no catalog files (*.yaml)")
        return files
    if location.is_file():
        return [location]
    raise CatalogError(f"{location}: no such catalog file or folder")


def load_catalog(location: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Catalog:
    """Load and validate every catalog file; raise CatalogError naming the file and field."""
    env = os.environ if env is None else env
    services: list[Service] = []
    seen_service_ids: dict[str, str] = {}
    seen_plan_ids: dict[str, str] = {}
    seen_names: dict[str, str] = {}
    for path in _files(Path(location)):
        try:
            # libyaml when PyYAML has it: the same safe loader, ~20x faster on our catalog (every runtime loads it)
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)  # noqa: S506 (a safe loader)
        except yaml.YAMLError as exc:
            raise CatalogError(f"{path}: not valid YAML: {exc}") from None
        try:
            data = _interpolate(data, env)
        except CatalogError as exc:
            raise CatalogError(f"{path}: {exc}") from None
        err = next(iter(Draft7Validator(_FILE_SCHEMA).iter_errors(data)), None)
        if err is not None:
            raise CatalogError(f"{path}: {_where(err.absolute_path)}: {err.message}")
        for si, raw_service in enumerate(data["services"]):
            where_s = f"{path}: services[{si}]"
            sid = raw_service["id"]
            if sid in seen_service_ids:
                raise CatalogError(f"{where_s}.id: {sid!r} already used in {seen_service_ids[sid]}")
            if raw_service["name"] in seen_names:
                raise CatalogError(f"{where_s}.name: {raw_service['name']!r} is not unique")
            seen_service_ids[sid] = where_s
            seen_names[raw_service["name"]] = where_s
            plans: list[Plan] = []
            plan_names: set[str] = set()
            for pi, raw_plan in enumerate(raw_service["plans"]):
                where_p = f"{where_s}.plans[{pi}]"
                pid = raw_plan["id"]
                if pid in seen_plan_ids or pid in seen_service_ids:
                    raise CatalogError(f"{where_p}.id: {pid!r} is not unique")
                if raw_plan["name"] in plan_names:
                    raise CatalogError(f"{where_p}.name: {raw_plan['name']!r} is not unique in the service")
                version = (raw_plan.get("maintenance_info") or {}).get("version")
                if version is not None and not _SEMVER.match(version):
                    raise CatalogError(f"{where_p}.maintenance_info.version: {version!r} is not semver 2.0")
                for slot_path, _name in SCHEMA_SLOTS:
                    node: Any = raw_plan.get("schemas") or {}
                    for key in slot_path:
                        node = (node or {}).get(key) if isinstance(node, dict) else None
                    if isinstance(node, dict) and "parameters" in node:
                        _check_parameter_schema(
                            node["parameters"], f"{where_p}.schemas.{'.'.join(slot_path)}.parameters"
                        )
                seen_plan_ids[pid] = where_p
                plan_names.add(raw_plan["name"])
                plans.append(Plan(id=pid, name=raw_plan["name"], service_id=sid, raw=raw_plan,
                                  features=dict(raw_plan.get("features") or {})))
            services.append(Service(id=sid, name=raw_service["name"], raw=raw_service, plans=tuple(plans)))
    if not services:
        raise CatalogError(f"{location}: the catalog has no services")
    return Catalog(services)
