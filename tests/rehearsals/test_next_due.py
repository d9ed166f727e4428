"""When a rehearsal is next due: cron slots, the window, the time zone, and missed slots (one run, not many)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from broker.rehearsals.spec import Rehearsal, fire_time, in_window, next_due

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")


def at(*parts: int, tz: ZoneInfo = UTC) -> float:
    return datetime(*parts, tzinfo=tz).timestamp()


def test_every_minute_is_due_at_the_next_minute_boundary() -> None:
    spec = Rehearsal("* * * * *")
    assert next_due(spec, at(2026, 5, 4, 10, 15, 20)) == at(2026, 5, 4, 10, 16)
    assert next_due(spec, at(2026, 5, 4, 10, 16)) == at(2026, 5, 4, 10, 17)  # strictly after


def test_missed_slots_after_downtime_give_one_run_at_the_next_slot_after_now() -> None:
    spec = Rehearsal("0 * * * *")
    last_due = at(2026, 5, 4, 1, 0)
    back_up = at(2026, 5, 4, 7, 42)  # six slots missed while down
    # the scheduler fires the overdue row once at back_up, then moves it here: not to 02:00, 03:00, ...
    assert next_due(spec, back_up) == at(2026, 5, 4, 8, 0)
    assert next_due(spec, back_up) > back_up > last_due


def test_the_schedule_is_read_in_its_time_zone_across_daylight_saving() -> None:
    spec = Rehearsal("0 3 * * 0", timezone="Europe/Berlin")
    # Sunday 2026-03-22 03:00 CET (UTC+1) = 02:00 UTC; a week later CEST (UTC+2) = 01:00 UTC
    assert next_due(spec, at(2026, 3, 20, 12)) == at(2026, 3, 22, 2, 0)
    assert next_due(spec, at(2026, 3, 23, 12)) == at(2026, 3, 29, 1, 0)
    assert next_due(spec, at(2026, 3, 23, 12)) == at(2026, 3, 29, 3, 0, tz=BERLIN)


def test_a_slot_outside_the_window_waits_for_its_next_opening() -> None:
    spec = Rehearsal("0 12 * * *", window_start="02:00", window_minutes=120)
    assert next_due(spec, at(2026, 5, 4, 9)) == at(2026, 5, 5, 2, 0)
    inside = Rehearsal("30 2 * * *", window_start="02:00", window_minutes=120)
    assert next_due(inside, at(2026, 5, 4, 1)) == at(2026, 5, 4, 2, 30)
    # a run found due late (after downtime) outside the window: deferred to the opening, inside: at once
    assert fire_time(inside, at(2026, 5, 4, 9)) == at(2026, 5, 5, 2, 0)
    assert fire_time(inside, at(2026, 5, 4, 3, 59)) == at(2026, 5, 4, 3, 59)


def test_a_window_past_midnight_in_a_time_zone() -> None:
    spec = Rehearsal("0 * * * *", timezone="America/New_York", window_start="23:00", window_minutes=180)
    ny = ZoneInfo("America/New_York")
    assert in_window(spec, at(2026, 7, 1, 1, 30, tz=ny))  # opened yesterday at 23:00, closes 02:00
    assert not in_window(spec, at(2026, 7, 1, 2, 0, tz=ny))
    assert next_due(spec, at(2026, 7, 1, 2, 0, tz=ny)) == at(2026, 7, 1, 23, 0, tz=ny)
