"""RPO compliance over a period, from the sampler's ``rpo_samples`` (one row per instance and interval).

The rules (docs/reports.md, "How the figures are computed"):

- A sample is **within target** when its replication state copies onto a consistent image
  (``broker.services.protection``: ``consistent_copying``, ``consistent_synchronized``) and its achieved RPO is
  at most the target. ``consistent_synchronized`` without a freeze time counts as RPO 0.
- Every other sample is a **breach**: over the target, copying without a consistent copy at the secondary
  (``inconsistent_copying``, as the protection status says), or no RPO at all because replication was not
  copying (stopped, idling, disconnected, empty, a state the broker does not know) or the storage gave no
  freeze time. An RPO that cannot be shown to be met is not met; the not-copying ones are also counted alone.
- **Breach minutes** = breach samples x the sampling interval / 60: each sample stands for the interval it
  starts. Intervals with no sample (the broker was down) are not guessed at; ``expected_samples`` shows them.
- The **worst breach** is the breach sample with the largest achieved RPO (for a not-copying sample: how far
  behind the secondary's data was); when no breach carries a number, the first breach.
- Without a target only the not-copying samples are breaches, and the share within target is None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from broker.services.protection import REPLICATION_STATES


@dataclass(frozen=True)
class Sample:
    at: float
    achieved_rpo_seconds: float | None
    replication_state: str


@dataclass(frozen=True)
class WorstBreach:
    at: float
    achieved_rpo_seconds: float | None
    replication_state: str


@dataclass(frozen=True)
class RpoCompliance:
    target_seconds: float | None
    interval_seconds: float
    samples: int
    expected_samples: int
    within_target: int
    breaches: int
    not_copying: int
    breach_minutes: float
    worst: WorstBreach | None
    first_sample_at: float | None
    last_sample_at: float | None

    @property
    def share_within_target(self) -> float | None:
        """Share of the samples within target (0..1); None without samples or without a target."""
        if self.samples == 0 or self.target_seconds is None:
            return None
        return round(self.within_target / self.samples, 4)


def copying(state: str) -> bool:
    meaning = REPLICATION_STATES.get(state)
    return bool(meaning and meaning.copying)


def consistent_copy(state: str) -> bool:
    """Copying onto a consistent image at the secondary: only then is the achieved RPO a recovery point."""
    meaning = REPLICATION_STATES.get(state)
    return bool(meaning and meaning.copying and meaning.consistent)


def effective_rpo(sample: Sample) -> float | None:
    if sample.achieved_rpo_seconds is None and sample.replication_state == "consistent_synchronized":
        return 0.0
    return sample.achieved_rpo_seconds


def within(sample: Sample, target: float | None) -> bool:
    """Whether the sample meets the target (see the module docstring); without a target: whether it copies
    with a known RPO."""
    rpo = effective_rpo(sample)
    if not consistent_copy(sample.replication_state) or rpo is None:
        return False
    return target is None or rpo <= target


def expected_count(start: float, end: float, interval: float) -> int:
    """How many sampling buckets (multiples of ``interval``) start in ``[start, end)``."""
    if end <= start or interval <= 0:
        return 0
    return max(0, math.ceil(end / interval) - math.ceil(start / interval))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def compliance(samples: Sequence[Sample], target: float | None, interval: float, *,
               expected: int) -> RpoCompliance:
    """The figures of one instance's samples in a period (already filtered to it)."""
    ordered = sorted(samples, key=lambda s: s.at)
    ok = [s for s in ordered if within(s, target)]
    breaches = [s for s in ordered if not within(s, target)]
    worst: Sample | None = None
    numbered = [s for s in breaches if effective_rpo(s) is not None]
    if numbered:
        worst = max(numbered, key=lambda s: (effective_rpo(s) or 0.0, -s.at))  # the earliest of equal ones
    elif breaches:
        worst = breaches[0]
    return RpoCompliance(
        target_seconds=target, interval_seconds=interval, samples=len(ordered),
        expected_samples=max(expected, len(ordered)), within_target=len(ok), breaches=len(breaches),
        not_copying=sum(1 for s in ordered if not copying(s.replication_state)),
        breach_minutes=round(len(breaches) * interval / 60, 2),
        worst=WorstBreach(worst.at, _rounded(effective_rpo(worst)), worst.replication_state) if worst else None,
        first_sample_at=ordered[0].at if ordered else None, last_sample_at=ordered[-1].at if ordered else None)
