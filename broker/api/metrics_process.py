"""``process_*`` of ``/metrics``: the whole broker's, also when gunicorn serves it from several processes.

prometheus-client's ProcessCollector describes the process it runs in. Under ``drbroker serve`` (prometheus-
client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``) any one worker answers a scrape, so its own figures
would jump from worker to worker between scrapes and leave the master and the other workers out. Here the
answering worker has ProcessCollector read ``/proc`` for every process of the broker, the gunicorn master (its
parent, running the same command line) and the master's children, and reports:

- ``process_cpu_seconds_total``, ``process_resident_memory_bytes``, ``process_virtual_memory_bytes``,
  ``process_open_fds``: their sum;
- ``process_start_time_seconds``: the earliest, the master's (when the broker started);
- ``process_max_fds``: the answering worker's limit (the workers inherit the master's);
- ``drbroker_processes``: how many processes the sums cover.

Outside multiprocess mode, or when the parent is not a prefork master of this broker, the figures are this
process's alone (``drbroker_processes`` 1). A worker that gunicorn replaces takes its CPU seconds with it, which
Prometheus reads as a counter reset.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_SUMMED = {
    "process_cpu_seconds_total": "Total user and system CPU time spent in seconds",
    "process_resident_memory_bytes": "Resident memory size in bytes",
    "process_virtual_memory_bytes": "Virtual memory size in bytes",
    "process_open_fds": "Number of open file descriptors",
}
_OF_ALL = " (the sum over the broker's processes: drbroker_processes)"


def _cmdline(proc: Path, pid: int) -> bytes | None:
    try:
        return (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None


def _children(proc: Path, pid: int) -> set[int]:
    try:
        return {int(c) for c in (proc / str(pid) / "task" / str(pid) / "children").read_text().split()}
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: find them by their parent
        found = set()
        for stat in proc.glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[1] == str(pid):
                found.add(int(stat.parent.name))
        return found


def broker_pids(proc: Path = Path("/proc")) -> list[int]:
    """This process, or the prefork master that forked it and all of the master's children."""
    me, parent = os.getpid(), os.getppid()
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return [me]
    own = _cmdline(proc, me)
    if own is None or _cmdline(proc, parent) != own:
        return [me]
    siblings = _children(proc, parent)
    if me not in siblings:
        return [me]
    return [parent, *sorted(siblings)]


class BrokerProcessCollector(Collector):
    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc

    def collect(self) -> Iterator[Metric]:
        me = os.getpid()
        totals: dict[str, float] = {}
        start: float | None = None
        max_fds: float | None = None
        counted = 0
        for pid in broker_pids(self.proc):
            values = {s.name: s.value for family in ProcessCollector(pid=lambda pid=pid: pid, proc=str(self.proc),
                                                                     registry=None).collect()
                      for s in family.samples}
            if "process_start_time_seconds" not in values:
                continue  # gone between the listing and the read
            counted += 1
            for name in _SUMMED:
                if name in values:
                    totals[name] = totals.get(name, 0.0) + values[name]
            began = values["process_start_time_seconds"]
            start = began if start is None else min(start, began)
            if pid == me and "process_max_fds" in values:
                max_fds = values["process_max_fds"]
        if not counted:
            return
        for name, text in _SUMMED.items():
            if name not in totals:
                continue
            cls = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
            yield cls(name, text + _OF_ALL, value=totals[name])
        yield GaugeMetricFamily("process_start_time_seconds", "Start time of the broker (its first process) since "
                                "unix epoch in seconds", value=start)
        if max_fds is not None:
            yield GaugeMetricFamily("process_max_fds", "Maximum number of open file descriptors (of the process "
                                    "that answered)", value=max_fds)
        yield GaugeMetricFamily("drbroker_processes", "Processes the process_* figures add up (the gunicorn "
                                "master and its workers; 1 outside drbroker serve)", value=counted)
