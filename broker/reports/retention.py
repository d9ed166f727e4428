"""How long the RPO samples a report reads are kept (``DRBROKER_RPO_SAMPLE_KEEP_DAYS``, default 31 days)."""

from __future__ import annotations

from broker.config import Settings

VARIABLE = "DRBROKER_RPO_SAMPLE_KEEP_DAYS"


def sample_retention_seconds(settings: Settings) -> float:
    """The retention in seconds; a value that is not more than zero stops start-up naming the variable."""
    days = settings.rpo_sample_keep_days
    if not days > 0:
        raise SystemExit(f"{VARIABLE}={days:g} must be more than 0 (days of RPO samples to keep)")
    return days * 86400.0
