"""The OSB bodies are checked with one JSON schema each (broker/api/parsing.py), the same schemas /openapi.json
publishes; a fault is a 400 naming the field, never echoing its value."""

from __future__ import annotations

from typing import Any

import pytest

from broker.api import parsing as p
from broker.domain.errors import BadRequest

SP = {"service_id": "s", "plan_id": "p"}


def _problem(body: dict[str, Any], schema: dict[str, Any]) -> str:
    with pytest.raises(BadRequest) as caught:
        p.check_body(body, schema)
    return str(caught.value)


@pytest.mark.parametrize(("body", "expected"), [
    ({"plan_id": "p"}, "service_id: is required"),
    ({"service_id": None, "plan_id": "p"}, "service_id: is required"),  # null is absent
    ({"service_id": "", "plan_id": "p"}, "service_id: must not be empty"),
    ({"service_id": 7, "plan_id": "p"}, "service_id: must be a string"),
    ({"service_id": "s", "plan_id": "p", "context": []}, "context: must be an object"),
    ({"service_id": "s", "plan_id": "p", "space_guid": "g" * 256}, "space_guid: longer than 255 characters"),
    ({"service_id": "s", "plan_id": "p", "maintenance_info": {}}, "maintenance_info.version: is required"),
    ({**SP, "maintenance_info": {"version": None}}, "maintenance_info.version: is required"),
    ({**SP, "maintenance_info": {"version": 2}}, "maintenance_info.version: must be a string"),
    # several faults: the first in the schema's property order is named
    ({"parameters": 1, "plan_id": 2, "service_id": 3}, "service_id: must be a string"),
    ({"parameters": 1, "plan_id": 2, "service_id": "s"}, "plan_id: must be a string"),
    ({"parameters": 1, "context": 2}, "service_id: is required"),
])
def test_provision_body_faults_name_the_field(body: dict[str, Any], expected: str) -> None:
    assert _problem(body, p.PROVISION_BODY) == expected


def test_a_fault_never_echoes_the_value() -> None:
    secret = "hunter2-" * 40
    for body in ({"service_id": secret, "plan_id": "p"}, {"service_id": "s", "plan_id": "p", "context": secret},
                 {"service_id": "s", "plan_id": "p", "bind_resource": {"route": [secret]}}):
        problem = _problem(body, p.BIND_BODY)
        assert "hunter2" not in problem, problem


def test_nulls_are_absent_and_the_body_is_returned_as_it_came() -> None:
    body = {"service_id": "s", "plan_id": "p", "app_guid": None, "bind_resource": {"route": None},
            "parameters": {"x": None}}
    assert p.check_body(body, p.BIND_BODY) == body
    assert p.check_body({"service_id": "s", "plan_id": None}, p.UPDATE_BODY) == {"service_id": "s", "plan_id": None}
    assert _problem({"service_id": "s", "plan_id": "p", "bind_resource": {"app_guid": 1}},
                    p.BIND_BODY) == "bind_resource.app_guid: must be a string"


def test_openapi_publishes_the_schemas_the_broker_checks_with(osb: Any) -> None:
    paths = osb.get("/openapi.json").json["paths"]

    def body(path: str, method: str) -> dict[str, Any]:
        return paths[path][method]["requestBody"]["content"]["application/json"]["schema"]

    inst = "/v2/service_instances/{instance_id}"
    assert body(inst, "put") == p.PROVISION_BODY
    assert {k: v for k, v in body(inst, "patch").items() if k != "x-dr-action"} == p.UPDATE_BODY
    assert body(inst + "/service_bindings/{binding_id}", "put") == p.BIND_BODY
