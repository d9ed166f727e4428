"""broker/api/versions.py against the spec itself, and our catalog against each version's own schema.

Fixtures in tests/api/osb_versions/ (regenerate with the two extract_*.py scripts there):
- spec_fields.json: the response field tables of spec.md at tags v2.12..v2.17 of
  github.com/openservicebrokerapi/servicebroker (commits recorded inside);
- catalog_schemas.json: the Catalog schema of openapi.yaml (v2.13+) and swagger.yaml (v2.14+) at those tags,
  and ``strict-v2.13``: the v2.13 openapi.yaml Catalog schema with ``additionalProperties: false`` on every
  object it defines field by field (a strict client written for 2.13).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from broker.api.versions import FIELDS, MAX_MINOR, MIN_MINOR, prune

DATA = Path(__file__).parent / "osb_versions"
SPEC = json.loads((DATA / "spec_fields.json").read_text())["versions"]
SCHEMAS = json.loads((DATA / "catalog_schemas.json").read_text())
# openapi.yaml v2.14-v2.16 point the parameters schema at the draft-04 meta-schema by URL: serve it locally
_META = Resource.from_contents(Draft4Validator.META_SCHEMA, default_specification=DRAFT4)
REGISTRY = Registry().with_resources([("http://json-schema.org/draft-04/schema", _META),
                                      ("http://json-schema.org/draft-04/schema#", _META)])
# The one boundary the field tables do not show: 2.12/2.13 list only `description` under "Broker Errors",
# but their status tables require bodies like {"error": "AsyncRequired", "description": ...}.
NOT_IN_TABLES = {("error", "error"): 12}


def first_version(kind: str, name: str) -> int | None:
    return next((int(tag.split(".")[1]) for tag, v in SPEC.items() if name in v["fields"].get(kind, [])), None)


def test_every_table_boundary_is_the_spec_texts():
    for kind, table in FIELDS.items():
        for name, since in table.items():
            assert since == NOT_IN_TABLES.get((kind, name), first_version(kind, name)), (kind, name)


def test_every_response_field_of_the_spec_is_in_the_table():
    for tag, version in SPEC.items():
        for kind, names in version["fields"].items():
            assert set(names) <= set(FIELDS[kind]), (tag, kind, set(names) - set(FIELDS[kind]))


@pytest.mark.parametrize(("kind", "name", "since"), [
    ("plan", "maintenance_info", 15), ("plan", "plan_updateable", 15), ("plan", "maximum_polling_duration", 15),
    ("plan", "schemas", 13), ("plan", "binding_rotatable", 17), ("service", "instances_retrievable", 14),
    ("service", "bindings_retrievable", 14), ("service", "allow_context_updates", 15),
    ("fetch_instance", "metadata", 17), ("fetch_instance", "maintenance_info", 17),
    ("last_operation", "instance_usable", 16), ("error", "update_repeatable", 16), ("bind", "metadata", 16),
    ("bind", "operation", 14), ("binding_metadata", "expires_at", 16), ("binding_metadata", "renew_before", 17),
    ("instance_metadata", "attributes", 17), ("update", "dashboard_url", 14),
])
def test_the_spec_fixture_holds_the_boundaries_we_read(kind, name, since):
    """The same facts, read by hand in spec.md at each tag: a wrong regeneration of the fixture shows here."""
    assert first_version(kind, name) == since


def test_prune_drops_fields_unknown_or_newer_at_every_level():
    body = {"services": [{"id": "s", "name": "n", "description": "d", "bindable": True, "x-vendor": 1,
                          "plans": [{"id": "p", "name": "n", "description": "d", "maintenance_info": {
                              "version": "1.0.0", "description": "x", "extra": 1}}]}]}
    assert prune("catalog", body, 14)["services"][0] == {
        "id": "s", "name": "n", "description": "d", "bindable": True,
        "plans": [{"id": "p", "name": "n", "description": "d"}]}
    assert prune("catalog", body, 15)["services"][0]["plans"][0]["maintenance_info"] == {
        "version": "1.0.0", "description": "x"}
    assert prune("fetch_binding", {"metadata": {"expires_at": "t", "renew_before": "u"}}, 16) == {
        "metadata": {"expires_at": "t"}}


def strict_errors(name: str, document: dict) -> list[str]:
    validator = Draft4Validator(SCHEMAS[name]["schema"], registry=REGISTRY)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


@pytest.mark.parametrize("minor", range(13, MAX_MINOR + 1))
def test_each_versions_catalog_validates_against_that_versions_own_schemas(osb, minor):
    document = osb.get("/v2/catalog", headers={"X-Broker-API-Version": f"2.{minor}"}).json
    names = [n for n in (f"openapi-v2.{minor}", f"swagger-v2.{minor}") if n in SCHEMAS]
    assert names
    for name in names:
        assert strict_errors(name, document) == [], name


def test_a_strict_2_13_client_accepts_our_2_13_catalog(osb):
    for minor in (MIN_MINOR, 13):  # 2.12 has no schema of its own; its catalog is a subset of 2.13's
        document = osb.get("/v2/catalog", headers={"X-Broker-API-Version": f"2.{minor}"}).json
        assert strict_errors("strict-v2.13", document) == []


@pytest.mark.parametrize("minor", [14, 17])
def test_the_strict_2_13_schema_refuses_newer_catalogs(osb, minor):
    """What a strict 2.13 client did to our catalog before answers followed the version."""
    document = osb.get("/v2/catalog", headers={"X-Broker-API-Version": f"2.{minor}"}).json
    errors = strict_errors("strict-v2.13", document)
    assert any("instances_retrievable" in e for e in errors)
    assert (minor == 17) is any("maintenance_info" in e for e in errors)
