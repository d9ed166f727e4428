"""A closed-loop HTTP load generator on loopback: P processes, each with C keep-alive connections in
threads, for a fixed duration or request count. Reports requests per second and latency percentiles."""

from __future__ import annotations

import http.client
import multiprocessing as mp
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    requests: int
    errors: int
    seconds: float
    latencies_ms: Sequence[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0


def _worker(port: int, headers: dict[str, str], paths: Sequence[str], duration: float, threads: int,
            out: mp.Queue) -> None:
    lat: list[float] = []
    errs = [0]
    lock = threading.Lock()
    stop = time.monotonic() + duration

    def loop(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = offset
        mine: list[float] = []
        bad = 0
        while time.monotonic() < stop:
            path = paths[i % len(paths)]
            i += 1
            t0 = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status >= 400:
                    bad += 1
            except (OSError, http.client.HTTPException):
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            lat.extend(mine)
            errs[0] += bad

    ts = [threading.Thread(target=loop, args=(k * 7919,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put((lat, errs[0]))


def run_reads(port: int, headers: dict[str, str], paths: Sequence[str], *, duration: float = 5.0,
              processes: int = 2, threads: int = 8) -> Result:
    ctx = mp.get_context("fork")
    queue: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(port, headers, paths, duration, threads, queue))
             for _ in range(processes)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    lat: list[float] = []
    errors = 0
    for _ in procs:
        part, bad = queue.get()
        lat += part
        errors += bad
    for p in procs:
        p.join()
    return Result(requests=len(lat), errors=errors, seconds=time.monotonic() - t0, latencies_ms=lat)


def run_parallel(task: Callable[[int], None], count: int, threads: int) -> float:
    """Run ``task(i)`` for i in range(count) on ``threads`` threads; return the elapsed seconds."""
    next_i = [0]
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= count:
                return
            task(i)

    t0 = time.monotonic()
    ts = [threading.Thread(target=loop) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.monotonic() - t0
