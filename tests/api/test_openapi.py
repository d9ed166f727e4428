"""The self-description: /openapi.json is a valid OpenAPI 3 document covering every route, and every plan links
to it from its catalog metadata."""

from __future__ import annotations

import re

from openapi_spec_validator import validate


def test_openapi_document_is_valid_and_documents_the_dr_action_extension(osb) -> None:
    r = osb.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json
    validate(doc)
    patch = doc["paths"]["/v2/service_instances/{instance_id}"]["patch"]
    ext = patch["requestBody"]["content"]["application/json"]["schema"]["x-dr-action"]
    assert set(ext["schema"]["properties"]["type"]["enum"]) == {"test_failover", "cleanup_test", "failover",
                                                                 "failback", "resync", "rehearsal"}


def test_openapi_document_covers_every_route_of_the_app(osb, app) -> None:
    doc = osb.get("/openapi.json").json
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (path, method)


def test_openapi_document_needs_authentication(client) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 401
    assert r.json["error"]


def test_every_plan_links_to_the_extension_document(osb) -> None:
    for plan in osb.get("/v2/catalog").json["services"][0]["plans"]:
        (ext,) = plan["metadata"]["extensions"]
        assert ext["id"] == "dr-actions" and ext["openapi_url"] == "/openapi.json"
