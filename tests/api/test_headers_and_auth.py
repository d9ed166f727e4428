"""Cross-cutting obligations: API version (412), authentication (401), their order, identity headers,
error bodies, and the generic HTTP errors (404/405/413)."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import assert_error, assert_rejected, identity, operation_row, snapshot
from tests.conftest import GRS_PARAMS, GRS_PLAN, HEADERS, OSB, SERVICE_ID, auth_header

PROVISION = "/v2/service_instances/i-1?accepts_incomplete=true"
BODY = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "organization_guid": "o", "space_guid": "s",
        "parameters": GRS_PARAMS}

ENDPOINTS = [
    ("GET", "/v2/catalog"),
    ("PUT", "/v2/service_instances/i-1?accepts_incomplete=true"),
    ("PATCH", "/v2/service_instances/i-1?accepts_incomplete=true"),
    ("DELETE", f"/v2/service_instances/i-1?service_id={SERVICE_ID}&plan_id={GRS_PLAN}&accepts_incomplete=true"),
    ("GET", "/v2/service_instances/i-1"),
    ("GET", "/v2/service_instances/i-1/last_operation"),
    ("PUT", "/v2/service_instances/i-1/service_bindings/b-1"),
    ("DELETE", f"/v2/service_instances/i-1/service_bindings/b-1?service_id={SERVICE_ID}&plan_id={GRS_PLAN}"),
    ("GET", "/v2/service_instances/i-1/service_bindings/b-1"),
    ("GET", "/v2/service_instances/i-1/service_bindings/b-1/last_operation"),
]


def call(client, method: str, path: str, headers: dict[str, str], body: object = BODY):
    data = json.dumps(body) if method in ("PUT", "PATCH") else None
    return client.open(path, method=method, headers=headers, data=data, content_type="application/json")


# --- X-Broker-API-Version ------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_missing_version_header_returns_412_on_every_osb_endpoint(client, runtime, method, path):
    before = snapshot(runtime)
    r = call(client, method, path, {"Authorization": auth_header()})
    body = assert_rejected(runtime, before, r, 412, "PreconditionFailed")
    assert "2.17" in body["description"]


def test_empty_version_header_returns_412(client, runtime):
    before = snapshot(runtime)
    r = call(client, "PUT", PROVISION, {"Authorization": auth_header(), "X-Broker-API-Version": ""})
    assert_rejected(runtime, before, r, 412, "PreconditionFailed")


@pytest.mark.parametrize("version", ["2.11", "2.18", "2.0", "1.17", "3.0", "3.12"])
def test_unsupported_version_returns_412_naming_the_version_to_use(osb, runtime, version):
    before = snapshot(runtime)
    r = osb.put(PROVISION, BODY, headers={"X-Broker-API-Version": version})
    body = assert_rejected(runtime, before, r, 412, "PreconditionFailed")
    assert "not supported" in body["description"] and "2.17" in body["description"]


@pytest.mark.parametrize("version", ["abc", "2", "2.", ".17", "2.x", "2.17.1", "v2.17", "2,17", "².17",
                                     "2.17; drop", "99999999999999999999.1"])
def test_malformed_version_header_returns_412_not_500(osb, runtime, version):
    before = snapshot(runtime)
    r = osb.put(PROVISION, BODY, headers={"X-Broker-API-Version": version})
    assert_rejected(runtime, before, r, 412, "PreconditionFailed")


@pytest.mark.parametrize("minor", range(12, 18))
def test_versions_2_12_to_2_17_are_accepted(osb, minor):
    r = osb.get("/v2/catalog", headers={"X-Broker-API-Version": f"2.{minor}"})
    assert r.status_code == 200, r.get_data(as_text=True)


def test_version_is_checked_before_authentication(client, runtime):
    before = snapshot(runtime)
    r = call(client, "PUT", PROVISION, {"X-Broker-API-Version": "2.99"})
    assert_rejected(runtime, before, r, 412, "PreconditionFailed")


# --- authentication ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_missing_credentials_return_401_on_every_osb_endpoint(client, runtime, method, path):
    before = snapshot(runtime)
    r = call(client, method, path, {"X-Broker-API-Version": "2.17"})
    assert_rejected(runtime, before, r, 401, "Unauthorized")
    assert r.headers["WWW-Authenticate"].lower().startswith("basic")


@pytest.mark.parametrize(("user", "password"), [
    ("platform", "wrong-password"),
    ("someone-else", "s3cret-platform-pass"),
    ("someone-else", "wrong-password"),
    ("platform", ""),
    ("", "s3cret-platform-pass"),
    ("platform", "s3cret-platform-pass "),
    ("PLATFORM", "s3cret-platform-pass"),
])
def test_wrong_username_or_password_returns_401(osb, runtime, user, password):
    before = snapshot(runtime)
    r = osb.put(PROVISION, BODY, headers={"Authorization": auth_header(user, password)})
    assert_rejected(runtime, before, r, 401, "Unauthorized")


@pytest.mark.parametrize("header", [
    "Basic", "Basic ", "Basic !!!not-base64!!!", "Basic " + "cGxhdGZvcm0=",  # "platform" without a colon
    "Basic //79", "Bearer abc.def.ghi", "Digest username=platform", "platform:s3cret-platform-pass",
])
def test_malformed_authorization_header_returns_401_not_500(osb, runtime, header):
    before = snapshot(runtime)
    r = osb.put(PROVISION, BODY, headers={"Authorization": header})
    assert_rejected(runtime, before, r, 401, "Unauthorized")


def test_authentication_is_checked_before_the_body(osb, runtime):
    before = snapshot(runtime)
    r = osb.put(PROVISION, b"{not json", headers={"Authorization": auth_header("platform", "nope")})
    assert_rejected(runtime, before, r, 401, "Unauthorized")


def test_authentication_is_checked_before_query_parameters(client, runtime):
    before = snapshot(runtime)
    r = client.delete("/v2/service_instances/i-1?accepts_incomplete=maybe", headers={"X-Broker-API-Version": "2.17"})
    assert_rejected(runtime, before, r, 401, "Unauthorized")


def test_healthz_needs_no_credentials(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json()["status"] == "ok"


# --- X-Broker-API-Originating-Identity -----------------------------------------------------------------

@pytest.mark.parametrize("header", [
    "",
    "   ",
    "cloudfoundry",
    "cloudfoundry ",
    " eyJ1c2VyX2lkIjoiMSJ9",
    "cloudfoundry not-base64!!",
    "cloudfoundry " + "bm90IGpzb24=",  # base64("not json")
    "cloudfoundry " + "WzEsMl0=",  # base64("[1,2]"): JSON, but not an object
    "cloudfoundry " + "//79",  # base64 of bytes that are not UTF-8
])
def test_malformed_originating_identity_returns_400_never_500(osb, runtime, header):
    before = snapshot(runtime)
    r = osb.put(PROVISION, BODY, headers={"X-Broker-API-Originating-Identity": header})
    body = assert_rejected(runtime, before, r, 400, "BadRequest")
    assert "X-Broker-API-Originating-Identity" in body["description"]


def test_originating_identity_is_stored_on_the_operation(osb, runtime):
    header = identity("cloudfoundry", {"user_id": "683ea748-3092-4ff4-b656-39cacc4d5360"})
    r = osb.put(PROVISION, BODY, headers={"X-Broker-API-Originating-Identity": header})
    assert r.status_code == 202, r.get_data(as_text=True)
    op = operation_row(runtime, r.json["operation"])
    assert op.originating_identity == {"platform": "cloudfoundry",
                                       "value": {"user_id": "683ea748-3092-4ff4-b656-39cacc4d5360"}}
    assert op.principal == "basic:platform"


def test_operation_without_originating_identity_stores_none(osb, runtime):
    r = osb.provision("i-1")
    assert r.status_code == 202
    assert operation_row(runtime, r.json["operation"]).originating_identity is None


# --- X-Broker-API-Request-Identity ---------------------------------------------------------------------

def test_request_identity_is_echoed_on_success(osb):
    r = osb.get("/v2/catalog", headers={"X-Broker-API-Request-Identity": "e26cea86-1a3d-4b1b-9b19-3b2cd4a56a1c"})
    assert r.status_code == 200
    assert r.headers["X-Broker-API-Request-Identity"] == "e26cea86-1a3d-4b1b-9b19-3b2cd4a56a1c"


@pytest.mark.parametrize(("headers", "status"), [
    ({"X-Broker-API-Version": "1.0"}, 412),
    ({"Authorization": auth_header("x", "y")}, 401),
    ({}, 400),
])
def test_request_identity_is_echoed_on_errors(osb, runtime, headers, status):
    before = snapshot(runtime)
    r = osb.put(PROVISION, b"[]", headers={"X-Broker-API-Request-Identity": "req-42", **headers})
    assert_rejected(runtime, before, r, status)
    assert r.headers["X-Broker-API-Request-Identity"] == "req-42"


def test_request_identity_is_stored_on_the_operation(osb, runtime):
    r = osb.put(PROVISION, BODY, headers={"X-Broker-API-Request-Identity": "req-77"})
    assert r.status_code == 202
    assert r.headers["X-Broker-API-Request-Identity"] == "req-77"
    assert operation_row(runtime, r.json["operation"]).request_identity == "req-77"


def test_no_request_identity_header_when_none_was_sent(osb):
    assert "X-Broker-API-Request-Identity" not in osb.get("/v2/catalog").headers


# --- generic HTTP errors -------------------------------------------------------------------------------

def test_unknown_route_returns_osb_json_404(osb):
    assert_error(osb.get("/v2/nothing/here"), 404)


def test_undeclared_method_returns_405_with_allow_and_osb_body(osb, runtime):
    before = snapshot(runtime)
    r = osb.client.post("/v2/service_instances/i-1", headers=HEADERS, json=BODY)
    assert_rejected(runtime, before, r, 405, "MethodNotAllowed")
    assert {"PUT", "PATCH", "DELETE", "GET"} <= {m.strip() for m in r.headers["Allow"].split(",")}


def test_body_over_one_mebibyte_returns_413(osb, runtime):
    before = snapshot(runtime)
    huge = json.dumps({**BODY, "padding": "x" * (1024 * 1024 + 1)})
    r = osb.put(PROVISION, huge)
    assert_rejected(runtime, before, r, 413, "PayloadTooLarge")


def test_json_body_without_json_content_type_is_still_parsed(osb):
    r = osb.client.put(PROVISION, data=json.dumps(BODY), headers={**HEADERS, "Content-Type": "text/plain"})
    assert r.status_code == 202, r.get_data(as_text=True)


def test_unknown_top_level_fields_are_ignored(osb):
    r = osb.put(PROVISION, {**BODY, "x-vendor_extension": {"a": 1}, "future_field": [1, 2]})
    assert r.status_code == 202, r.get_data(as_text=True)


def test_usable_flags_never_appear_on_errors_outside_update_and_deprovision(osb):
    for r in (osb.put(PROVISION, b"{"), osb.get("/v2/service_instances/nope"),
              osb.put("/v2/service_instances/nope/service_bindings/b", {"service_id": SERVICE_ID,
                                                                           "plan_id": GRS_PLAN})):
        body = assert_error(r, r.status_code)
        assert "instance_usable" not in body and "update_repeatable" not in body


def test_every_error_names_one_camelcase_word(osb):
    # A handful of different failures, each with its own code.
    codes = {assert_error(r, r.status_code)["error"] for r in (
        osb.put(PROVISION, b"{"),
        osb.get("/v2/service_instances/nope"),
        osb.get("/v2/catalog", headers={"X-Broker-API-Version": "9.9"}),
        osb.get("/v2/catalog", headers={"Authorization": ""}),
        osb.client.post("/v2/catalog", headers=HEADERS),
    )}
    assert codes == {"BadRequest", "NotFound", "PreconditionFailed", "Unauthorized", "MethodNotAllowed"}


def test_osb_helper_defaults_are_valid(client):
    # Guard for the suite itself: the default headers authenticate with a supported version.
    assert OSB(client).get("/v2/catalog").status_code == 200
