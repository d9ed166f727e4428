"""Shared fixtures: a real SQLite file per test, the real Flask app, the real worker."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
KSYS_PARAMS = {**GRS_PARAMS, "orchestrator": {"name": "ksys-prod", "password": "orchestrator-pass-42"}}


def auth_header(user: str = USER, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


HEADERS = {"X-Broker-API-Version": "2.17", "Authorization": auth_header()}


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
