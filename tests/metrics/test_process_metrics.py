"""process_* and python_* of /metrics: the process's own in one process, the whole broker's (the gunicorn
master and its workers) under ``drbroker serve --workers 2``, whichever worker answers."""

from __future__ import annotations

import os
from pathlib import Path

from broker.app import build_runtime, create_app
from tests.conftest import OSB, make_settings
from tests.e2e.conftest import wait_until
from tests.metrics.promtool import samples
from tests.metrics.states import scrape

TICKS = os.sysconf("SC_CLK_TCK")


def _btime() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise AssertionError("no btime in /proc/stat")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def started(pid: int) -> float:
    return float(_stat(pid)[19]) / TICKS + _btime()


def cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return (float(fields[11]) + float(fields[12])) / TICKS


def test_one_process_reports_its_own_figures(tmp_path) -> None:
    assert not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    osb = OSB(create_app(runtime=build_runtime(make_settings(tmp_path))).test_client())
    got = samples(osb.get("/metrics").get_data(as_text=True))
    assert got[("drbroker_processes", ())] == 1
    assert got[("process_start_time_seconds", ())] == started(os.getpid())
    assert got[("process_resident_memory_bytes", ())] > 10 * 2**20
    assert got[("process_open_fds", ())] > 0 and got[("process_max_fds", ())] > 0
    assert any(n == "python_info" for n, _ in got)
    assert any(n == "python_gc_objects_collected_total" for n, _ in got)


def _workers(master: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{master}/task/{master}/children").read_text().split()}


def test_gunicorn_workers_report_the_whole_broker(broker_factory, db_path, tmp_path) -> None:
    broker = broker_factory(db_path, args=["--workers", "2"], PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"))
    workers = wait_until(lambda: (lambda w: w if len(w) == 2 else None)(_workers(broker.pid)), 30, "two workers")
    pids = [broker.pid, *sorted(workers)]
    for _ in range(6):  # new connections: either worker may answer; each must report all three processes
        before = sum(cpu_seconds(p) for p in pids)
        got = samples(scrape(broker))
        after = sum(cpu_seconds(p) for p in pids)
        assert got[("drbroker_processes", ())] == 3
        assert got[("process_start_time_seconds", ())] == started(broker.pid)  # the master's: the broker's start
        assert before - 1e-6 <= got[("process_cpu_seconds_total", ())] <= after + 1e-6
        assert got[("process_resident_memory_bytes", ())] > 3 * 10 * 2**20
        assert any(n == "python_info" for n, _ in got)
        # a garbage collector's counts are one process's: not reported for a broker of several
        assert not any(n.startswith("python_gc_") for n, _ in got)
