"""Each answer carries exactly the fields its request's X-Broker-API-Version defines (broker/api/versions.py).

The expectations come from tests/api/osb_versions/spec_fields.json (the field tables of spec.md at each tag),
not from the broker's own table: each answer at 2.x must equal the 2.17 answer of the same resource, cut to
the fields the 2.x spec lists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from broker.api.versions import CHILDREN, NOT_UPDATEABLE_NOTE
from tests.conftest import GRS_PLAN, SERVICE_ID, grs_params

SPEC = json.loads((Path(__file__).parent / "osb_versions" / "spec_fields.json").read_text())["versions"]
VERSIONS = ["2.12", "2.13", "2.14", "2.15", "2.16", "2.17"]
INST = "/v2/service_instances/i-1"
BIND = f"{INST}/service_bindings/b-1"


def spec_fields(kind: str, version: str) -> set[str]:
    """Fields the spec at ``version`` lists for ``kind``; an endpoint newer than it uses its first version's."""
    tags = [f"v{v}" for v in VERSIONS]
    tag = f"v{version}"
    if kind not in SPEC[tag]["fields"]:
        tag = next(t for t in tags[tags.index(tag):] if kind in SPEC[t]["fields"])
    fields = set(SPEC[tag]["fields"][kind])
    if kind == "error":
        fields.add("error")  # 2.12/2.13 mandate {"error": "AsyncRequired", ...} in their status tables
    return fields


def cut(kind: str, body: Any, version: str) -> Any:
    """``body`` reduced to the fields the spec at ``version`` defines, recursively."""
    if isinstance(body, list):
        return [cut(kind, item, version) for item in body]
    if not isinstance(body, dict):
        return body
    keep = spec_fields(kind, version)
    return {k: cut(CHILDREN[(kind, k)], v, version) if (kind, k) in CHILDREN else v
            for k, v in body.items() if k in keep}


def shape(kind: str, body: Any) -> Any:
    """The key structure of ``body`` (values of opaque fields dropped): what 'fields present' means."""
    if isinstance(body, list):
        return [shape(kind, item) for item in body]
    if not isinstance(body, dict):
        return None
    return {k: shape(CHILDREN[(kind, k)], v) if (kind, k) in CHILDREN else None for k, v in body.items()}


def assert_fields(kind: str, answer: dict[str, Any], full: dict[str, Any], version: str) -> None:
    assert shape(kind, full) == shape(kind, cut(kind, full, "2.17")), f"2.17 {kind} has fields 2.17 lacks"
    assert shape(kind, answer) == shape(kind, cut(kind, full, version)), (kind, version, answer)


def assert_within(kind: str, answer: dict[str, Any], version: str) -> None:
    assert shape(kind, answer) == shape(kind, cut(kind, answer, version)), (kind, version, answer)


def at(version: str) -> dict[str, str]:
    return {"X-Broker-API-Version": version}


@pytest.mark.parametrize("version", VERSIONS)
def test_catalog_fields_per_version(osb, runtime, version):
    answer = osb.get("/v2/catalog", headers=at(version))
    assert answer.status_code == 200
    full = osb.get("/v2/catalog").json
    assert_fields("catalog", answer.json, full, version)
    minor = int(version.split(".")[1])
    (service,) = answer.json["services"]
    raw = runtime.catalog.document["services"][0]
    plans = {p["name"]: p for p in service["plans"]}
    raw_plans = {p["name"]: p for p in raw["plans"]}
    assert ("maintenance_info" in plans["grs-async"]) is (minor >= 15)
    assert ("instances_retrievable" in service) is (minor >= 14)
    assert ("schemas" in plans["grs-async"]) is (minor >= 13)
    if minor >= 15:  # the plan says it itself; descriptions untouched
        assert plans["grs-async"]["plan_updateable"] is False and "plan_updateable" not in plans["ksys-managed"]
        assert all(plans[n]["description"] == raw_plans[n]["description"] for n in plans)
    else:  # only the service can say it: "some plans" are updateable; the others say so in words
        assert service["plan_updateable"] is True
        assert not any("plan_updateable" in p for p in service["plans"])
        for name in ("grs-async", "rehearsal-only"):
            assert plans[name]["description"] == raw_plans[name]["description"] + NOT_UPDATEABLE_NOTE
        for name in ("ksys-managed", "ksys-managed-ha", "ksys-managed-byok"):
            assert plans[name]["description"] == raw_plans[name]["description"]


@pytest.mark.parametrize("version", VERSIONS)
def test_instance_and_binding_answers_per_version(broker, version):
    b = broker(ready=True, sim_faults="delete_replication_group=fail")
    osb, v = b.osb, at(version)
    minor = int(version.split(".")[1])
    body = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "parameters": grs_params(2),
            "organization_guid": "o", "space_guid": "s"}

    # provision: IBM (2.12) needs dashboard_url in this first answer (a repeat may find the work done, so
    # the 202 is held to the spec's fields directly)
    first = osb.put("/v2/service_instances/i-2?accepts_incomplete=true", body, headers=v)
    assert first.status_code == 202 and first.json["operation"] and first.json["dashboard_url"]
    assert_within("provision", first.json, version)
    progress = osb.get("/v2/service_instances/i-2/last_operation", headers=v)
    assert_fields("last_operation", progress.json, osb.get("/v2/service_instances/i-2/last_operation").json,
                  version)

    # fetch instance (2.14+; older versions get the 2.14 fields)
    fetched = osb.get(INST, headers=v)
    assert fetched.status_code == 200
    assert_fields("fetch_instance", fetched.json, osb.get(INST).json, version)
    assert ("metadata" in fetched.json) is (minor >= 17) and ("maintenance_info" in fetched.json) is (minor >= 17)

    # update
    patch = {"service_id": SERVICE_ID, "parameters": {"rpo_target_minutes": 30}}
    updated = osb.patch(f"{INST}?accepts_incomplete=true", patch, headers=v)
    assert updated.status_code == 202 and updated.json["operation"]
    assert_within("update", updated.json, version)
    assert osb.wait("i-1")["state"] == "succeeded"

    # bind, fetch binding, binding last_operation
    bind = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN}
    bound = osb.put(BIND, bind, headers=v)
    assert bound.status_code == 201 and bound.json["credentials"]
    assert_fields("bind", bound.json, osb.put(BIND, bind).json, version)
    got = osb.get(BIND, headers=v)
    assert got.status_code == 200
    assert_fields("fetch_binding", got.json, osb.get(BIND).json, version)
    assert ("metadata" in got.json) is (minor >= 16)
    assert osb.unbind("i-1", "b-1").status_code == 200

    # errors: no instance_usable/update_repeatable before 2.16 (they appear in 2.16's "Service Broker Errors")
    missing = osb.get("/v2/service_instances/nope", headers=v)
    assert missing.status_code == 404 and set(missing.json) == {"error", "description"}
    assert osb.deprovision("i-1").status_code == 202
    full_failed = osb.wait("i-1")
    assert full_failed["state"] == "failed" and full_failed["instance_usable"] is False
    failed = osb.get(f"{INST}/last_operation", headers=v).json
    assert_fields("last_operation", failed, full_failed, version)
    assert ("instance_usable" in failed) is (minor >= 16)
    refused = osb.patch(f"{INST}?accepts_incomplete=true", patch, headers=v)
    full_refused = osb.patch(f"{INST}?accepts_incomplete=true", patch)
    assert refused.status_code == full_refused.status_code == 422
    assert full_refused.json["instance_usable"] is False and full_refused.json["update_repeatable"] is False
    assert_fields("error", refused.json, full_refused.json, version)
    assert set(refused.json) == ({"error", "description", "instance_usable", "update_repeatable"} if minor >= 16
                                 else {"error", "description"})


@pytest.mark.parametrize("version", ["2.11", "2.18", "3.12"])
def test_unsupported_versions_still_get_412_with_an_osb_error(osb, version):
    r = osb.get("/v2/catalog", headers=at(version))
    assert r.status_code == 412 and set(r.json) == {"error", "description"} and "2.17" in r.json["description"]
