"""Refusals say what to fix: the limit that was passed, the form a value must have, in plain English."""

from __future__ import annotations

from tests.conftest import GRS_PARAMS, SERVICE_ID


def _description(r) -> str:
    assert r.status_code == 400, r.get_data(as_text=True)
    body = r.get_json()
    assert body["error"] == "ValidationError" or body["error"]
    return body["description"]


def test_too_many_volumes_names_the_limit_not_every_id(osb) -> None:
    volumes = [f"vol-{i:02d}-abcdef" for i in range(31)]
    text = _description(osb.provision("i-many", params={**GRS_PARAMS, "protected_volumes": volumes}))
    assert "parameters.protected_volumes: has 31 items; at most 30 allowed" in text, text
    assert "vol-17-abcdef" not in text


def test_a_bad_crn_shows_the_expected_form_not_the_regex(osb) -> None:
    text = _description(osb.provision("i-crn", params={**GRS_PARAMS, "primary_workspace_crn": "crn:v1:oops"}))
    assert "parameters.primary_workspace_crn: 'crn:v1:oops' is not of the expected form" in text, text
    assert "crn:v1:<cloud>:public:power-iaas:<zone>:a/<32 hex digit account id>:<workspace GUID>::" in text
    assert "[0-9a-f]" not in text and "^crn" not in text


def test_a_bad_email_says_an_email_address_is_expected(osb) -> None:
    text = _description(osb.provision("i-mail", params={**GRS_PARAMS, "notification_emails": ["ops"]}))
    assert "parameters.notification_emails[0]: 'ops' is not of the expected form (an e-mail address" in text


def test_update_during_an_update_says_an_update(ready_db, osb, worker) -> None:
    worker.worker.stop(timeout=10)
    first = osb.patch("/v2/service_instances/i-1?accepts_incomplete=true",
                      {"service_id": SERVICE_ID, "parameters": {"rpo_target_minutes": 30}})
    assert first.status_code == 202, first.get_data(as_text=True)
    second = osb.patch("/v2/service_instances/i-1?accepts_incomplete=true",
                       {"service_id": SERVICE_ID, "parameters": {"rpo_target_minutes": 45}})
    assert second.status_code == 422
    assert "has an update operation in progress" in second.get_json()["description"]
