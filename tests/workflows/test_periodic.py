"""The background-job loop shared by the RPO sampler and the usage meter."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from broker.workflows.periodic import PeriodicJob


class Job(PeriodicJob):
    what = "test job"

    def __init__(self, interval: float, fail_first: int = 0) -> None:
        super().__init__(interval)
        self.runs = 0
        self.fail_first = fail_first
        self.ran = threading.Semaphore(0)

    def run_once(self) -> None:
        self.runs += 1
        self.ran.release()
        if self.runs <= self.fail_first:
            raise RuntimeError("boom")


def test_runs_at_start_then_every_interval_and_a_second_start_does_nothing() -> None:
    job = Job(interval=0.01)
    assert job.start() is True
    try:
        assert job.start() is False
        for _ in range(3):
            assert job.ran.acquire(timeout=5)
    finally:
        job.stop()
    assert job.runs >= 3


def test_a_failed_run_is_logged_and_the_next_one_still_comes(caplog: pytest.LogCaptureFixture) -> None:
    job = Job(interval=0.01, fail_first=2)
    with caplog.at_level(logging.ERROR, logger="broker.workflows.periodic"):
        job.start()
        try:
            for _ in range(3):
                assert job.ran.acquire(timeout=5)
        finally:
            job.stop()
    failures = [r for r in caplog.records if "test job failed; next run in 0.01s" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info for r in failures)


def test_stop_wakes_a_job_waiting_out_a_long_interval() -> None:
    job = Job(interval=3600)
    job.start()
    assert job.ran.acquire(timeout=5)
    began = time.monotonic()
    job.stop(timeout=10)
    assert time.monotonic() - began < 5
    assert job.stopping and job.pause(3600) is True  # a stopped job's pauses end at once
    assert job.runs == 1
