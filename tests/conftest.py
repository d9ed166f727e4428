"""Shared fixtures: a real SQLite file per test, the real Flask app, the real worker."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from flask import Flask
from flask.testing import FlaskClient

from broker.app import Runtime, build_runtime, create_app
from broker.config import Settings

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "platform", "s3cret-platform-pass"
SERVICE_ID = "6f1d2c3b-8a4e-4d7f-9b2a-1c3e5f7a9b0d"
GRS_PLAN = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
KSYS_PLAN = "1b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e"
ACCOUNT = "0123456789abcdef0123456789abcdef"
PRIMARY = f"crn:v1:bluemix:public:power-iaas:dal10:a/{ACCOUNT}:7f3c9a7e-0b4e-4c8e-9d1a-3e5f6a7b8c9d::"
SECONDARY = f"crn:v1:bluemix:public:power-iaas:wdc07:a/{ACCOUNT}:2b8d4e6f-1a3c-4d5e-8f90-a1b2c3d4e5f6::"
GRS_PARAMS = {"primary_workspace_crn": PRIMARY, "secondary_workspace_crn": SECONDARY,
              "protected_volumes": ["vol-app-data-1", "vol-app-log-1"], "rpo_target_minutes": 15}


def grs_params(n: int, volumes: int = 2) -> dict[str, Any]:
    """Parameters protecting the n-th set of the demo account's bulk volumes: a volume belongs to at most
    one replication group, so instances alive at the same time need their own volumes."""
    vols = [f"vol-bulk-{n * volumes + k + 1:03d}" for k in range(volumes)]
    return {**GRS_PARAMS, "protected_volumes": vols}


# What DR Automation deploys an orchestrator with besides its name and password (HA plans: the standby's too).
ORCH_DEPLOY = {"ssh_key_name": "ksys-key", "network_ids": ["dr-net-secondary"],
               "standby_network_ids": ["dr-net-primary"]}
KSYS_PARAMS = {**GRS_PARAMS, "orchestrator": {"name": "ksys-prod", "password": "Orchestrator-Pass-42", **ORCH_DEPLOY}}


def auth_header(user: str = USER, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


HEADERS = {"X-Broker-API-Version": "2.17", "Authorization": auth_header()}


# The PostgreSQL half of the store, workflow and end-to-end tests. CI must run it: there a missing server
# is an error, elsewhere the tests are reported as skipped with the reason.
PG_URL = os.environ.get("DRBROKER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_reason() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3):
            return None
    except Exception as exc:  # any failure to connect means "no server here"
        return f"no PostgreSQL at {PG_URL} ({type(exc).__name__}: {exc})".splitlines()[0]


def required_in_ci(tests: str, reason: str) -> NoReturn:
    """A part of the suite whose server or tool is missing here: in CI (``CI`` set) a failure, elsewhere a skip
    that says why (tests/test_ci_policy.py)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the {tests} tests: {reason}")
    pytest.skip(reason)


_PG_REASON: list[str | None] = []


def postgres_url_or_skip() -> str:
    """A fresh schema on the test server (dropped at exit), as a URL whose search_path selects it."""
    if not _PG_REASON:
        _PG_REASON.append(_pg_reason())
    reason = _PG_REASON[0]
    if reason:
        required_in_ci("PostgreSQL", reason)
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    plain = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    _SCHEMAS.append(schema)
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


_SCHEMAS: list[str] = []


@pytest.fixture
def pg_url() -> str:
    """A fresh PostgreSQL schema, migrated: what ``drbroker db upgrade`` leaves for replicas to share."""
    from broker.store import db

    url = postgres_url_or_skip()
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    return url


def drop_test_schemas() -> None:
    if not _SCHEMAS:
        return
    import psycopg

    with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        for schema in _SCHEMAS:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    _SCHEMAS.clear()


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    drop_test_schemas()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: Any, tmp_path: Path) -> str:
    """Both stores: a SQLite file, and a fresh PostgreSQL schema (migrated by the runtime or the test)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    url = postgres_url_or_skip()
    from broker.store import db

    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def made() -> Iterator[list[Runtime]]:
    """Runtimes a test builds: their workers are stopped and their engines disposed when it ends."""
    runtimes: list[Runtime] = []
    yield runtimes
    for rt in runtimes:
        rt.worker.stop(timeout=10)
        rt.store.engine.dispose()


@pytest.fixture(scope="session")
def sqlite_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file the real migrations brought to head, once per session (see ``migrated_state_db``)."""
    from broker.store import db

    path = tmp_path_factory.mktemp("schema") / "state.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def migrated_state_db(tmp_path: Path, sqlite_schema: Path) -> Path:
    """Opt-in: ``tmp_path / "state.db"`` (the file ``make_settings`` points at) is already at head, a copy of
    ``sqlite_schema``, so the runtime's upgrade finds nothing to do instead of running every migration again
    (about 70 ms a runtime). Not for tests of the migrations or of a fresh database."""
    target = tmp_path / "state.db"
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # the mode the broker gives it
    src, dst = sqlite3.connect(sqlite_schema), sqlite3.connect(target)
    try:
        src.backup(dst)  # SQLite's own copy: consistent whatever the template's journal holds
    finally:
        src.close()
        dst.close()
    return target


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base = dict(database_url=f"sqlite:///{tmp_path / 'state.db'}", sim_step_seconds=0.0,
                catalog_path=str(ROOT / "catalog"), username=USER, password=PASSWORD,
                poll_seconds=0.05, lease_seconds=5.0)
    base.update(overrides)
    return Settings.from_env(env={}, **base)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = build_runtime(settings)
    yield rt
    rt.worker.stop(timeout=10)
    rt.store.engine.dispose()


@pytest.fixture
def app(runtime: Runtime) -> Flask:
    return create_app(runtime=runtime)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def worker(runtime: Runtime) -> Runtime:
    """Start the operation worker (most API tests drive operations to completion)."""
    runtime.worker.start()
    return runtime


class OSB:
    """A tiny OSB client over the Flask test client, so tests read like the spec."""

    def __init__(self, client: FlaskClient, headers: dict[str, str] | None = None) -> None:
        self.client = client
        self.headers = dict(HEADERS if headers is None else headers)

    def put(self, path: str, body: Any = None, **kw: Any) -> Any:
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        return self.client.put(path, data=data, headers={**self.headers, **kw.pop("headers", {})},
                               content_type="application/json", **kw)

    def patch(self, path: str, body: Any, **kw: Any) -> Any:
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        return self.client.patch(path, data=data, headers={**self.headers, **kw.pop("headers", {})},
                                 content_type="application/json", **kw)

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.client.delete(path, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    # lifecycle helpers
    def provision(self, iid: str, plan: str = GRS_PLAN, params: dict[str, Any] | None = None,
                  **extra: Any) -> Any:
        body = {"service_id": SERVICE_ID, "plan_id": plan,
                "parameters": GRS_PARAMS if params is None else params,
                "organization_guid": "org-1", "space_guid": "space-1", **extra}
        return self.put(f"/v2/service_instances/{iid}?accepts_incomplete=true", body)

    def wait(self, iid: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.get(f"/v2/service_instances/{iid}/last_operation")
            assert r.status_code == 200, r.get_data(as_text=True)
            if r.json["state"] != "in progress":
                return r.json
            time.sleep(0.02)
        raise AssertionError(f"operation on {iid} did not finish in {timeout}s")

    def wait_binding(self, iid: str, bid: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.get(f"/v2/service_instances/{iid}/service_bindings/{bid}/last_operation")
            assert r.status_code == 200, r.get_data(as_text=True)
            if r.json["state"] != "in progress":
                return r.json
            time.sleep(0.02)
        raise AssertionError(f"binding operation on {iid}/{bid} did not finish in {timeout}s")

    def ready(self, iid: str, plan: str = GRS_PLAN, params: dict[str, Any] | None = None) -> None:
        r = self.provision(iid, plan, params)
        assert r.status_code == 202, r.get_data(as_text=True)
        assert self.wait(iid)["state"] == "succeeded"

    def bind(self, iid: str, bid: str, plan: str = GRS_PLAN, **kw: Any) -> Any:
        body = {"service_id": SERVICE_ID, "plan_id": plan, **kw}
        return self.put(f"/v2/service_instances/{iid}/service_bindings/{bid}", body)

    def unbind(self, iid: str, bid: str, plan: str = GRS_PLAN, query: str = "") -> Any:
        return self.delete(f"/v2/service_instances/{iid}/service_bindings/{bid}"
                           f"?service_id={SERVICE_ID}&plan_id={plan}{query}")

    def deprovision(self, iid: str, plan: str = GRS_PLAN, query: str = "&accepts_incomplete=true") -> Any:
        return self.delete(f"/v2/service_instances/{iid}?service_id={SERVICE_ID}&plan_id={plan}{query}")


@pytest.fixture
def osb(client: FlaskClient) -> OSB:
    return OSB(client)
