"""Chaos: concurrent OSB lifecycles against a real ``drbroker serve`` that is SIGKILLed at random moments.

Ten platform drivers each run lifecycles (provision, bind, unbind, deprovision; some async binds; some
DELETEs while the provision runs) against one server: two gunicorn worker processes with three operation
worker threads each, on one SQLite file, with short steps, short leases and a few transient backend faults.
A killer thread ``kill -9``s the server's whole process group at random moments and restarts it on the same
port, again and again. The drivers behave like a platform: a request that got no answer is repeated as is,
``last_operation`` is polled, a failed provision is deleted (orphan mitigation).

Afterwards: every lifecycle ended as the platform expects (the instance is gone: ``last_operation`` shows
the tombstone, DELETE answers 410), no operation is left queued or in progress, the only failed operations
are provisions halted by a DELETE, no step was re-run more often than the kills explain, the simulated
cloud logged no resource created twice (nor a duplicate refused by its unique index), and
``drbroker sim inventory --json`` is empty: no orphans.

Run with ``-s`` to see the figures. The random choices come from a fixed seed; the waits are bounded.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.conftest import GRS_PLAN, PASSWORD, SERVICE_ID, USER, grs_params
from tests.e2e.conftest import VERSION, BrokerProcess, query, sim_inventory

SEED = 20240611
DRIVERS = 10
MIN_LIFECYCLES, MAX_LIFECYCLES = 2, 8  # per driver: at least MIN, then more while the killer is still busy
KILLS = 7
UP_SECONDS = (1.0, 3.5)  # how long the server lives between kills (a restart takes about 2.5 s more)
DOWN_SECONDS = (0.0, 0.4)  # how long it stays dead before the restart
REQUEST_DEADLINE = 120.0  # a platform gives up on one request (with all its repeats) after this long
FAULTS = {"create_replication_group": 1, "issue_credentials": 1}  # transient failures per call site
SERVER_ENV = {
    "DRBROKER_SIM_STEP_SECONDS": "0.05",
    "DRBROKER_LEASE_SECONDS": "2",
    "DRBROKER_POLL_SECONDS": "0.05",
    "DRBROKER_WORKER_THREADS": "3",
    "DRBROKER_SYNC_BIND_TIMEOUT": "30",
    "DRBROKER_SIM_FAULTS": "create_replication_group=transient:1,issue_credentials=throttle:1",
}
CREATED = re.compile(r"simulated cloud: created (\S+) (\S+) ")


class Finding(AssertionError):
    """Something a platform would have seen go wrong."""


@dataclass
class Figures:
    lifecycles: int = 0
    halted: int = 0
    async_binds: int = 0
    requests: int = 0
    repeats: int = 0  # PUTs and DELETEs repeated after a connection error (the server died under them)
    server_errors: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Platform:
    """One platform driver's HTTP side: repeats what got no answer, polls, tolerates a dead server."""

    def __init__(self, url: str, figures: Figures) -> None:
        self.url = url
        self.figures = figures
        self.session = requests.Session()
        self.session.auth = (USER, PASSWORD)
        self.session.headers.update({"X-Broker-API-Version": VERSION})

    def call(self, method: str, path: str, ok: tuple[int, ...], *, ok_on_repeat: tuple[int, ...] = (),
             **kw: Any) -> requests.Response:
        """Send until answered: a connection error (dead server) repeats the same request, as does a 5xx
        (recorded: it must not happen). ``ok_on_repeat`` statuses are accepted only after a repeat (a 410 for a
        DELETE whose first attempt did get through)."""
        deadline = time.monotonic() + REQUEST_DEADLINE
        repeated = False
        while True:
            if time.monotonic() > deadline:
                raise Finding(f"{method} {path}: no answer within {REQUEST_DEADLINE}s")
            try:
                with self.figures.lock:
                    self.figures.requests += 1
                r = self.session.request(method, self.url + path, timeout=45, **kw)
            except requests.RequestException:
                repeated = True
                if method != "GET":
                    with self.figures.lock:
                        self.figures.repeats += 1
                time.sleep(0.1)
                continue
            if r.status_code >= 500:
                with self.figures.lock:
                    self.figures.server_errors.append(f"{method} {path}: {r.status_code} {r.text[:300]}")
                repeated = True
                time.sleep(0.2)
                continue
            if r.status_code in ok or (repeated and r.status_code in ok_on_repeat):
                return r
            raise Finding(f"{method} {path}: {r.status_code} {r.text[:500]}")

    def wait(self, path: str, timeout: float = 90.0) -> dict[str, Any]:
        """Poll a last_operation endpoint until the state is final."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.call("GET", path, (200,)).json()
            if body["state"] != "in progress":
                return body
            time.sleep(0.1)
        raise Finding(f"GET {path}: still in progress after {timeout}s")


def lifecycle(platform: Platform, iid: str, params: dict[str, Any], kind: str, rng: random.Random) -> None:
    instance = f"/v2/service_instances/{iid}"
    ids = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN}
    gone = {**ids, "accepts_incomplete": "true"}
    body = {**ids, "organization_guid": "org-chaos", "space_guid": "space-chaos", "parameters": params}
    platform.call("PUT", f"{instance}?accepts_incomplete=true", (202,), ok_on_repeat=(200,), json=body)

    if kind == "halt":
        # The platform changes its mind while the provision runs: DELETE halts it and deprovisions.
        time.sleep(rng.uniform(0.05, 0.6))
        platform.call("DELETE", instance, (202,), ok_on_repeat=(410,), params=gone)
        final = platform.wait(f"{instance}/last_operation")
        if final["state"] != "succeeded" or not final["description"].startswith("succeeded: deprovisioned"):
            raise Finding(f"{iid}: deprovision during provision ended {final}")
    else:
        final = platform.wait(f"{instance}/last_operation")
        if final["state"] != "succeeded":
            platform.call("DELETE", instance, (202,), ok_on_repeat=(410,), params=gone)  # orphan mitigation
            platform.wait(f"{instance}/last_operation")
            raise Finding(f"{iid}: provision ended {final}")
        binding = f"{instance}/service_bindings/{iid}-app"
        if kind == "async-bind":
            platform.call("PUT", f"{binding}?accepts_incomplete=true", (202,), ok_on_repeat=(200,), json=ids)
            report = platform.wait(f"{binding}/last_operation")
            if report["state"] != "succeeded":
                raise Finding(f"{iid}: async bind ended {report}")
            credentials = platform.call("GET", binding, (200,)).json()["credentials"]
        else:
            credentials = platform.call("PUT", binding, (201,), ok_on_repeat=(200,), json=ids).json()["credentials"]
        if not credentials.get("iam", {}).get("apikey") or not credentials.get("replication"):
            raise Finding(f"{iid}: bind returned incomplete credentials {sorted(credentials)}")
        platform.call("DELETE", binding, (200,), ok_on_repeat=(410,), params=ids)
        platform.call("DELETE", instance, (202,), ok_on_repeat=(410,), params=gone)
        final = platform.wait(f"{instance}/last_operation")
        if final["state"] != "succeeded":
            raise Finding(f"{iid}: deprovision ended {final}")
    # Nothing is left: the tombstone answers, a further DELETE is 410.
    platform.call("DELETE", instance, (410,), params=gone)


def driver(n: int, url: str, figures: Figures, killer_done: threading.Event) -> None:
    rng = random.Random(SEED + n)
    platform = Platform(url, figures)
    params = grs_params(n)  # the driver's own volumes: one live instance per driver at a time
    k = 0
    while k < MIN_LIFECYCLES or (not killer_done.is_set() and k < MAX_LIFECYCLES):
        kind = ("halt", "sync-bind", "async-bind", "sync-bind")[(n + k) % 4]
        iid = f"chaos-{n}-{k}"
        with figures.lock:
            figures.instances.append(iid)
        try:
            lifecycle(platform, iid, params, kind, rng)
        except Finding as exc:
            with figures.lock:
                figures.findings.append(str(exc))
            return
        with figures.lock:
            figures.lifecycles += 1
            figures.halted += kind == "halt"
            figures.async_binds += kind == "async-bind"
        k += 1


def killer(server: BrokerProcess, port: int, done: threading.Event, kills: list[float],
           errors: list[str]) -> None:
    rng = random.Random(SEED)
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(*UP_SECONDS))
            server.kill9()
            kills.append(time.monotonic())
            time.sleep(rng.uniform(*DOWN_SECONDS))
            for attempt in range(5):
                try:
                    server.start(port)
                    break
                except AssertionError:
                    if attempt == 4:
                        raise
                    time.sleep(0.5)
    except Exception as exc:  # pragma: no cover - reported by the test
        errors.append(repr(exc))
    finally:
        done.set()


def test_chaos_kill_9_at_random_moments_loses_nothing_and_leaves_nothing(
        broker_factory: Callable[..., BrokerProcess], db_path: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    server = broker_factory(db_path, args=["--workers", "2"], **SERVER_ENV)
    port = server.port
    figures = Figures()
    killer_done = threading.Event()
    kills: list[float] = []
    killer_errors: list[str] = []
    drivers = [threading.Thread(target=driver, args=(n, server.url, figures, killer_done), name=f"driver-{n}")
               for n in range(DRIVERS)]
    chaos = threading.Thread(target=killer, args=(server, port, killer_done, kills, killer_errors), name="killer")
    for t in [*drivers, chaos]:
        t.start()
    chaos.join(timeout=120)
    for t in drivers:
        t.join(timeout=max(1.0, 240 - (time.monotonic() - started)))
    assert not chaos.is_alive() and not any(t.is_alive() for t in drivers), "a thread did not finish"
    assert killer_errors == [], killer_errors
    assert server.alive(), server.log_tail()
    duration = time.monotonic() - started

    problems: list[str] = list(figures.findings)
    problems += [f"5xx answer: {e}" for e in figures.server_errors]

    # Every lifecycle's instance is gone, as the platform was told: tombstone, then 410.
    platform = Platform(server.url, figures)
    for iid in figures.instances:
        report = platform.call("GET", f"/v2/service_instances/{iid}/last_operation", (200,)).json()
        if report != {"state": "succeeded", "description": "succeeded: deprovisioned"}:
            problems.append(f"{iid}: last_operation {report}")
        platform.call("DELETE", f"/v2/service_instances/{iid}", (410,),
                      params={"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "accepts_incomplete": "true"})

    # The database: everything finished; the only failures are provisions halted by a DELETE.
    ops = query(db_path, "SELECT id, type, state, error, attempts, instance_id FROM operations")
    unfinished = [o for o in ops if o["state"] not in ("succeeded", "failed")]
    problems += [f"operation left {o['state']}: {o}" for o in unfinished]
    unexpected = [o for o in ops
                  if o["state"] == "failed" and not (o["type"] == "provision" and o["error"] == "halted")]
    problems += [f"operation failed: {o}" for o in unexpected]
    halted = sum(1 for o in ops if o["error"] == "halted")
    if halted > figures.halted:
        problems.append(f"{halted} halted provisions for {figures.halted} DELETEs during provision")
    states = Counter(i["state"] for i in query(db_path, "SELECT state FROM instances"))
    if set(states) != {"gone"}:
        problems.append(f"instance states {dict(states)}")
    bindings = Counter(b["state"] for b in query(db_path, "SELECT state FROM bindings"))
    if set(bindings) - {"gone"}:
        problems.append(f"binding states {dict(bindings)}")

    # No step ran more often than the kills (and the injected transient faults) explain.
    steps = query(db_path, "SELECT operation_id, name, state, attempts FROM operation_steps")
    reruns = 0
    for s in steps:
        per_run = 1 + FAULTS.get(s["name"], 0)
        if s["attempts"] > per_run * (1 + len(kills)):
            problems.append(f"step ran too often: {s}")
        reruns += max(0, s["attempts"] - per_run)
    reclaimed = sum(1 for o in ops if o["attempts"] > 1)
    if any(o["attempts"] > 1 + len(kills) for o in ops):
        problems.append("an operation was claimed more often than the kills explain")

    # The simulated cloud: nothing left (no orphans), nothing ever created twice (no duplicates).
    inventory = sim_inventory(db_path, tmp_path)
    problems += [f"orphan: {r}" for r in inventory]
    log = server.log_path.read_text(errors="replace")
    created = Counter(CREATED.findall(log))
    # api_key is re-issued by design when issue_credentials runs again (the first plaintext is lost).
    twice = {key: n for key, n in created.items() if n > 1 and key[0] != "api_key"}
    problems += [f"created {n} times: {key}" for key, n in twice.items()]
    problems += ["the unique index refused a duplicate"] * log.count("duplicate create")
    problems += ["a traceback in the server log"] * log.count("Traceback")

    print(f"\nchaos: {figures.lifecycles} lifecycles by {DRIVERS} drivers ({figures.halted} with a DELETE during "
          f"the provision, {halted} of them halted mid-way; {figures.async_binds} async binds), {len(kills)} kill -9 "
          "of the whole server, "
          f"{len(ops)} operations ({reclaimed} resumed after a kill), {reruns} step re-runs, "
          f"{sum(created.values())} resources created, {figures.requests} requests ({figures.repeats} PUT/DELETE "
          f"repeated after the server died under them), {duration:.1f} s; found wrong: {len(problems)}")
    for p in problems[:20]:
        print(f"  - {p}")
    assert len(kills) == KILLS
    assert figures.lifecycles >= DRIVERS * MIN_LIFECYCLES
    assert sum(created.values()) > 0 and reclaimed > 0, "the kills never interrupted an operation"
    assert problems == [], problems[:20]
