"""The rehearsal parameter: schema and validation errors (400 naming the field), dr_test_schedule's mapping,
and the schedule row it keeps in step with the instance."""

from __future__ import annotations

import pytest

from broker.rehearsals.spec import DAY, LEGACY, Rehearsal, effective
from tests.conftest import grs_params
from tests.rehearsals.conftest import EVERY_MINUTE, Rig


@pytest.mark.parametrize(("rehearsal", "field", "words"), [
    ({"schedule": "61 * * * *"}, "parameters.rehearsal.schedule", "not a cron schedule of 5 fields"),
    ({"schedule": "0 3 * * * *"}, "parameters.rehearsal.schedule", "not a cron schedule of 5 fields"),
    ({"schedule": "every sunday"}, "parameters.rehearsal.schedule", "not a cron schedule"),
    ({"schedule": "0 3 31 2 *"}, "parameters.rehearsal.schedule", "never falls due"),
    ({"schedule": "0 3 * * 0", "timezone": "Mars/Olympus"}, "parameters.rehearsal.timezone", "IANA time zone"),
    ({"schedule": "0 3 * * 0", "window": {"start": "25:00", "duration_minutes": 60}},
     "parameters.rehearsal.window.start", "HH:MM"),
    ({"schedule": "0 3 * * 0", "window": {"start": "02:00"}}, "parameters.rehearsal.window",
     "'duration_minutes' is a required property"),
    ({"schedule": "0 3 * * 0", "max_age_days": 0}, "parameters.rehearsal.max_age_days", "minimum"),
    ({"timezone": "UTC"}, "parameters.rehearsal", "'schedule' is a required property"),
    ({"schedule": "0 3 * * 0", "every": "day"}, "parameters.rehearsal", "'every' was unexpected"),
])
def test_a_bad_rehearsal_is_a_400_naming_the_field(rig: Rig, rehearsal, field, words) -> None:
    r = rig.provision_plan("bad-1", "grs-async", {**grs_params(1), "rehearsal": rehearsal})
    assert r.status_code == 400, r.get_data(as_text=True)
    body = r.json
    assert body["error"] and body["description"].startswith(field), body
    assert words in body["description"], body
    assert rig.row("bad-1") is None


def test_an_update_with_a_bad_schedule_is_a_400_and_changes_nothing(rig: Rig) -> None:
    rig.ready_with("upd-bad", 2, {"schedule": "0 3 * * 0"})
    before = rig.row("upd-bad")
    r = rig.update("upd-bad", {"rehearsal": {"schedule": "0 3 * * 8"}})
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.json["description"].startswith("parameters.rehearsal.schedule:"), r.json
    assert rig.row("upd-bad") == before


def test_dr_test_schedule_maps_onto_a_rehearsal_schedule() -> None:
    assert effective({"dr_test_schedule": "weekly"}) == Rehearsal("0 3 * * 0", "UTC", 7 * DAY,
                                                                  source="dr_test_schedule")
    assert effective({"dr_test_schedule": "monthly"}).schedule == "0 3 1 * *"
    assert effective({"dr_test_schedule": "quarterly"}).max_age_seconds == 92 * DAY
    assert set(LEGACY) == {"weekly", "monthly", "quarterly"}
    # both given: rehearsal wins
    both = effective({"dr_test_schedule": "weekly", "rehearsal": {"schedule": "30 1 * * *", "max_age_days": 2}})
    assert (both.schedule, both.max_age_seconds, both.source) == ("30 1 * * *", 2 * DAY, "rehearsal")
    assert effective({"rpo_target_minutes": 5}) is None


def test_without_max_age_days_the_max_age_is_the_longest_gap_between_runs() -> None:
    assert effective({"rehearsal": {"schedule": "0 3 * * 0"}}).effective_max_age() == 7 * DAY
    assert effective({"rehearsal": {"schedule": "0 3 1 * *"}}).effective_max_age() == 31 * DAY
    # a daily slot outside the window runs at the window's next opening: still once a day
    windowed = {"schedule": "0 12 * * *", "window": {"start": "02:00", "duration_minutes": 60}}
    assert effective({"rehearsal": windowed}).effective_max_age() == 1 * DAY
    assert effective({"rehearsal": {"schedule": "0 3 * * 0", "max_age_days": 10}}).effective_max_age() == 10 * DAY


def test_provision_creates_the_row_update_changes_it_and_deprovision_removes_it(rig: Rig) -> None:
    rig.ready_with("sync-1", 3, dr_test_schedule="weekly")
    row = rig.row("sync-1")
    assert row is not None and (row["schedule"], row["max_age_seconds"], row["enabled"]) == ("0 3 * * 0", 7 * DAY,
                                                                                            True)
    assert row["next_due_at"] > row["updated_at"]
    # rehearsal replaces the mapped schedule; an unrelated update keeps next_due_at
    r = rig.update("sync-1", {"rehearsal": {**EVERY_MINUTE, "max_age_days": 1}})
    assert r.status_code == 202, r.get_data(as_text=True)
    assert rig.wait("sync-1")["state"] == "succeeded"
    row = rig.row("sync-1")
    assert (row["schedule"], row["max_age_seconds"]) == ("* * * * *", 1 * DAY)
    assert row["next_due_at"] - row["updated_at"] <= 60
    due = row["next_due_at"]
    assert rig.update("sync-1", {"rpo_target_minutes": 20}).status_code == 202
    assert rig.wait("sync-1")["state"] == "succeeded"
    assert rig.row("sync-1")["next_due_at"] == due
    # a partial change keeps the other fields: pausing
    assert rig.update("sync-1", {"rehearsal": {"enabled": False}}).status_code == 202
    assert rig.wait("sync-1")["state"] == "succeeded"
    row = rig.row("sync-1")
    assert (row["schedule"], row["enabled"]) == ("* * * * *", False)
    assert rig.deprovision("sync-1", rig.pid("grs-async")).status_code == 202
    assert rig.wait("sync-1")["state"] == "succeeded"
    assert rig.row("sync-1") is None


def test_an_instance_without_a_schedule_has_no_row(rig: Rig) -> None:
    rig.ready_with("none-1", 4)
    assert rig.row("none-1") is None


def test_rehearsal_is_offered_to_platforms_as_a_dr_action(rig: Rig) -> None:
    rig.ready_with("offer-1", 5)
    r = rig.action("offer-1", "rehearsal")
    assert r.status_code == 202, r.get_data(as_text=True)
    result = rig.wait("offer-1")
    assert result["state"] == "succeeded" and "rehearsal done" in result["description"], result
    attrs = rig.attributes("offer-1")
    assert attrs["test_failover_active"] is False  # cleaned up within the one operation
    assert attrs["last_rehearsal_at"] and attrs["last_rehearsal_rto_seconds"] is not None
    assert not [r for r in rig.inventory("offer-1") if r.kind in ("rehearsal", "rehearsal_vm")]
    # a platform cannot pose as the scheduler
    r = rig.patch("/v2/service_instances/offer-1?accepts_incomplete=true",
                  {"service_id": rig.runtime.catalog.services[0].id,
                   "parameters": {"dr_action": {"type": "rehearsal", "scheduled": True}}})
    assert r.status_code == 400 and "parameters.dr_action" in r.json["description"], r.json


@pytest.mark.parametrize("value", ["0", "-1", "soon", "90000"])
def test_a_bad_check_interval_stops_start_up_naming_the_variable(tmp_path, value) -> None:
    from broker.app import build_runtime
    from tests.conftest import make_settings

    settings = make_settings(tmp_path)
    settings = type(settings).from_env(env={"DRBROKER_REHEARSAL_CHECK_SECONDS": value},
                                       **{k: getattr(settings, k) for k in ("database_url", "catalog_path",
                                                                            "username", "password")})
    with pytest.raises(SystemExit, match="DRBROKER_REHEARSAL_CHECK_SECONDS"):
        build_runtime(settings)


def test_the_check_interval_is_read_from_the_environment() -> None:
    from broker.rehearsals.scheduler import check_seconds

    assert check_seconds({}) == 30.0
    assert check_seconds({"DRBROKER_REHEARSAL_CHECK_SECONDS": "1"}) == 1.0
