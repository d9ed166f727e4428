"""API shapes read from IBM's generated Python SDKs, as installed (no copy is kept in the repository).

IBM generates ``ibm-platform-services`` and ``ibm-dra-python-sdk`` from its OpenAPI definitions. Every
operation is a method whose source names its HTTP ``method``, its ``url`` pattern, the keys of its JSON
body (``data = {...}``) and, in its docstring, the model of the answer (``representing a `X` object``).
Every model's ``from_dict`` reads each property by its JSON name and raises ``Required property 'x'`` for
the required ones; ``__init__``'s annotations give the property types; nested ``...Enum`` classes the
allowed values. This module turns those into the same JSON Schema + operation table as ``generate.py``
produces for PowerVS and Key Protect.
"""

from __future__ import annotations

import importlib
import inspect
import re
import typing
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Any


@dataclass(frozen=True)
class SdkService:
    name: str          # our name of the service (matches the fake's service names)
    module: str        # the SDK module
    cls: str           # the SDK's service class
    prefix: str = ""   # the path the service URL adds before the SDK's paths (global catalog: /api/v1)


SERVICES = (
    SdkService("iam_identity", "ibm_platform_services.iam_identity_v1", "IamIdentityV1"),
    SdkService("iam_policy", "ibm_platform_services.iam_policy_management_v1", "IamPolicyManagementV1"),
    SdkService("resource_controller", "ibm_platform_services.resource_controller_v2", "ResourceControllerV2"),
    SdkService("global_catalog", "ibm_platform_services.global_catalog_v1", "GlobalCatalogV1", "/api/v1"),
    SdkService("metering", "ibm_platform_services.usage_metering_v4", "UsageMeteringV4"),
    SdkService("dra", "ibm_dra_python_sdk.dr_automation_service_v1", "DrAutomationServiceV1"),
    # Key Protect's answers; its request bodies are opaque bytes in this SDK and come from keyprotect.json
    SdkService("kms", "keyprotect.ibm_key_protect_api_v2", "IbmKeyProtectApiV2"),
    # the notification destination (broker.notifications); send_notifications' body is its NotificationCreate
    SdkService("event_notifications", "ibm_eventnotifications.event_notifications_v1", "EventNotificationsV1"),
)

# Where an SDK model's enum contradicts the service it describes: the values the service answers that the
# enum lacks, added (and only these). ``CatalogEntry.KindEnum`` lists service, template and dashboard (its
# own docstring names ten more kinds), yet the global catalog answers a plan's entry with kind ``plan``
# (``get_child_objects(id, "plan")`` is how the SDK's docs find a plan) and a deployment's with ``deployment``.
ENUM_ADDITIONS: dict[tuple[str, str, str], list[str]] = {
    ("ibm_platform_services.global_catalog_v1", "CatalogEntry", "kind"): ["plan", "deployment"],
}

_SIMPLE = {"str": {"type": "string"}, "bool": {"type": "boolean"}, "int": {"type": "integer"},
           "float": {"type": "number"}, "datetime": {"type": "string"}, "date": {"type": "string"},
           "dict": {"type": "object"}, "object": {}, "Any": {}, "BinaryIO": {}}


class _Models:
    """JSON Schemas of one SDK module's model classes, built on demand under ``<prefix><Model>``."""

    def __init__(self, module: Any, prefix: str) -> None:
        self.module = module
        self.prefix = prefix
        self.defs: dict[str, Any] = {}

    def type_schema(self, ann: Any) -> dict[str, Any]:
        if isinstance(ann, typing.ForwardRef):
            ann = ann.__forward_arg__
        if isinstance(ann, str):
            ann = ann.strip("'\"")
            m = re.fullmatch(r"(?:Optional|typing\.Optional)\[(.+)\]", ann)
            if m:
                return self.type_schema(m.group(1))
            m = re.fullmatch(r"(?:List|typing\.List|list)\[(.+)\]", ann)
            if m:
                return {"type": "array", "items": self.type_schema(m.group(1))}
            m = re.fullmatch(r"(?:Dict|dict)\[.+\]", ann)
            if m:
                return {"type": "object"}
            name = ann.rsplit(".", 1)[-1]
            if name in _SIMPLE:
                return dict(_SIMPLE[name])
            obj = getattr(self.module, name, None)
            return self.model(obj) if inspect.isclass(obj) and hasattr(obj, "from_dict") else {}
        origin = typing.get_origin(ann)
        if origin is typing.Union:
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            return self.type_schema(args[0]) if len(args) == 1 else {}
        if origin in (list, typing.List):  # noqa: UP006 - the SDK's own spelling
            (arg,) = typing.get_args(ann) or (Any,)
            return {"type": "array", "items": self.type_schema(arg)}
        if origin is dict:
            return {"type": "object"}
        if inspect.isclass(ann):
            if hasattr(ann, "from_dict"):
                return self.model(ann)
            return dict(_SIMPLE.get(ann.__name__, {}))
        return {}

    def model(self, cls: type) -> dict[str, Any]:
        key = self.prefix + cls.__name__
        ref = {"$ref": f"#/$defs/{key}"}
        if key in self.defs:
            return ref
        self.defs[key] = {}  # placeholder against cycles
        self.defs[key] = self._build(cls)
        return ref

    def _build(self, cls: type) -> dict[str, Any]:
        try:
            src = inspect.getsource(cls.from_dict)  # type: ignore[attr-defined]
        except (AttributeError, OSError, TypeError):
            return {}
        # a long name's read is wrapped over lines: ``_dict.get(\n    'name'\n)``
        names = re.findall(r"""_dict\.get\(\s*["']([^"']+)["']\s*\)""", src)
        if not names:  # a polymorphic base: the answer is one of its subclasses, any shape
            return {"type": "object"}
        required = re.findall(r"""Required property \\?'([^'\\]+)\\?' not present""", src)
        try:
            hints = inspect.signature(cls.__init__).parameters
        except (TypeError, ValueError):
            hints = {}
        enums = {re.sub(r"(?<!^)(?=[A-Z])", "_", n[:-len("Enum")]).lower(): [e.value for e in getattr(cls, n)]
                 for n in dir(cls) if n.endswith("Enum") and inspect.isclass(getattr(cls, n))
                 and issubclass(getattr(cls, n), Enum)}
        props: dict[str, Any] = {}
        for name in dict.fromkeys(names):
            attr = re.search(rf"""_dict\.get\(\s*["']{re.escape(name)}["']\s*\)\s*\)? is not None:\s*"""
                             r"""args\[["'](\w+)["']\]""", src)
            param = hints.get(attr.group(1) if attr else name)
            schema = self.type_schema(param.annotation) if param is not None else {}
            if name in enums:
                target = schema["items"] if schema.get("type") == "array" else schema
                target["enum"] = enums[name] + ENUM_ADDITIONS.get((self.module.__name__, cls.__name__, name), [])
            if name not in required:
                schema["x-nullable"] = True  # from_dict reads a null as absent
            props[name] = schema
        return {"type": "object", "properties": props, "required": list(dict.fromkeys(required)),
                "additionalProperties": False}


def _operations(svc: SdkService, models: _Models) -> list[dict[str, Any]]:
    cls = getattr(models.module, svc.cls)
    base = set(dir(cls.__mro__[1]))
    ops = []
    for name, fn in inspect.getmembers(cls, inspect.isfunction):
        if name.startswith("_") or name in base:
            continue
        src = inspect.getsource(fn)
        method = re.search(r"""method=["'](\w+)["']""", src)
        url = re.search(r"""url = ["']([^"']+)["']""", src)
        if not method or not url:
            continue
        params = inspect.signature(fn).parameters
        body = None
        data = re.search(r"\n\s+data = \{\n(.*?)\n\s+\}\n", src, re.S)
        if data:
            keys = re.findall(r"""["']([^"']+)["']: (\w+),""", data.group(1))
            props = {k: (models.type_schema(params[v].annotation) if v in params else {}) for k, v in keys}
            required = [k for k, v in keys if v in params and params[v].default is inspect.Parameter.empty]
            body = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
        elif "body" in params and re.search(r"\n\s+data = json\.dumps\(body\)", src):
            # the body is one model passed whole (Event Notifications' ``send_notifications(body=...)``)
            body = models.type_schema(params["body"].annotation) or None
        rtype = re.search(r"representing a `(\w+)` object", src)
        result = None
        if rtype and hasattr(getattr(models.module, rtype.group(1), None), "from_dict"):
            result = models.model(getattr(models.module, rtype.group(1)))["$ref"].rsplit("/", 1)[1]
        path = svc.prefix + url.group(1)
        ops.append({"id": name, "method": method.group(1), "path": path, "body_schema": body,
                    "responses": {"2xx": result}})
    return ops


@cache
def sdk_shapes(svc: SdkService) -> dict[str, Any]:
    """Operations and model schemas of one installed SDK service, in the generated shapes' format."""
    module = importlib.import_module(svc.module)
    models = _Models(module, prefix=f"{svc.name}.")
    ops = _operations(svc, models)
    dist = svc.module.split(".", 1)[0]
    try:
        from importlib.metadata import packages_distributions, version

        pkg = (packages_distributions().get(dist) or [dist])[0]
        ver = version(pkg)
    except Exception:  # pragma: no cover - metadata missing
        pkg, ver = dist, "unknown"
    return {"service": svc.name, "source": {"package": pkg, "version": ver, "module": svc.module},
            "operations": ops, "$defs": dict(models.defs)}
