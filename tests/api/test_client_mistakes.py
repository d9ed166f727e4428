"""A sweep of client mistakes over every endpoint: each gets a 4xx OSB error, never a 5xx, and writes
nothing (OSB rules E1-E3). The endpoint-specific files assert the exact codes; this one guards against a
crash anywhere."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import assert_error, operation_row, snapshot
from tests.conftest import GRS_PARAMS, GRS_PLAN, SERVICE_ID

Q = f"service_id={SERVICE_ID}&plan_id={GRS_PLAN}"
MUTATIONS = [
    ("PUT", "/v2/service_instances/i-1?accepts_incomplete=true"),
    ("PUT", "/v2/service_instances/i-new?accepts_incomplete=true"),
    ("PATCH", "/v2/service_instances/i-1?accepts_incomplete=true"),
    ("PUT", "/v2/service_instances/i-1/service_bindings/b-1"),
    ("PUT", "/v2/service_instances/i-1/service_bindings/b-1?accepts_incomplete=true"),
    ("PUT", "/bluemix_v1/service_instances/i-1"),
]
BAD_BODIES = [
    b"", b" ", b"{", b"}", b"[]", b"[{}]", b"null", b"true", b"1e999", b'"x"', b"{\"a\":}", b"\x00", b"\xc3\x28",
    b'{"service_id": {"$ne": null}}', b'{"service_id": ["a"], "plan_id": {}}', b'{"parameters": NaN}',
    b'{"parameters": {"rpo_target_minutes": Infinity}}', b'{"context": {"platform": 7}}',
    b'{"bind_resource": [], "parameters": []}', b'{"maintenance_info": {"version": {}}}',
    json.dumps({"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "parameters": {"\u0000": "\ud800"}}).encode(),
    json.dumps({"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "organization_guid": "o", "space_guid": "s",
                "parameters": {**GRS_PARAMS, "protected_volumes": "vol-1"}}).encode(),
    json.dumps({"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "organization_guid": "o", "space_guid": "s",
                "parameters": {**GRS_PARAMS, "rpo_target_minutes": 10 ** 40}}).encode(),
    json.dumps({"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "organization_guid": "o", "space_guid": "s",
                "parameters": {**GRS_PARAMS, "orchestrator": {"name": "x", "password": "p" * 8}}}).encode(),
    json.dumps({"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "organization_guid": "o", "space_guid": "s",
                "parameters": {**GRS_PARAMS, "primary_workspace_crn": GRS_PARAMS["secondary_workspace_crn"]}}).encode(),
]


@pytest.mark.parametrize(("method", "path"), MUTATIONS)
def test_malformed_bodies_get_a_4xx_and_write_nothing(ready_db, osb, worker, method, path):
    before = snapshot(worker)
    for raw in BAD_BODIES:
        r = osb.client.open(path, method=method, data=raw, headers=osb.headers, content_type="application/json")
        assert 400 <= r.status_code < 500, (raw, r.status_code, r.get_data(as_text=True))
        assert_error(r, r.status_code)
        assert snapshot(worker) == before, raw


BAD_QUERIES = ["accepts_incomplete=maybe", "accepts_incomplete", "accepts_incomplete=%FF",
               "service_id=%00&plan_id=x", "plan_id=" + "p" * 1000, "service_id[]=1", "%ZZ=1"]


@pytest.mark.parametrize("query", BAD_QUERIES)
def test_malformed_delete_queries_get_a_4xx_and_write_nothing(ready_db, osb, worker, query):
    osb.bind("i-1", "b-1")
    before = snapshot(worker)
    for path in ("/v2/service_instances/i-1", "/v2/service_instances/i-1/service_bindings/b-1"):
        r = osb.delete(f"{path}?{query}")
        assert 400 <= r.status_code < 500, (path, r.get_data(as_text=True))
        assert_error(r, r.status_code)
    assert snapshot(worker) == before


BAD_IDS = ["%FF", "%C0%AF", "a%00", "%0D%0A", "x" * 256, "%2F" * 256]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_malformed_ids_get_a_4xx_on_every_endpoint(osb, runtime, bad):
    before = snapshot(runtime)
    for method, path in [
        ("PUT", f"/v2/service_instances/{bad}?accepts_incomplete=true"),
        ("PATCH", f"/v2/service_instances/{bad}?accepts_incomplete=true"),
        ("DELETE", f"/v2/service_instances/{bad}?{Q}&accepts_incomplete=true"),
        ("GET", f"/v2/service_instances/{bad}"),
        ("GET", f"/v2/service_instances/{bad}/last_operation"),
        ("PUT", f"/v2/service_instances/i-1/service_bindings/{bad}"),
        ("DELETE", f"/v2/service_instances/i-1/service_bindings/{bad}?{Q}"),
        ("GET", f"/v2/service_instances/i-1/service_bindings/{bad}"),
        ("GET", f"/v2/service_instances/{bad}/service_bindings/b/last_operation"),
        ("GET", f"/bluemix_v1/service_instances/{bad}"),
        ("PUT", f"/bluemix_v1/service_instances/{bad}"),
        ("GET", f"/dashboard/instances/{bad}"),
    ]:
        body = json.dumps({"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "enabled": True})
        r = osb.client.open(path, method=method, data=body if method in ("PUT", "PATCH") else None,
                            headers=osb.headers, content_type="application/json")
        assert 400 <= r.status_code < 500, (method, path, r.get_data(as_text=True))
        assert_error(r, r.status_code)
    assert snapshot(runtime) == before


def test_a_very_long_request_identity_is_echoed_and_stored_within_the_column(osb, runtime):
    ident = "r" * 5000
    r = osb.put("/v2/service_instances/i-1?accepts_incomplete=true",
                {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "organization_guid": "o", "space_guid": "s",
                 "parameters": GRS_PARAMS}, headers={"X-Broker-API-Request-Identity": ident})
    assert r.status_code == 202
    assert r.headers["X-Broker-API-Request-Identity"] == ident
    stored = operation_row(runtime, r.json["operation"]).request_identity
    assert stored and len(stored) <= 255 and ident.startswith(stored)
