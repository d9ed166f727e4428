"""Regenerate catalog_schemas.json: the catalog response schema of each OSB version, from the spec repository.

Run: python tests/api/osb_versions/extract_catalog_schemas.py <git dir of openservicebrokerapi/servicebroker>
For each tag it takes ``openapi.yaml`` (v2.13+; OpenAPI 3, ``components.schemas``) and ``swagger.yaml`` (v2.14+;
Swagger 2, ``definitions``), keeps the ``Catalog`` schema and what it references, as JSON Schema with
``definitions``. ``strict-v2.13`` is the v2.13 openapi one with ``additionalProperties: false`` on every object
the v2.13 spec defines field by field (Metadata and the parameters JSON schema stay open: the spec calls them
opaque).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

TAGS = ["v2.13", "v2.14", "v2.15", "v2.16", "v2.17"]
OPAQUE = {"Metadata", "JSONSchemaObject", "ServicePlanMetadata", "ServiceOfferingMetadata"}


def _closure(schemas: dict[str, Any], prefix: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    todo = ["Catalog"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        node = copy.deepcopy(schemas[name])
        seen[name] = node

        def walk(value: Any) -> None:
            if isinstance(value, dict):
                ref = value.get("$ref")
                if isinstance(ref, str) and ref.startswith(prefix):
                    target = ref[len(prefix):]
                    value["$ref"] = "#/definitions/" + target
                    todo.append(target)
                for v in value.values():
                    walk(v)
            elif isinstance(value, list):
                for v in value:
                    walk(v)
        walk(node)
    return {"$schema": "http://json-schema.org/draft-04/schema#", "$ref": "#/definitions/Catalog",
            "definitions": seen}


def _show(git_dir: str, tag: str, path: str) -> Any:
    run = subprocess.run(["git", "-C", git_dir, "show", f"{tag}:{path}"], capture_output=True, text=True)
    return yaml.safe_load(run.stdout) if run.returncode == 0 else None


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(schema)
    for name, node in out["definitions"].items():
        if name not in OPAQUE and node.get("type") == "object" and "properties" in node:
            node["additionalProperties"] = False
    return out


def main(git_dir: str) -> None:
    result: dict[str, Any] = {"source": "github.com/openservicebrokerapi/servicebroker openapi.yaml, swagger.yaml"}
    for tag in TAGS:
        commit = subprocess.run(["git", "-C", git_dir, "rev-parse", f"{tag}^{{commit}}"], check=True,
                                capture_output=True, text=True).stdout.strip()
        openapi = _show(git_dir, tag, "openapi.yaml")
        if openapi:
            result[f"openapi-{tag}"] = {"commit": commit,
                                        "schema": _closure(openapi["components"]["schemas"], "#/components/schemas/")}
        swagger = _show(git_dir, tag, "swagger.yaml")
        if swagger:
            result[f"swagger-{tag}"] = {"commit": commit, "schema": _closure(swagger["definitions"], "#/definitions/")}
    result["strict-v2.13"] = {"commit": result["openapi-v2.13"]["commit"],
                              "schema": _strict(result["openapi-v2.13"]["schema"])}
    Path(__file__).with_name("catalog_schemas.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
