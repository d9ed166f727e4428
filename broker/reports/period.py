"""The period a report covers: ``--since``/``--days`` and ``--until`` (CLI) or ``?days=`` (dashboard)."""

from __future__ import annotations

import datetime as dt

DEFAULT_DAYS = 30
MAX_DAYS = 3660  # ten years: a longer period is a typing mistake


class PeriodError(ValueError):
    """A bad period value; ``field`` names the option or query parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def parse_time(value: str, field: str) -> float:
    """An ISO 8601 date or time (``2026-03-01``, ``2026-03-01T12:00``, ``...Z``, ``...+02:00``); UTC when it
    names no offset."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise PeriodError(field, f"{value!r} is not an ISO 8601 date or time (e.g. 2026-03-01 or "
                                 "2026-03-01T12:00:00Z)") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at.timestamp()


def parse_days(value: str | int, field: str) -> float:
    try:
        days = float(value)
    except (TypeError, ValueError):
        raise PeriodError(field, f"{value!r} is not a number of days") from None
    if not 0 < days <= MAX_DAYS:
        raise PeriodError(field, f"must be more than 0 and at most {MAX_DAYS} days, not {value}")
    return days


def resolve(*, since: str | None, days: str | int | None, until: str | None, now: float,
            fields: tuple[str, str, str] = ("--since", "--days", "--until")) -> tuple[float, float]:
    """``(since, until)`` in epoch seconds. ``until`` defaults to now; ``since`` to ``days`` (default 30)
    before ``until``. ``since`` and ``days`` exclude each other."""
    f_since, f_days, f_until = fields
    if since is not None and days is not None:
        raise PeriodError(f_days, f"give {f_since} or {f_days}, not both")
    end = parse_time(until, f_until) if until is not None else now
    if since is not None:
        start = parse_time(since, f_since)
    else:
        start = end - parse_days(days if days is not None else DEFAULT_DAYS, f_days) * 86400
    if start >= end:
        raise PeriodError(f_since if since is not None else f_until, "the period must begin before it ends")
    return start, end
