"""Bad input over real HTTP: every kind gets a 4xx OSB error body, never a 5xx, and leaves no rows behind."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.conftest import GRS_PARAMS, GRS_PLAN, PASSWORD, SERVICE_ID, USER
from tests.e2e.conftest import VERSION, BrokerProcess, Client, query

INSTANCE = "/v2/service_instances/e2e-bad-1"
PROVISION = f"{INSTANCE}?accepts_incomplete=true"
BINDING = f"{INSTANCE}/service_bindings/e2e-bad-binding"
IDS = f"service_id={SERVICE_ID}&plan_id={GRS_PLAN}"
VALID = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "organization_guid": "org-1", "space_guid": "space-1",
         "parameters": GRS_PARAMS}
BIND = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN}
TABLES = ("instances", "bindings", "operations", "operation_steps")
SIM = "SELECT * FROM sim_resources ORDER BY id"  # the simulated cloud (seeded at start)


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    body: Any = None  # dict/list: sent as JSON; bytes/str: sent as is; a callable: a chunked generator
    status: int = 400
    headers: dict[str, str | None] = field(default_factory=dict)  # None removes a header
    mentions: str | None = None  # the description must name this (the offending field)

    def data(self) -> Any:
        if self.body is None:
            return None
        if callable(self.body):
            return self.body()
        if isinstance(self.body, bytes | str):
            return self.body
        return json.dumps(self.body)


def send(base_url: str, case: Case) -> requests.Response:
    """One request on a fresh connection: after a 413 the server may close a kept-alive connection."""
    headers: dict[str, str | None] = {"X-Broker-API-Version": VERSION, "Content-Type": "application/json",
                                      **case.headers}
    auth = None if "Authorization" in case.headers else (USER, PASSWORD)
    return requests.request(case.method, base_url + case.path, data=case.data(), headers=headers, auth=auth,
                            timeout=30)


def with_(**changes: Any) -> dict[str, Any]:
    return {**VALID, **changes}


def without(*names: str, base: dict[str, Any] = VALID) -> dict[str, Any]:
    return {k: v for k, v in base.items() if k not in names}


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(depth - 1):
        node = {"a": node}
    return node


def chunks_of_3_mib() -> Iterator[bytes]:
    yield b'{"service_id": "'
    for _ in range(48):
        yield b"x" * 65536
    yield b'"}'


def padded_chunks() -> Iterator[bytes]:
    """A valid request followed by 2 MiB of whitespace: still JSON, but far over the limit."""
    yield json.dumps(VALID).encode()
    for _ in range(32):
        yield b" " * 65536


MiB = 1024 * 1024

CASES = [
    # bodies that are not a JSON object
    Case("malformed JSON", "PUT", PROVISION, b'{"service_id": "abc", '),
    Case("JSON array body", "PUT", PROVISION, b"[1, 2, 3]", mentions="object"),
    Case("JSON string body", "PUT", PROVISION, b'"hello"'),
    Case("JSON null body", "PUT", PROVISION, b"null"),
    Case("empty body", "PUT", PROVISION, b""),
    Case("whitespace body", "PUT", PROVISION, b"  \n "),
    Case("invalid UTF-8 bytes", "PUT", PROVISION, b'{"service_id": "\xff\xfe\xc3\x28"}'),
    Case("integer too long to parse", "PUT", PROVISION, b'{"service_id": ' + b"1" * 5000 + b"}"),
    Case("depth 100", "PUT", PROVISION, with_(parameters=nested(100)), mentions="nested"),
    Case("depth 100000 raw", "PUT", PROVISION, "[" * 100000 + "]" * 100000),
    Case("depth 100000 object raw", "PUT", PROVISION, '{"a":' * 100000 + "1" + "}" * 100000),
    # wrong types for every body field
    Case("service_id int", "PUT", PROVISION, with_(service_id=42), mentions="service_id"),
    Case("service_id empty", "PUT", PROVISION, with_(service_id=""), mentions="service_id"),
    Case("plan_id list", "PUT", PROVISION, with_(plan_id=[GRS_PLAN]), mentions="plan_id"),
    Case("plan_id missing", "PUT", PROVISION, without("plan_id"), mentions="plan_id"),
    Case("organization_guid int", "PUT", PROVISION, with_(organization_guid=7), mentions="organization_guid"),
    Case("space_guid object", "PUT", PROVISION, with_(space_guid={"a": 1}), mentions="space_guid"),
    Case("org and space missing without context", "PUT", PROVISION, without("organization_guid", "space_guid"),
         mentions="organization_guid"),
    Case("parameters string", "PUT", PROVISION, with_(parameters="{}"), mentions="parameters"),
    Case("parameters list", "PUT", PROVISION, with_(parameters=[GRS_PARAMS]), mentions="parameters"),
    Case("context list", "PUT", PROVISION, with_(context=["platform", "cloudfoundry"]), mentions="context"),
    Case("maintenance_info string", "PUT", PROVISION, with_(maintenance_info="1.0.0"), mentions="maintenance_info"),
    Case("maintenance_info.version int", "PUT", PROVISION, with_(maintenance_info={"version": 1}),
         mentions="maintenance_info.version"),
    Case("unknown service_id", "PUT", PROVISION, with_(service_id="no-such-service"), mentions="service_id"),
    Case("unknown plan_id", "PUT", PROVISION, with_(plan_id="no-such-plan"), mentions="plan_id"),
    # unknown top-level fields are ignored (the error is about the real problem), unknown parameters are not
    Case("unknown top-level field is ignored", "PUT", PROVISION,
         {**without("plan_id"), "x_extension_field": {"a": 1}, "zzz": [1, 2]}, mentions="plan_id"),
    Case("unknown parameter", "PUT", PROVISION, with_(parameters={**GRS_PARAMS, "rpo_targte_minutes": 5}),
         mentions="rpo_targte_minutes"),
    Case("parameter of the wrong type", "PUT", PROVISION, with_(parameters={**GRS_PARAMS, "rpo_target_minutes": "15"}),
         mentions="parameters.rpo_target_minutes"),
    Case("NaN parameter", "PUT", PROVISION,
         json.dumps(with_(parameters={**GRS_PARAMS, "rpo_target_minutes": float("nan")})),
         mentions="rpo_target_minutes"),
    Case("missing required parameter", "PUT", PROVISION,
         with_(parameters=without("protected_volumes", base=GRS_PARAMS)), mentions="protected_volumes"),
    Case("lone surrogate in organization_guid", "PUT", PROVISION, b'{"service_id": "' + SERVICE_ID.encode() +
         b'", "plan_id": "' + GRS_PLAN.encode() + b'", "organization_guid": "org-\\ud800", "space_guid": "s",'
         b' "parameters": ' + json.dumps(GRS_PARAMS).encode() + b"}"),
    # size
    Case("2 MiB body", "PUT", PROVISION, json.dumps(with_(space_guid="x" * (2 * MiB))).encode(), status=413),
    Case("3 MiB chunked body", "PUT", PROVISION, chunks_of_3_mib, status=413),
    Case("valid JSON padded to 2 MiB, chunked", "PUT", PROVISION, padded_chunks, status=413),
    Case("chunked JSON array", "PUT", PROVISION, lambda: iter([b"[1,", b" 2]"]), mentions="object"),
    # ids
    Case("instance id of 256 characters", "PUT", f"/v2/service_instances/{'i' * 256}?accepts_incomplete=true",
         VALID, mentions="instance_id"),
    Case("instance id of 3000 characters", "GET", f"/v2/service_instances/{'i' * 3000}/last_operation",
         mentions="instance_id"),
    Case("instance id of 1000 characters", "PUT", f"/v2/service_instances/{'i' * 1000}?accepts_incomplete=true",
         VALID, mentions="instance_id"),
    Case("binding id of 256 characters", "PUT", f"{INSTANCE}/service_bindings/{'b' * 256}", BIND,
         mentions="binding_id"),
    Case("instance id with %00", "PUT", "/v2/service_instances/bad%00id?accepts_incomplete=true", VALID,
         mentions="instance_id"),
    Case("instance id with %0A", "PUT", "/v2/service_instances/bad%0Aid?accepts_incomplete=true", VALID,
         mentions="instance_id"),
    Case("instance id with %7F", "PUT", "/v2/service_instances/bad%7Fid?accepts_incomplete=true", VALID,
         mentions="instance_id"),
    Case("instance id with invalid UTF-8 %FF", "PUT", "/v2/service_instances/bad%FFid?accepts_incomplete=true",
         VALID, mentions="instance_id"),
    Case("binding id with %0A", "PUT", f"{INSTANCE}/service_bindings/b%0Ab", BIND, mentions="binding_id"),
    Case("last_operation of an id with %00", "GET", "/v2/service_instances/bad%00id/last_operation",
         mentions="instance_id"),
    # query parameters
    Case("accepts_incomplete=yes", "PUT", f"{INSTANCE}?accepts_incomplete=yes", VALID, mentions="accepts_incomplete"),
    Case("accepts_incomplete=True", "PUT", f"{INSTANCE}?accepts_incomplete=True", VALID,
         mentions="accepts_incomplete"),
    Case("accepts_incomplete=1", "PUT", f"{INSTANCE}?accepts_incomplete=1", VALID, mentions="accepts_incomplete"),
    Case("accepts_incomplete empty", "PUT", f"{INSTANCE}?accepts_incomplete=", VALID, mentions="accepts_incomplete"),
    Case("provision without accepts_incomplete", "PUT", INSTANCE, VALID, status=422),
    Case("DELETE without query parameters", "DELETE", f"{INSTANCE}?accepts_incomplete=true", mentions="service_id"),
    Case("DELETE without plan_id", "DELETE", f"{INSTANCE}?service_id={SERVICE_ID}&accepts_incomplete=true",
         mentions="plan_id"),
    Case("DELETE without service_id", "DELETE", f"{INSTANCE}?plan_id={GRS_PLAN}&accepts_incomplete=true",
         mentions="service_id"),
    Case("DELETE with a non-boolean accepts_incomplete", "DELETE", f"{INSTANCE}?{IDS}&accepts_incomplete=maybe",
         mentions="accepts_incomplete"),
    Case("DELETE of an unknown instance", "DELETE", f"{INSTANCE}?{IDS}&accepts_incomplete=true", status=410),
    Case("DELETE with a NUL in plan_id", "DELETE", f"{INSTANCE}?service_id={SERVICE_ID}&plan_id=a%00b"
         "&accepts_incomplete=true", mentions="plan_id"),
    Case("DELETE with invalid UTF-8 in service_id", "DELETE", f"{INSTANCE}?service_id=%FF%FE&plan_id={GRS_PLAN}"
         "&accepts_incomplete=true", mentions="service_id"),
    Case("unbind without query parameters", "DELETE", BINDING, mentions="service_id"),
    Case("unbind without plan_id", "DELETE", f"{BINDING}?service_id={SERVICE_ID}", mentions="plan_id"),
    Case("unbind of an unknown binding", "DELETE", f"{BINDING}?{IDS}", status=410),
    # update
    Case("PATCH service_id int", "PATCH", f"{INSTANCE}?accepts_incomplete=true", {"service_id": 1},
         mentions="service_id"),
    Case("PATCH previous_values list", "PATCH", f"{INSTANCE}?accepts_incomplete=true",
         {"service_id": SERVICE_ID, "previous_values": []}, mentions="previous_values"),
    Case("PATCH parameters string", "PATCH", f"{INSTANCE}?accepts_incomplete=true",
         {"service_id": SERVICE_ID, "parameters": "x"}, mentions="parameters"),
    Case("PATCH array body", "PATCH", f"{INSTANCE}?accepts_incomplete=true", b"[]"),
    Case("PATCH of an unknown instance", "PATCH", f"{INSTANCE}?accepts_incomplete=true",
         {"service_id": SERVICE_ID, "parameters": {"rpo_target_minutes": 5}}, status=404),
    # bind
    Case("bind malformed JSON", "PUT", BINDING, b"{"),
    Case("bind array body", "PUT", BINDING, b"[]"),
    Case("bind service_id int", "PUT", BINDING, {**BIND, "service_id": 1}, mentions="service_id"),
    Case("bind parameters string", "PUT", BINDING, {**BIND, "parameters": "x"}, mentions="parameters"),
    Case("bind context list", "PUT", BINDING, {**BIND, "context": []}, mentions="context"),
    Case("bind_resource string", "PUT", BINDING, {**BIND, "bind_resource": "app"}, mentions="bind_resource"),
    Case("bind_resource.serviceid_crn int", "PUT", BINDING, {**BIND, "bind_resource": {"serviceid_crn": 5}},
         mentions="bind_resource.serviceid_crn"),
    Case("bind app_guid list", "PUT", BINDING, {**BIND, "app_guid": ["a"]}, mentions="app_guid"),
    Case("bind unknown parameter", "PUT", BINDING, {**BIND, "parameters": {"purpose": "readonly", "colour": "red"}},
         mentions="colour"),
    Case("bind on an unknown instance", "PUT", BINDING, BIND, status=404),
    Case("bind accepts_incomplete=on", "PUT", f"{BINDING}?accepts_incomplete=on", BIND,
         mentions="accepts_incomplete"),
    # headers
    Case("no X-Broker-API-Version", "PUT", PROVISION, VALID, status=412, headers={"X-Broker-API-Version": None}),
    Case("empty X-Broker-API-Version", "PUT", PROVISION, VALID, status=412, headers={"X-Broker-API-Version": ""}),
    Case("X-Broker-API-Version 2.x", "PUT", PROVISION, VALID, status=412, headers={"X-Broker-API-Version": "2.x"}),
    Case("X-Broker-API-Version 3.0", "GET", "/v2/catalog", status=412, headers={"X-Broker-API-Version": "3.0"}),
    Case("X-Broker-API-Version 2.11", "PUT", PROVISION, VALID, status=412,
         headers={"X-Broker-API-Version": "2.11"}),
    Case("wrong password", "PUT", PROVISION, VALID, status=401, headers={"Authorization": "Basic d3Jvbmc6d3Jvbmc="}),
    Case("malformed basic auth", "PUT", PROVISION, VALID, status=401, headers={"Authorization": "Basic %%%"}),
    Case("no authorization", "PUT", PROVISION, VALID, status=401, headers={"Authorization": None}),
    Case("bearer instead of basic", "PUT", PROVISION, VALID, status=401, headers={"Authorization": "Bearer abc"}),
    Case("catalog without authorization", "GET", "/v2/catalog", status=401, headers={"Authorization": None}),
    Case("originating identity not base64", "PUT", PROVISION, VALID,
         headers={"X-Broker-API-Originating-Identity": "cloudfoundry %%%"},
         mentions="X-Broker-API-Originating-Identity"),
    Case("originating identity without a value", "PUT", PROVISION, VALID,
         headers={"X-Broker-API-Originating-Identity": "cloudfoundry"}, mentions="X-Broker-API-Originating-Identity"),
    Case("originating identity not an object", "PUT", PROVISION, VALID,
         headers={"X-Broker-API-Originating-Identity": "cloudfoundry WzEsMl0="},
         mentions="X-Broker-API-Originating-Identity"),
    # IBM extension
    Case("bluemix enabled as a string", "PUT", "/bluemix_v1/service_instances/e2e-bad-1", {"enabled": "false"},
         mentions="enabled"),
    Case("bluemix malformed JSON", "PUT", "/bluemix_v1/service_instances/e2e-bad-1", b"{enabled: false}"),
    Case("bluemix of an unknown instance", "PUT", "/bluemix_v1/service_instances/e2e-bad-1", {"enabled": False},
         status=404),
    Case("bluemix id with %00", "GET", "/bluemix_v1/service_instances/bad%00id", mentions="instance_id"),
    # routes and methods that do not exist
    Case("POST on an instance", "POST", INSTANCE, VALID, status=405),
    Case("unknown path", "GET", "/v2/service_instances/e2e-bad-1/nothing", status=404),
    # fetches of what does not exist
    Case("fetch of an unknown instance", "GET", INSTANCE, status=404),
    Case("last_operation of an unknown instance", "GET", f"{INSTANCE}/last_operation", status=404),
    Case("fetch of an unknown binding", "GET", BINDING, status=404),
    Case("dashboard of an unknown instance", "GET", "/dashboard/instances/e2e-bad-1", status=404),
]


def test_bad_input_never_5xx_and_leaves_no_rows(broker_factory: Callable[..., BrokerProcess],
                                                client_for: Callable[..., Client], db_path: Path) -> None:
    broker = broker_factory(db_path)
    cloud_before = query(db_path, SIM)
    problems = []
    for case in CASES:
        try:
            r = send(broker.url, case)
        except requests.RequestException as exc:
            problems.append(f"{case.name}: {case.method} {case.path[:80]} -> {exc!r}")
            continue
        try:
            body = r.json()
        except ValueError:
            body = None
        where = f"{case.name}: {case.method} {case.path[:80]} -> {r.status_code} {r.text[:300]!r}"
        if r.status_code >= 500 or r.status_code != case.status:
            problems.append(f"{where} (expected {case.status})")
            continue
        if not (isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]
                and isinstance(body.get("description"), str) and body["description"]):
            problems.append(f"{where} (not an OSB error body)")
            continue
        if not r.headers.get("Content-Type", "").startswith("application/json"):
            problems.append(f"{where} (Content-Type {r.headers.get('Content-Type')})")
        if case.mentions and case.mentions not in body["description"]:
            problems.append(f"{where} (the description does not name {case.mentions!r})")
        if ("instance_usable" in body or "update_repeatable" in body) and case.method not in ("PATCH", "DELETE"):
            problems.append(f"{where} (instance_usable/update_repeatable outside update/deprovision)")
    assert not problems, "\n".join(problems) + "\n" + broker.log_tail(3000)
    assert broker.alive()
    assert requests.get(f"{broker.url}/healthz", timeout=10).status_code == 200

    for table in TABLES:
        assert query(db_path, f"SELECT COUNT(*) AS n FROM {table}") == [{"n": 0}], table
    assert query(db_path, SIM) == cloud_before

    # The same request with unknown top-level fields and nothing else wrong is accepted: they are ignored.
    osb = client_for(broker)
    r = osb.put(PROVISION, {**VALID, "x_extension_field": {"nested": [1, 2]}, "unknown_flag": True})
    assert r.status_code == 202, r.text
    assert query(db_path, "SELECT id FROM instances") == [{"id": "e2e-bad-1"}]
    (op,) = query(db_path, "SELECT type FROM operations")
    assert op == {"type": "provision"}
