"""The notification parameters through the OSB API: accepted, checked with the field named, never returned."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.conftest import GRS_PARAMS, GRS_PLAN, OSB, SERVICE_ID
from tests.notifications.helpers import SECRET

HOOK = {"url": "https://hooks.example.com/dr", "secret": SECRET, "event_types": ["rehearsal.*", "failover.started"]}


def _params(**extra: object) -> dict:
    return {**GRS_PARAMS, **extra}


def test_a_webhook_subscription_is_stored_sealed_and_never_returned(osb: OSB, worker, tmp_path: Path) -> None:
    osb.ready("i-hooks", params=_params(webhooks=[HOOK], notification_emails=["sre@example.com"],
                                         notify_event_types=["*"]))
    r = osb.get("/v2/service_instances/i-hooks")
    assert r.status_code == 200
    params = r.json["parameters"]
    assert params["webhooks"] == [{"url": HOOK["url"], "event_types": HOOK["event_types"]}]
    assert params["notify_event_types"] == ["*"]
    assert SECRET not in r.get_data(as_text=True)
    with sqlite3.connect(tmp_path / "state.db") as db:
        raw = db.execute("SELECT parameters FROM instances WHERE id = 'i-hooks'").fetchone()[0]
    assert SECRET not in raw and HOOK["url"] not in raw  # the parameters column is sealed as a whole


@pytest.mark.parametrize(("hooks", "where"), [
    ([{**HOOK, "event_types": ["rehearsal.failed", "rehearsal.exploded"]}], "parameters.webhooks[0].event_types[1]"),
    ([HOOK, {**HOOK, "url": "https://b.example.com", "event_types": ["nothing.*"]}],
     "parameters.webhooks[1].event_types[0]"),
    ([{**HOOK, "url": "http://hooks.example.com/dr"}], "parameters.webhooks[0].url"),
    ([{**HOOK, "url": "http://127.0.0.1:9/dr"}], "parameters.webhooks[0].url"),
    ([HOOK, HOOK], "parameters.webhooks[1].url"),
])
def test_a_bad_subscription_is_a_400_naming_the_field(osb: OSB, hooks: list, where: str) -> None:
    r = osb.provision("i-bad", params=_params(webhooks=hooks))
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.json["error"] == "InvalidParameters"
    assert r.json["description"].startswith(where + ":"), r.json["description"]
    assert SECRET not in r.get_data(as_text=True)


@pytest.mark.parametrize("url", ["https://127.0.0.1:8443/hook", "https://10.1.2.3/hook", "https://169.254.169.254/x",
                                 "https://[::1]/hook", "https://localhost/hook"])
def test_a_webhook_to_an_internal_address_is_refused_by_default(made, tmp_path: Path, url: str) -> None:
    from broker.app import build_runtime, create_app
    from tests.conftest import make_settings

    rt = build_runtime(make_settings(tmp_path))  # no DRBROKER_WEBHOOK_ALLOW_PRIVATE
    made.append(rt)
    r = OSB(create_app(runtime=rt).test_client()).provision("i-internal", params=_params(
        webhooks=[{**HOOK, "url": url}]))
    assert r.status_code == 400
    assert r.json["description"].startswith("parameters.webhooks[0].url: ")
    assert "is an internal address" in r.json["description"] and "DRBROKER_WEBHOOK_ALLOW_PRIVATE" in \
        r.json["description"]


def test_a_short_secret_is_refused_without_repeating_it(osb: OSB) -> None:
    r = osb.provision("i-short", params=_params(webhooks=[{**HOOK, "secret": "too-short-secret"}]))
    assert r.status_code == 400
    assert "parameters.webhooks[0].secret" in r.json["description"]
    assert "too-short-secret" not in r.get_data(as_text=True)


def test_more_than_five_webhooks_are_refused(osb: OSB) -> None:
    hooks = [{**HOOK, "url": f"https://h{i}.example.com"} for i in range(6)]
    r = osb.provision("i-many", params=_params(webhooks=hooks))
    assert r.status_code == 400 and "parameters.webhooks: has 6 items; at most 5 allowed" in r.json["description"]


def test_an_unknown_email_event_type_is_refused(osb: OSB) -> None:
    r = osb.provision("i-types", params=_params(notify_event_types=["rehearsal.failed", "*.failed"]))
    assert r.status_code == 400
    assert r.json["description"].startswith("parameters.notify_event_types[1]:")


def test_an_update_replaces_the_subscriptions_and_is_checked_too(osb: OSB, worker) -> None:
    osb.ready("i-upd", params=_params(webhooks=[HOOK]))
    body = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN,
            "parameters": {"webhooks": [{**HOOK, "event_types": ["bogus"]}]}}
    r = osb.patch("/v2/service_instances/i-upd?accepts_incomplete=true", body)
    assert r.status_code == 400 and r.json["description"].startswith("parameters.webhooks[0].event_types[0]:")
    body["parameters"] = {"webhooks": [{"url": "https://new.example.com/x", "secret": SECRET}]}
    r = osb.patch("/v2/service_instances/i-upd?accepts_incomplete=true", body)
    assert r.status_code == 202, r.get_data(as_text=True)
    assert osb.wait("i-upd")["state"] == "succeeded"
    params = osb.get("/v2/service_instances/i-upd").json["parameters"]
    assert params["webhooks"] == [{"url": "https://new.example.com/x"}]


def test_a_webhook_secret_is_among_the_values_redacted_from_backend_errors(runtime) -> None:
    """The engine strips an instance's writeOnly values from any backend text it stores or logs."""
    from broker.security.redaction import write_only_values

    plan = runtime.catalog.plan(GRS_PLAN)
    params = _params(webhooks=[HOOK, {**HOOK, "url": "https://b.example.com", "secret": SECRET + "-2"}])
    for slot in ("provision", "update"):
        assert {SECRET, SECRET + "-2"} <= write_only_values(params, plan.parameter_schema(slot))
