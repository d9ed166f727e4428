"""End-to-end fixtures: real ``drbroker serve`` processes (gunicorn) on loopback, spoken to over HTTP.

Each server runs in its own session (``start_new_session=True``) so that the gunicorn master and its
worker form one process group: a test can ``kill -9`` the whole broker, and every finalizer tears the
group down (SIGTERM, then SIGKILL) whatever the test did.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import GRS_PARAMS, GRS_PLAN, PASSWORD, ROOT, SERVICE_ID, USER

VERSION = "2.17"
STARTUP_TIMEOUT = 30.0


def drbroker_command() -> list[str]:
    """The ``drbroker`` console script beside this interpreter, or the module when it is absent."""
    script = Path(sys.executable).with_name("drbroker")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "broker.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """The first truthy value of ``predicate``, polled every 50 ms; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout}s")


def base_env(db_path: Path | None, **extra: str) -> dict[str, str]:
    """The parent environment without any DRBROKER_* setting, plus the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRBROKER_")}
    env.update({
        "DRBROKER_CATALOG": str(ROOT / "catalog"),
        "DRBROKER_LEASE_SECONDS": "3",
        "DRBROKER_POLL_SECONDS": "0.1",
        "DRBROKER_SIM_STEP_SECONDS": "0.05",
        "DRBROKER_USERNAME": USER,
        "DRBROKER_PASSWORD": PASSWORD,
        "PYTHONUNBUFFERED": "1",
    })
    if db_path is not None:
        env["DRBROKER_DATABASE_URL"] = f"sqlite:///{db_path}"
    env.update(extra)
    return env


class BrokerProcess:
    """One ``drbroker serve`` process group."""

    def __init__(self, env: Mapping[str, str], cwd: Path, log_path: Path, args: Sequence[str] = ()) -> None:
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.args = list(args)  # extra ``drbroker serve`` options, e.g. ["--workers", "2"]
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    # lifecycle ------------------------------------------------------------------------------------
    def start(self, port: int | None = None, attempts: int = 3) -> BrokerProcess:
        for attempt in range(attempts):
            self.port = port or free_port()
            with self.log_path.open("ab") as log:
                log.write(f"\n=== start on port {self.port} (attempt {attempt + 1}) ===\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    [*drbroker_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
                    env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
            if self._wait_healthy():
                return self
            # Most likely someone took the port between free_port() and the bind: try another one.
            self.stop()
            if port is not None:
                break
        raise AssertionError(f"drbroker serve did not become healthy:\n{self.log_tail()}")

    def _wait_healthy(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.1)
        return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill9(self) -> None:
        """``kill -9`` of the whole broker (master and workers) at once."""
        assert self.proc is not None
        self.kill_group(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._wait_group_gone(10)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def _group_exists(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _wait_group_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._group_exists():
                return True
            time.sleep(0.05)
        return not self._group_exists()

    def stop(self, timeout: float = 35.0) -> None:
        """SIGTERM the group, wait, then SIGKILL whatever is left. Safe to call more than once."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.kill_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill_group(signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a kill -9 that did not work
            pass
        self._wait_group_gone(10)

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    """``broker_factory(db_path, cwd=..., env=..., args=[...], **DRBROKER_overrides)`` starts a server and returns it.

    Every server started through it is torn down at the end of the test, also when the test fails.
    """
    started: list[BrokerProcess] = []

    def start(db_path: Path | None, *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
              port: int | None = None, args: Sequence[str] = (), **overrides: Any) -> BrokerProcess:
        environment = dict(env) if env is not None else base_env(db_path)
        environment.update({k: str(v) for k, v in overrides.items()})
        proc = BrokerProcess(environment, cwd or tmp_path, tmp_path / f"broker-{len(started) + 1}.log", args)
        started.append(proc)
        return proc.start(port)

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


class Client:
    """A small OSB client over real HTTP."""

    def __init__(self, base_url: str, *, version: str = VERSION, auth: tuple[str, str] | None = (USER, PASSWORD),
                 headers: Mapping[str, str] | None = None) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        if auth is not None:
            self.session.auth = auth
        self.session.headers.update({"X-Broker-API-Version": version, **(headers or {})})

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        return self.session.request(method, self.base_url + path, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        if body is not None:
            kw["json"] = body
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def close(self) -> None:
        self.session.close()

    # OSB helpers ----------------------------------------------------------------------------------
    def provision(self, iid: str, params: Mapping[str, Any] | None = None, **extra: Any) -> requests.Response:
        body = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "organization_guid": "org-1",
                "space_guid": "space-1", "parameters": dict(GRS_PARAMS if params is None else params), **extra}
        return self.put(f"/v2/service_instances/{iid}?accepts_incomplete=true", body)

    def last_operation(self, iid: str, operation: str | None = None) -> requests.Response:
        return self.get(f"/v2/service_instances/{iid}/last_operation",
                        params={"operation": operation} if operation else None)

    def wait(self, iid: str, timeout: float = 60.0, *, seen: list[requests.Response] | None = None,
             interval: float = 0.1) -> dict[str, Any]:
        """Poll last_operation until the state is final; ``seen`` collects every in-progress response."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.last_operation(iid)
            assert r.status_code == 200, (r.status_code, r.text)
            if r.json()["state"] != "in progress":
                return r.json()
            if seen is not None:
                seen.append(r)
            time.sleep(interval)
        raise AssertionError(f"the operation on {iid} did not finish within {timeout}s")

    def deprovision(self, iid: str) -> requests.Response:
        return self.delete(f"/v2/service_instances/{iid}",
                           params={"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "accepts_incomplete": "true"})


@pytest.fixture
def client_for(broker_factory: Callable[..., BrokerProcess]) -> Iterator[Callable[..., Client]]:
    """``client_for(broker)``: an OSB client, closed before the brokers stop (a kept-alive connection would
    hold a stopping gunicorn worker for its linger time)."""
    clients: list[Client] = []

    def make(broker: BrokerProcess | str, **kw: Any) -> Client:
        c = Client(broker if isinstance(broker, str) else broker.url, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Read the broker's SQLite database read-only (the broker may still be running)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def sim_inventory(db: Path, cwd: Path) -> list[dict[str, Any]]:
    """``drbroker sim inventory --json`` against the same database, as a separate process."""
    out = subprocess.run([*drbroker_command(), "sim", "inventory", "--json"], env=base_env(db), cwd=cwd,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def dr_params(*volumes: str) -> dict[str, Any]:
    """Provision parameters protecting the given volumes of the simulated demo account (a volume belongs to
    at most one replication group, so instances alive at the same time need their own)."""
    return {**GRS_PARAMS, "protected_volumes": list(volumes)}


def ibm_identity(iam_id: str) -> str:
    return "ibmcloud " + base64.b64encode(json.dumps({"iam_id": iam_id}).encode()).decode()


@pytest.fixture
def fake_ibmcloud(tmp_path: Path) -> Iterator[str]:
    """A ``drbroker fake-ibmcloud`` process on a free loopback port (its own process group)."""
    for _ in range(3):
        port = free_port()
        log = (tmp_path / "fake-ibmcloud.log").open("ab")
        proc = subprocess.Popen([*drbroker_command(), "fake-ibmcloud", "--port", str(port), "--step-seconds", "0.05"],
                                env=base_env(None), cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(f"{url}/_fake/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            proc.kill()
            proc.wait(10)
            continue
        try:
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            log.close()
        return
    raise AssertionError("drbroker fake-ibmcloud did not start: " + (tmp_path / "fake-ibmcloud.log").read_text())
