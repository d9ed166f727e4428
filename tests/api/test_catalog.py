"""GET /v2/catalog (spec §2.1)."""

from __future__ import annotations

from tests.api.conftest import assert_error
from tests.conftest import GRS_PLAN, KSYS_PLAN, SERVICE_ID, auth_header


def _plans(body):
    return {p["id"]: p for s in body["services"] for p in s["plans"]}


def test_catalog_returns_200_with_services(osb):
    r = osb.get("/v2/catalog")
    assert r.status_code == 200
    assert r.mimetype == "application/json"
    services = r.json["services"]
    assert [s["id"] for s in services] == [SERVICE_ID]
    assert {GRS_PLAN, KSYS_PLAN} <= set(_plans(r.json))


def test_catalog_declares_what_the_broker_implements(osb):
    service = osb.get("/v2/catalog").json["services"][0]
    assert service["bindable"] is True
    assert service["instances_retrievable"] is True
    assert service["bindings_retrievable"] is True
    plans = _plans({"services": [service]})
    assert plans[GRS_PLAN]["plan_updateable"] is False
    for plan in plans.values():
        assert plan["maintenance_info"]["version"] == "1.0.0"
        create = plan["schemas"]["service_instance"]["create"]["parameters"]
        assert create["$schema"].startswith("http://json-schema.org/draft-04/schema")


def test_catalog_strips_private_plan_features(osb):
    for plan in _plans(osb.get("/v2/catalog").json).values():
        assert "features" not in plan


def test_catalog_marks_secrets_write_only(osb):
    plans = _plans(osb.get("/v2/catalog").json)
    grs = plans[GRS_PLAN]["schemas"]["service_instance"]["create"]["parameters"]["properties"]
    ksys = plans[KSYS_PLAN]["schemas"]["service_instance"]["create"]["parameters"]["properties"]
    assert grs["ibmcloud_api_key"]["writeOnly"] is True
    assert ksys["orchestrator"]["properties"]["password"]["writeOnly"] is True


def test_catalog_without_credentials_returns_401(osb):
    assert_error(osb.get("/v2/catalog", headers={"Authorization": ""}), 401, "Unauthorized")
    assert_error(osb.get("/v2/catalog", headers={"Authorization": auth_header("platform", "x")}), 401)


def test_catalog_with_unsupported_version_returns_412(osb):
    assert_error(osb.get("/v2/catalog", headers={"X-Broker-API-Version": "2.11"}), 412, "PreconditionFailed")
