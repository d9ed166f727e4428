"""OSB 2.17: an id that exists, or is being provisioned or bound, with different attributes is 409 Conflict,
checked before the new body meets a plan's schema (a 409 must not hide behind a 400); 400 only when nothing
exists yet. The repeat rules of the idempotency table still hold."""

from __future__ import annotations

from typing import Any

from tests.conftest import GRS_PARAMS, GRS_PLAN, KSYS_PLAN, OSB, SERVICE_ID


def _error(r: Any) -> tuple[int, str, str]:
    body = r.json
    return r.status_code, body.get("error", ""), body.get("description", "")


def test_a_different_plan_for_a_live_instance_is_409_not_the_new_plans_400(osb: OSB, worker: Any) -> None:
    osb.ready("c-1")
    # the ksys plan requires an orchestrator: checked first, this body would be a 400
    status, code, text = _error(osb.provision("c-1", KSYS_PLAN, GRS_PARAMS))
    assert (status, code) == (409, "Conflict") and "different attributes" in text
    # an unknown plan or parameters the schema refuses: still the existing instance's conflict
    assert osb.provision("c-1", "no-such-plan", GRS_PARAMS).status_code == 409
    assert osb.provision("c-1", GRS_PLAN, {**GRS_PARAMS, "rpo_target_minutes": "soon"}).status_code == 409
    # the identical repeat is still 200
    assert osb.provision("c-1").status_code == 200


def test_an_instance_being_provisioned_is_409_for_a_different_body_and_202_for_the_same(osb: OSB) -> None:
    # no worker: the provision stays in flight
    first = osb.provision("c-2")
    assert first.status_code == 202
    status, code, _ = _error(osb.provision("c-2", KSYS_PLAN, GRS_PARAMS))
    assert (status, code) == (409, "Conflict")
    again = osb.provision("c-2")
    assert again.status_code == 202 and again.json["operation"] == first.json["operation"]
    # without accepts_incomplete the in-flight repeat is still refused as async-only
    body = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "parameters": GRS_PARAMS,
            "organization_guid": "org-1", "space_guid": "space-1"}
    status, code, _ = _error(osb.put("/v2/service_instances/c-2", body))
    assert (status, code) == (422, "AsyncRequired")
    # ... but a different body without it is the conflict it is
    assert osb.put("/v2/service_instances/c-2", {**body, "plan_id": KSYS_PLAN}).status_code == 409


def test_a_new_id_with_a_bad_body_is_400_and_nothing_is_written(osb: OSB) -> None:
    status, _, text = _error(osb.provision("c-3", KSYS_PLAN, GRS_PARAMS))
    assert status == 400 and "orchestrator" in text
    assert osb.get("/v2/service_instances/c-3/last_operation").status_code == 404


def test_a_live_binding_with_different_parameters_is_409_before_its_schema(osb: OSB, worker: Any) -> None:
    osb.ready("c-4")
    assert osb.bind("c-4", "b-1").status_code == 201
    # purpose "kms-dek" is not offered by grs-async: for a new binding id a 400
    status, code, _ = _error(osb.bind("c-4", "b-1", parameters={"purpose": "kms-dek"}))
    assert (status, code) == (409, "Conflict")
    assert osb.bind("c-4", "b-1", plan="no-such-plan").status_code == 409
    assert osb.bind("c-4", "b-1").status_code == 200
    status, _, text = _error(osb.bind("c-4", "b-2", parameters={"purpose": "kms-dek"}))
    assert status == 400 and "purpose" in text


def test_a_binding_in_flight_is_409_for_a_different_body_and_202_for_the_same(osb: OSB, worker: Any) -> None:
    osb.ready("c-5")
    worker.worker.stop()  # the asynchronous bind stays in flight
    path = "/v2/service_instances/c-5/service_bindings/b-1?accepts_incomplete=true"
    body = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN}
    first = osb.put(path, body)
    assert first.status_code == 202
    status, code, _ = _error(osb.put(path, {**body, "parameters": {"purpose": "kms-dek"}}))
    assert (status, code) == (409, "Conflict")
    again = osb.put(path, body)
    assert again.status_code == 202 and again.json["operation"] == first.json["operation"]
