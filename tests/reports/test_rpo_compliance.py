"""RPO compliance figures computed from constructed samples (broker.reports.rpo)."""

from __future__ import annotations

from broker.reports.rpo import Sample, compliance, expected_count

T0 = 1_000_000_020.0  # a multiple of 60
TARGET = 900.0  # 15 min


def _s(minute: int, rpo: float | None, state: str = "consistent_copying") -> Sample:
    return Sample(T0 + minute * 60, rpo, state)


def test_share_within_target_counts_samples_at_or_under_the_target() -> None:
    samples = [_s(0, 100), _s(1, 900), _s(2, 901), _s(3, 1200)]
    c = compliance(samples, TARGET, 60, expected=4)
    assert (c.samples, c.within_target, c.breaches) == (4, 2, 2)
    assert c.share_within_target == 0.5


def test_a_sample_while_replication_is_not_copying_is_a_breach_whatever_its_number() -> None:
    samples = [_s(0, 30), _s(1, 40, "consistent_stopped"), _s(2, None, "idling_disconnected"),
               _s(3, None, "some_new_state")]
    c = compliance(samples, TARGET, 60, expected=4)
    assert c.within_target == 1 and c.breaches == 3 and c.not_copying == 3
    assert c.share_within_target == 0.25


def test_copying_onto_an_inconsistent_secondary_is_a_breach_but_still_copying() -> None:
    c = compliance([_s(0, 10, "inconsistent_copying"), _s(1, 10)], TARGET, 60, expected=2)
    assert c.within_target == 1 and c.breaches == 1 and c.not_copying == 0


def test_copying_without_a_freeze_time_is_a_breach_except_synchronous_replication() -> None:
    c = compliance([_s(0, None), _s(1, None, "consistent_synchronized")], TARGET, 60, expected=2)
    assert c.within_target == 1 and c.breaches == 1 and c.not_copying == 0


def test_breach_minutes_are_breach_samples_times_the_interval() -> None:
    samples = [_s(k, 2000) for k in range(5)] + [_s(k, 10) for k in range(5, 8)]
    assert compliance(samples, TARGET, 60, expected=8).breach_minutes == 5.0
    assert compliance(samples, TARGET, 300, expected=8).breach_minutes == 25.0


def test_the_worst_breach_is_the_largest_achieved_rpo_and_when() -> None:
    samples = [_s(0, 1000), _s(1, 5000, "consistent_stopped"), _s(2, 3000), _s(3, 5000)]
    worst = compliance(samples, TARGET, 60, expected=4).worst
    assert worst is not None
    assert (worst.at, worst.achieved_rpo_seconds, worst.replication_state) == (T0 + 60, 5000, "consistent_stopped")


def test_breaches_without_a_number_name_the_first_of_them_as_worst() -> None:
    samples = [_s(0, 10), _s(2, None, "empty"), _s(1, None, "idling")]
    worst = compliance(samples, TARGET, 60, expected=3).worst
    assert worst is not None and worst.at == T0 + 60 and worst.achieved_rpo_seconds is None


def test_no_breach_no_worst_and_no_samples_no_share() -> None:
    c = compliance([_s(0, 10)], TARGET, 60, expected=1)
    assert c.worst is None and c.share_within_target == 1.0
    empty = compliance([], TARGET, 60, expected=10)
    assert empty.share_within_target is None and empty.expected_samples == 10 and empty.worst is None


def test_without_a_target_only_not_copying_samples_are_breaches() -> None:
    c = compliance([_s(0, 99999), _s(1, 5, "idling")], None, 60, expected=2)
    assert c.breaches == 1 and c.share_within_target is None


def test_expected_count_is_the_buckets_starting_in_the_range() -> None:
    assert expected_count(T0, T0 + 600, 60) == 10
    assert expected_count(T0 + 1, T0 + 600, 60) == 9  # the bucket at T0 started before the range
    assert expected_count(T0, T0, 60) == 0
