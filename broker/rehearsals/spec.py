"""The ``rehearsal`` instance parameter: what it means, its checks beyond the schema, and when it is next due.

``rehearsal`` = ``{schedule, timezone, max_age_days, window: {start, duration_minutes}, enabled}``. The older
``dr_test_schedule`` (weekly, monthly, quarterly) maps onto it (``LEGACY``); when an instance has both,
``rehearsal`` wins. Times are epoch seconds; the cron schedule and the window are read in ``timezone``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from broker.domain.errors import InvalidParameters

DAY = 86400.0

# dr_test_schedule -> (cron schedule, max age in days). Sundays / the 1st of a month / of a quarter at 03:00
# UTC; the max ages are the longest week, month and quarter, so a rehearsal on the same day is never late.
LEGACY: Mapping[str, tuple[str, int]] = {
    "weekly": ("0 3 * * 0", 7),
    "monthly": ("0 3 1 * *", 31),
    "quarterly": ("0 3 1 1,4,7,10 *", 92),
}
# Without max_age_days the max age is the longest gap between consecutive runs, measured over this many runs
# from a fixed instant (so the figure does not change with the clock).
_GAP_SAMPLES = 13
_GAP_FROM = datetime(2025, 1, 1)


@dataclass(frozen=True)
class Rehearsal:
    """An instance's effective rehearsal schedule."""

    schedule: str
    timezone: str = "UTC"
    max_age_seconds: float | None = None
    window_start: str | None = None  # HH:MM in timezone
    window_minutes: int | None = None
    enabled: bool = True
    source: str = "rehearsal"  # or "dr_test_schedule"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def effective_max_age(self) -> float:
        """How old the last passed rehearsal may be before the instance counts as rehearsal-overdue."""
        if self.max_age_seconds is not None:
            return self.max_age_seconds
        return longest_gap(self)


def effective(params: Mapping[str, Any]) -> Rehearsal | None:
    """The schedule an instance's parameters ask for: ``rehearsal``, else ``dr_test_schedule``, else none."""
    given = params.get("rehearsal")
    if isinstance(given, Mapping) and given.get("schedule"):
        window = given.get("window") or {}
        days = given.get("max_age_days")
        return Rehearsal(schedule=" ".join(str(given["schedule"]).split()),
                         timezone=str(given.get("timezone") or "UTC"),
                         max_age_seconds=float(days) * DAY if days else None,
                         window_start=window.get("start"), window_minutes=window.get("duration_minutes"),
                         enabled=bool(given.get("enabled", True)))
    legacy = LEGACY.get(str(params.get("dr_test_schedule") or ""))
    if legacy is not None:
        return Rehearsal(schedule=legacy[0], max_age_seconds=legacy[1] * DAY, source="dr_test_schedule")
    return None


def check(params: Mapping[str, Any]) -> None:
    """What the JSON schema cannot say: a valid 5-field cron schedule and a known time zone (400 naming the field)."""
    given = params.get("rehearsal")
    if not isinstance(given, Mapping):
        return
    schedule = given.get("schedule")
    if isinstance(schedule, str):
        fields = schedule.split()
        if len(fields) != 5 or not croniter.is_valid(schedule):
            shown = schedule if len(schedule) <= 80 else schedule[:77] + "..."
            raise InvalidParameters(
                f"parameters.rehearsal.schedule: {shown!r} is not a cron schedule of 5 fields (minute hour "
                "day-of-month month day-of-week), e.g. \"0 3 * * 0\" for Sundays at 03:00")
        try:
            croniter(schedule, 0.0).get_next(float)
        except ValueError:  # croniter's CroniterBadDateError: valid fields that name no date (31 February)
            raise InvalidParameters(f"parameters.rehearsal.schedule: {schedule[:80]!r} never falls due (no date "
                                    "matches it)") from None
    zone = given.get("timezone")
    if zone is not None:
        try:
            ZoneInfo(str(zone))
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidParameters(f"parameters.rehearsal.timezone: {str(zone)[:64]!r} is not an IANA time zone "
                                    "(e.g. UTC, Europe/Berlin, America/New_York)") from None


def _slot_after(spec: Rehearsal, after: float) -> float:
    """The first cron slot strictly after ``after``."""
    start = datetime.fromtimestamp(after, spec.zone)
    return float(croniter(spec.schedule, start).get_next(float))


def window_bounds(spec: Rehearsal, at: float) -> tuple[float, float] | None:
    """The window that contains ``at`` or opens next after it: (opens, closes); None without a window."""
    if not spec.window_start or not spec.window_minutes:
        return None
    zone = spec.zone
    local = datetime.fromtimestamp(at, zone)
    hour, minute = (int(x) for x in spec.window_start.split(":"))
    length = timedelta(minutes=spec.window_minutes)
    # The window that opened yesterday may still be open (a window past midnight); then today's, tomorrow's.
    for days in (-1, 0, 1):
        day = local.date() + timedelta(days=days)
        opens = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).timestamp()
        closes = opens + length.total_seconds()
        if at < closes:
            return opens, closes
    raise AssertionError("unreachable: tomorrow's window closes after now")  # pragma: no cover


def in_window(spec: Rehearsal, at: float) -> bool:
    bounds = window_bounds(spec, at)
    return bounds is None or bounds[0] <= at < bounds[1]


def fire_time(spec: Rehearsal, due: float) -> float:
    """When a run due at ``due`` may start: at once inside the window (or without one), else at its next opening."""
    bounds = window_bounds(spec, due)
    if bounds is None or bounds[0] <= due:
        return due
    return bounds[0]


def next_due(spec: Rehearsal, after: float) -> float:
    """When the next run after ``after`` starts: the next cron slot, moved into the window. However many slots
    were missed before ``after``, the next run is one."""
    return fire_time(spec, _slot_after(spec, after))


@lru_cache(maxsize=4096)  # read at every scrape for every instance; a schedule's gap never changes
def longest_gap(spec: Rehearsal) -> float:
    """The longest time between consecutive runs (window included), from a fixed instant."""
    at = _GAP_FROM.replace(tzinfo=spec.zone).timestamp()
    runs = []
    for _ in range(_GAP_SAMPLES):
        at = next_due(spec, at)
        runs.append(at)
    return max(b - a for a, b in itertools.pairwise(runs))
