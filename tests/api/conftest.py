"""Fixtures and assertions for the API conformance suite (tests/api).

Everything goes through the real Flask app, the real worker and a real SQLite file per test:

- each test's database is a copy of a session template built by the real start-up path (migrations and the
  simulated cloud's seed); tests that request ``ready_db`` start from a template in which instance ``i-1``
  was provisioned through the API;
- ``broker(**settings)`` builds an extra, independent broker (own settings and database) for slower steps
  or injected faults;
- an operation "still running" is made deterministic by stopping the worker (``runtime.worker.stop()``):
  new operations then stay queued, which last_operation reports as ``in progress``. The engine honours
  the stop at step boundaries, so synchronous binds and unbinds cannot complete while it is stopped;
- ``assert_rejected`` checks the OSB error body and that the request wrote nothing (``snapshot``).
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from sqlalchemy import select

import broker.app as broker_app
from broker.app import Runtime, build_runtime, create_app
from broker.config import Settings
from broker.domain.catalog import Catalog, load_catalog
from broker.store.tables import bindings, instances, operations
from tests.conftest import OSB, SERVICE_ID, make_settings

# Columns a worker may change on its own while an operation runs; a rejected request must change none of
# the others (OSB rule E3: a 4xx leaves resources semantically unchanged).
_VOLATILE = {
    "instances": {"state", "updated_at", "last_active"},
    "bindings": {"state", "updated_at", "credentials"},
    "operations": {"state", "description", "step_index", "step_total", "step_started_at", "payload",
                   "lease_owner", "lease_until", "heartbeat_at", "attempts", "started_at", "finished_at",
                   "error"},
}
_TABLES = {"instances": instances, "bindings": bindings, "operations": operations}

_CATALOGS: dict[tuple[str, tuple[float, ...]], Catalog] = {}


def _cached_load_catalog(path: str) -> Catalog:
    """``load_catalog`` memoized per path and file times: parsing the YAML dominates a runtime's start-up, and
    a loaded catalog is read-only, so the tests share it."""
    root = Path(path)
    files = sorted(root.glob("*.y*ml")) if root.is_dir() else [root]
    key = (str(root.resolve()), tuple(f.stat().st_mtime for f in files))
    if key not in _CATALOGS:
        _CATALOGS[key] = load_catalog(path)
    return _CATALOGS[key]


@pytest.fixture(autouse=True)
def _shared_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_app, "load_catalog", _cached_load_catalog)


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database built once by the real start-up path (migrations, simulated cloud seed)."""
    folder = tmp_path_factory.mktemp("template")
    rt = build_runtime(make_settings(folder))
    rt.store.engine.dispose()
    return folder / "state.db"


def _fresh_db(template: Path, folder: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        src = template.with_name(template.name + suffix)
        if src.exists():
            shutil.copyfile(src, folder / (template.name + suffix))
    # The key file that seals the template's secrets goes with it (copy2 keeps its mode, 0600).
    kek = template.with_name("kek.json")
    if kek.exists():
        shutil.copy2(kek, folder / "kek.json")


@pytest.fixture(scope="session")
def ready_template(template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template after instance ``i-1`` (grs-async, GRS_PARAMS) was provisioned through the API."""
    folder = tmp_path_factory.mktemp("ready-template")
    _fresh_db(template_db, folder)
    rt = build_runtime(make_settings(folder))
    rt.worker.start()
    try:
        OSB(create_app(runtime=rt).test_client()).ready("i-1")
    finally:
        rt.worker.stop(timeout=10)
        rt.store.engine.dispose()
    return folder / "state.db"


@pytest.fixture
def ready_db() -> str:
    """Request it to start from a database where instance ``i-1`` is ready (grs-async, GRS_PARAMS),
    provisioned once per session through the API instead of once per test."""
    return "i-1"


@pytest.fixture
def settings(tmp_path: Path, template_db: Path, request: pytest.FixtureRequest) -> Settings:
    """Overrides tests/conftest.py's: the same settings, on a copy of the template database (start-up then
    finds the schema current and the seed present, which is several times faster than building it)."""
    source = request.getfixturevalue("ready_template") if "ready_db" in request.fixturenames else template_db
    _fresh_db(source, tmp_path)
    return make_settings(tmp_path)


def snapshot(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """The broker's durable records, minus what a running worker legitimately changes."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with runtime.store.read() as tx:
        for name, table in _TABLES.items():
            cols = [c for c in table.c if c.name not in _VOLATILE[name]]
            out[name] = sorted(tuple(row) for row in tx.conn.execute(select(*cols)))
    return out


def assert_error(response: Any, status: int, error: str | None = None) -> dict[str, Any]:
    """An OSB error: the status, JSON ``{"error": CamelCase, "description": non-empty}``."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.mimetype == "application/json", text
    body = response.get_json()
    assert isinstance(body, dict), text
    assert isinstance(body.get("error"), str) and body["error"], text
    assert body["error"][0].isupper() and body["error"].isalnum(), f"not one CamelCase word: {text}"
    assert isinstance(body.get("description"), str) and body["description"].strip(), text
    if error is not None:
        assert body["error"] == error, text
    assert "Traceback" not in text
    return body


def assert_rejected(runtime: Runtime, before: dict[str, Any], response: Any, status: int,
                    error: str | None = None) -> dict[str, Any]:
    """An OSB error that wrote nothing."""
    body = assert_error(response, status, error)
    assert snapshot(runtime) == before, "a rejected request changed the broker's records"
    return body


def page_of(dashboard_url: str) -> str:
    """The dashboard page a ``dashboard_url`` opens: the broker hands out signed links (``?exp=...&sig=...``,
    docs/dashboard.md), whose page part is what the tests compare."""
    page, _, query = dashboard_url.partition("?")
    assert set(parse_qs(query)) == {"exp", "sig"}, dashboard_url
    return page


def identity(platform: str, value: dict[str, Any]) -> str:
    return f"{platform} {base64.b64encode(json.dumps(value).encode()).decode()}"


def operation_row(runtime: Runtime, op_id: str) -> Any:
    with runtime.store.read() as tx:
        op = tx.get_operation(op_id)
    assert op is not None, f"operation {op_id} is not in the operations table"
    return op


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout}s")


@dataclass
class Broker:
    """An independent broker (own settings and database) for tests needing slow steps or faults."""

    runtime: Runtime
    osb: OSB


@pytest.fixture
def broker(tmp_path: Path, template_db: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Broker]]:
    """``broker(**settings)`` builds an independent broker; ``ready=True`` starts it with ``i-1`` ready."""
    made: list[Runtime] = []

    def make(*, start: bool = True, ready: bool = False, name: str = "extra", **overrides: Any) -> Broker:
        folder = tmp_path / f"{name}-{len(made)}"
        folder.mkdir()
        _fresh_db(request.getfixturevalue("ready_template") if ready else template_db, folder)
        rt = build_runtime(make_settings(folder, **overrides))
        made.append(rt)
        if start:
            rt.worker.start()
        return Broker(rt, OSB(create_app(runtime=rt).test_client()))

    yield make
    for rt in made:
        rt.worker.stop(timeout=10)
        rt.store.engine.dispose()


def pending_update(osb: OSB, iid: str, rpo: int = 30) -> Any:
    """Request a parameter update and check it was accepted (202)."""
    r = osb.patch(f"/v2/service_instances/{iid}?accepts_incomplete=true",
                  {"service_id": SERVICE_ID, "parameters": {"rpo_target_minutes": rpo}})
    assert r.status_code == 202, r.get_data(as_text=True)
    return r
