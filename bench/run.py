"""Benchmarks, side by side in one run: this broker (SQLite default; PostgreSQL with 2 workers) against a
minimal openbrokerapi broker that keeps its state in a dict. ``make bench`` (or ``python -m bench.run``).

Targets (issue "Scale out and ship"): reads >= 1.0x the minimal broker on SQLite, >= 1.5x on PostgreSQL
with 2 workers; lifecycles >= 0.5x; read latency at 100,000 instances within 1.25x of 1,000; peak memory per
worker at 100,000 instances < 150 MB; serve -> healthy /healthz < 2 s.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.load import Result, run_parallel, run_reads

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SERVICE_ID = "6f1d2c3b-8a4e-4d7f-9b2a-1c3e5f7a9b0d"
PLAN_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
ACCOUNT = "0123456789abcdef0123456789abcdef"
PRIMARY = f"crn:v1:bluemix:public:power-iaas:dal10:a/{ACCOUNT}:7f3c9a7e-0b4e-4c8e-9d1a-3e5f6a7b8c9d::"
SECONDARY = f"crn:v1:bluemix:public:power-iaas:wdc07:a/{ACCOUNT}:2b8d4e6f-1a3c-4d5e-8f90-a1b2c3d4e5f6::"
WARM_UP = 3.0  # seconds of reads before each measured run, discarded
PG_URL = os.environ.get("DRBROKER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


READ_SLOT = 99  # the read benchmark's instance protects this slot's volumes for the whole run; lifecycles use 0-98


def params(slot: int) -> dict[str, Any]:
    return {"primary_workspace_crn": PRIMARY, "secondary_workspace_crn": SECONDARY,
            "protected_volumes": [f"vol-bulk-{2 * (slot % 100) + 1:03d}", f"vol-bulk-{2 * (slot % 100) + 2:03d}"]}


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    user: str
    password: str
    version: str = "2.17"
    proc: subprocess.Popen | None = None
    started_in: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}", "X-Broker-API-Version": self.version,
                "Content-Type": "application/json"}

    def start(self) -> None:
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, env={**os.environ, **self.env}, cwd=ROOT, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=self.extra.get("stderr", subprocess.DEVNULL))
        deadline = t0 + 30
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", self.extra.get("health", "/healthz"), headers=self.headers)
                if conn.getresponse().status == 200:
                    self.started_in = time.monotonic() - t0
                    return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]

    def call(self, conn: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=self.headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else None)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ours(name: str, db_url: str, workers: int = 1) -> Server:
    port = free_port()
    env = {"DRBROKER_DATABASE_URL": db_url, "DRBROKER_USERNAME": "bench", "DRBROKER_PASSWORD": "bench",
           "DRBROKER_SIM_STEP_SECONDS": "0", "DRBROKER_LOG_LEVEL": "WARNING",
           "DRBROKER_ACCOUNT_INSTANCE_LIMIT": "1000000"}
    return Server(name, [str(BIN / "drbroker"), "serve", "--port", str(port), "--workers", str(workers)], env,
                  port, "bench", "bench")


def minimal() -> Server:
    port = free_port()
    argv = [str(BIN / "gunicorn"), "-k", "gthread", "--threads", "8", "-w", "1", "-b", f"127.0.0.1:{port}",
            "--log-level", "warning", "bench.minimal_broker:create_app()"]
    return Server("minimal openbrokerapi (dict)", argv, {}, port, "bench", "bench", version="2.13",
                  extra={"health": "/v2/catalog"})


def lifecycle(server: Server, i: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    iid, bid = f"lc-{uuid.uuid4().hex}", "b-1"
    q = f"service_id={SERVICE_ID}&plan_id={PLAN_ID}"

    def wait_done() -> None:
        while True:
            status, body = server.call(conn, "GET", f"/v2/service_instances/{iid}/last_operation")
            if status == 200 and body["state"] == "succeeded":
                return
            if status != 200 or body["state"] == "failed":
                raise RuntimeError(f"{server.name}: {status} {body}")
            time.sleep(0.005)

    status, body = server.call(conn, "PUT", f"/v2/service_instances/{iid}?accepts_incomplete=true",
                               {"service_id": SERVICE_ID, "plan_id": PLAN_ID, "organization_guid": "o",
                                "space_guid": "s", "parameters": params(i % READ_SLOT)})
    assert status == 202, (status, body)
    wait_done()
    status, body = server.call(conn, "PUT", f"/v2/service_instances/{iid}/service_bindings/{bid}",
                               {"service_id": SERVICE_ID, "plan_id": PLAN_ID})
    assert status == 201, (status, body)
    status, _ = server.call(conn, "DELETE", f"/v2/service_instances/{iid}/service_bindings/{bid}?{q}")
    assert status == 200, status
    status, _ = server.call(conn, "DELETE", f"/v2/service_instances/{iid}?{q}&accepts_incomplete=true")
    assert status == 202, status
    wait_done()
    conn.close()


def provision_one(server: Server, iid: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    status, body = server.call(conn, "PUT", f"/v2/service_instances/{iid}?accepts_incomplete=true",
                               {"service_id": SERVICE_ID, "plan_id": PLAN_ID, "organization_guid": "o",
                                "space_guid": "s", "parameters": params(READ_SLOT)})
    assert status in (200, 202), (status, body)
    for _ in range(2000):
        status, body = server.call(conn, "GET", f"/v2/service_instances/{iid}/last_operation")
        if body and body.get("state") == "succeeded":
            return
        time.sleep(0.01)
    raise RuntimeError("provision did not finish")


def read_paths(iid_for: Any, n: int) -> list[str]:
    paths = []
    for k in range(n):
        iid = iid_for(k)
        paths += ["/v2/catalog", f"/v2/service_instances/{iid}/last_operation", f"/v2/service_instances/{iid}"]
    return paths


def seed_instances(db_url: str, count: int) -> None:
    """Write ``count`` ready instances (with their provision operation) through the real store, so that their
    secret-bearing columns are sealed exactly as the broker writes them."""
    sys.path.insert(0, str(ROOT))
    from broker.app import build_runtime
    from broker.config import Settings
    from broker.domain.models import Instance, InstanceState, Operation, OperationState, OperationType

    rt = build_runtime(Settings.from_env(env={}, database_url=db_url, sim_step_seconds=0.0,
                                         username="bench", password="bench"))
    now = time.time()
    p = params(0)
    for start in range(0, count, 2000):
        with rt.store.write() as tx:
            for k in range(start, min(count, start + 2000)):
                iid = f"seed-{k:06d}"
                tx.insert_instance(Instance(
                    id=iid, service_id=SERVICE_ID, plan_id=PLAN_ID, state=InstanceState.READY, parameters=p,
                    context={}, organization_guid="o", space_guid="s", maintenance_version="1.0.0",
                    dashboard_url=None, request_hash="x", enabled=True, last_active=now, created_at=now,
                    updated_at=now, dr_state={"active_site": "primary"}, account_id=ACCOUNT))
                tx.insert_operation(Operation(
                    id=str(uuid.uuid4()), instance_id=iid, binding_id=None, type=OperationType.PROVISION,
                    state=OperationState.SUCCEEDED, plan_id=PLAN_ID, request_hash="x", created_at=now,
                    description="succeeded: provisioned", step_index=7, step_total=7, finished_at=now))
    rt.store.engine.dispose()


def pg_schema_url() -> str:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


def drop_pg_schema(url: str) -> None:
    import psycopg

    schema = url.rsplit("%3D", 1)[1]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def fmt(r: Result) -> str:
    return f"{r.rps:,.0f} req/s (p50 {r.p50:.1f} ms, p99 {r.pct(0.99):.1f} ms, errors {r.errors})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per read measurement")
    ap.add_argument("--lifecycles", type=int, default=150)
    ap.add_argument("--big", type=int, default=100_000, help="instances for the large-store latency run")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="drbench-"))
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    try:
        # 1. reads and lifecycles: ours on SQLite (1 worker), minimal; ours on PostgreSQL (2 workers)
        servers = [ours("ours, SQLite, 1 worker", f"sqlite:///{tmp / 'reads.db'}"), minimal()]
        pg_url = None
        if not args.no_postgres:
            pg_url = pg_schema_url()
            subprocess.run([str(BIN / "drbroker"), "db", "upgrade"], env={**os.environ,
                           "DRBROKER_DATABASE_URL": pg_url}, check=True, capture_output=True)
            servers.append(ours("ours, PostgreSQL, 2 workers", pg_url, workers=2))
        for server in servers:
            server.start()
            try:
                provision_one(server, "read-1")
                paths = read_paths(lambda k: "read-1", 1)
                run_reads(server.port, server.headers, paths, duration=WARM_UP)  # discarded
                pids = server.worker_pids()
                cpu0 = cpu_seconds(pids)
                r = run_reads(server.port, server.headers, paths, duration=args.duration)
                cpu_read = (cpu_seconds(pids) - cpu0) / max(1, r.requests) * 1000
                cpu0 = cpu_seconds(pids)
                lt = run_parallel(lambda i, s=server: lifecycle(s, i), args.lifecycles, threads=8)
                cpu_lc = (cpu_seconds(pids) - cpu0) / args.lifecycles * 1000
                # The same work with one driver: the cost of a lifecycle without 8 drivers' polling around it.
                alone = max(1, args.lifecycles // 4)
                lt1 = run_parallel(lambda i, s=server: lifecycle(s, i), alone, threads=1)
                results[server.name] = {"reads_rps": r.rps, "reads_p50_ms": r.p50, "reads_p99_ms": r.pct(0.99),
                                        "read_errors": r.errors, "read_cpu_ms": cpu_read,
                                        "lifecycles_per_s": args.lifecycles / lt, "lifecycle_cpu_ms": cpu_lc,
                                        "lifecycles_1_driver_per_s": alone / lt1, "startup_s": server.started_in}
                print(f"{server.name}: reads {fmt(r)}, server CPU {cpu_read:.2f} ms/read; lifecycles "
                      f"{args.lifecycles / lt:.1f}/s (server CPU {cpu_lc:.0f} ms each), with 1 driver "
                      f"{alone / lt1:.1f}/s; started in {server.started_in:.2f} s", flush=True)
            finally:
                server.stop()
        if pg_url:
            drop_pg_schema(pg_url)

        # 2. read latency with 1,000 and with --big instances; peak memory per worker
        for count in (1000, args.big):
            url = f"sqlite:///{tmp / f'big-{count}.db'}"
            seed_instances(url, count)
            server = ours(f"ours, SQLite, {count:,} instances", url)
            server.start()
            try:
                paths = read_paths(lambda k, c=count: f"seed-{(k * 7919) % c:06d}", 500)
                # The warm-up also lets the start-up round of the RPO sampler (over every instance) finish.
                run_reads(server.port, server.headers, paths, duration=WARM_UP, processes=1, threads=2)
                r = run_reads(server.port, server.headers, paths, duration=args.duration, processes=1, threads=2)
                rss = max(peak_rss_mb(pid) for pid in server.worker_pids())
                results[f"latency_{count}"] = {"p50_ms": r.p50, "p99_ms": r.pct(0.99), "rps": r.rps,
                                               "worker_peak_rss_mb": rss, "errors": r.errors}
                print(f"{count:,} instances: {fmt(r)}; worker peak RSS {rss:.0f} MB", flush=True)
            finally:
                server.stop()

        # 3. serve -> healthy, on an existing database (median of 3)
        times = []
        for _ in range(3):
            server = ours("startup", f"sqlite:///{tmp / 'reads.db'}")
            server.start()
            times.append(server.started_in)
            server.stop()
        results["startup_median_s"] = statistics.median(times)
        print(f"serve -> healthy /healthz: median {statistics.median(times):.2f} s of {times}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    args.json.write_text(json.dumps(results, indent=2))
    ours_sqlite, floor = results["ours, SQLite, 1 worker"], results["minimal openbrokerapi (dict)"]
    print("\n| measure | result | target |\n| --- | --- | --- |")
    print(f"| reads, SQLite 1 worker / minimal | {ours_sqlite['reads_rps'] / floor['reads_rps']:.2f}x | >= 1.0x |")
    if "ours, PostgreSQL, 2 workers" in results:
        pg = results["ours, PostgreSQL, 2 workers"]
        print(f"| reads, PostgreSQL 2 workers / minimal | {pg['reads_rps'] / floor['reads_rps']:.2f}x | >= 1.5x |")
    print(f"| lifecycles, SQLite / minimal | "
          f"{ours_sqlite['lifecycles_per_s'] / floor['lifecycles_per_s']:.2f}x | >= 0.5x |")
    small, big = results["latency_1000"], results[f"latency_{args.big}"]
    print(f"| read p50 at {args.big:,} / at 1,000 | {big['p50_ms'] / small['p50_ms']:.2f}x | <= 1.25x |")
    print(f"| peak RSS per worker at {args.big:,} | {big['worker_peak_rss_mb']:.0f} MB | < 150 MB |")
    print(f"| serve -> healthy | {results['startup_median_s']:.2f} s | < 2 s |")


if __name__ == "__main__":
    main()
