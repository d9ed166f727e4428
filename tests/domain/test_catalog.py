from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from broker.domain.catalog import load_catalog
from broker.domain.errors import CatalogError
from tests.conftest import GRS_PLAN, ROOT, SERVICE_ID

SHIPPED = ROOT / "catalog"


def _write(tmp_path: Path, data: object, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _minimal() -> dict:
    schema = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
              "additionalProperties": False, "properties": {"a": {"type": "integer"}}, "examples": [{"a": 1}]}
    return {"services": [{"id": "svc", "name": "svc", "description": "d", "bindable": True, "plans": [
        {"id": "p1", "name": "p1", "description": "d", "maintenance_info": {"version": "1.0.0"},
         "schemas": {"service_instance": {"create": {"parameters": schema}}}}]}]}


def test_shipped_catalog_loads_and_strips_private_features() -> None:
    cat = load_catalog(SHIPPED, env={})
    assert cat.service(SERVICE_ID) is not None
    assert cat.plan(GRS_PLAN).name == "grs-async"
    doc = json.loads(cat.document_json)
    for plan in doc["services"][0]["plans"]:
        assert "features" not in plan
        assert plan["schemas"]["service_instance"]["create"]["parameters"]["$schema"]
    assert "definitions" not in doc


def test_ids_come_from_the_environment_when_set() -> None:
    cat = load_catalog(SHIPPED, env={"DRBROKER_SERVICE_ID": "partner-center-guid",
                                     "DRBROKER_PLAN_ID_GRS_ASYNC": "plan-guid-from-pc"})
    assert cat.service("partner-center-guid") is not None
    assert cat.plan("plan-guid-from-pc").name == "grs-async"


def test_minimal_catalog_is_valid(tmp_path: Path) -> None:
    cat = load_catalog(_write(tmp_path, _minimal()), env={})
    assert cat.plan("p1").maintenance_version == "1.0.0"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["services"][0].pop("bindable"), r"services\[0\]: 'bindable' is a required property"),
        (lambda c: c["services"][0]["plans"][0].update(id=""), r"services\[0\]\.plans\[0\]\.id"),
        (lambda c: c["services"][0]["plans"].append(dict(c["services"][0]["plans"][0], name="p2")),
         r"plans\[1\]\.id: 'p1' is not unique"),
        (lambda c: c["services"][0]["plans"][0]["maintenance_info"].update(version="1.0"),
         r"maintenance_info\.version: '1\.0' is not semver"),
        (lambda c: c["services"][0]["plans"][0]["schemas"]["service_instance"]["create"]["parameters"].pop(
            "$schema"), r"create\.parameters: \$schema is required"),
        (lambda c: c["services"][0]["plans"][0]["schemas"]["service_instance"]["create"]["parameters"].pop(
            "examples"), r"create\.parameters\.examples: at least one example"),
        (lambda c: c["services"][0]["plans"][0]["schemas"]["service_instance"]["create"]["parameters"].update(
            examples=[{"a": "x"}]), r"examples\[0\]: does not validate: a: 'x' is not of type 'integer'"),
        (lambda c: c["services"][0]["plans"][0]["schemas"]["service_instance"]["create"]["parameters"].update(
            type="nonsense"), r"not a valid JSON schema"),
        (lambda c: c["services"][0]["plans"][0]["schemas"]["service_instance"]["create"]["parameters"][
            "properties"].update(b={"$ref": "http://example.com/s.json"}), r"external \$ref"),
    ],
)
def test_broken_catalog_names_file_and_field(tmp_path: Path, mutate, expected: str) -> None:
    data = _minimal()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(CatalogError, match=expected) as info:
        load_catalog(path, env={})
    assert str(path) in str(info.value)


def test_unset_variable_without_default_is_an_error(tmp_path: Path) -> None:
    data = _minimal()
    data["services"][0]["id"] = "${NOT_SET_ANYWHERE}"
    with pytest.raises(CatalogError, match="NOT_SET_ANYWHERE is referenced but not set"):
        load_catalog(_write(tmp_path, data), env={})


def test_invalid_yaml_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(_write(tmp_path, "services: [\n  - id: x\n    name: [unclosed"), env={})


def test_schema_over_64_kb_is_refused(tmp_path: Path) -> None:
    data = _minimal()
    params = data["services"][0]["plans"][0]["schemas"]["service_instance"]["create"]["parameters"]
    params["description"] = "x" * 70_000
    with pytest.raises(CatalogError, match="64 kB"):
        load_catalog(_write(tmp_path, data), env={})


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no catalog files"):
        load_catalog(tmp_path, env={})


def test_broken_catalog_stops_serve_with_message(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from broker.cli import main

    bad = _minimal()
    bad["services"][0].pop("plans")
    path = _write(tmp_path, bad)
    result = CliRunner().invoke(main, ["catalog", "validate", str(path)])
    assert result.exit_code != 0
    assert "'plans' is a required property" in result.output
    assert str(path) in result.output
