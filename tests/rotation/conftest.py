from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SERVICE_ID
from tests.services.conftest import DR


@pytest.fixture(autouse=True)
def _current_schema(migrated_state_db: Path) -> None:
    """Every runtime built here on ``tmp_path`` starts on a database already at head (tests/conftest.py)."""


@pytest.fixture
def dr(client, worker) -> DR:
    return DR(client, worker)


def binding_path(iid: str, bid: str) -> str:
    return f"/v2/service_instances/{iid}/service_bindings/{bid}"


def rotate(d: DR, iid: str, bid: str, predecessor: str, query: str = "", headers: dict[str, str] | None = None,
           **extra: Any) -> Any:
    """The OSB 2.17 rotation request: its body is ``predecessor_binding_id`` (and whatever ``extra`` repeats)."""
    return d.put(binding_path(iid, bid) + query, {"predecessor_binding_id": predecessor, **extra},
                 headers=headers or {})


def bind(d: DR, iid: str, bid: str, plan: str, **params: Any) -> Any:
    return d.put(binding_path(iid, bid), {"service_id": SERVICE_ID, "plan_id": d.pid(plan),
                                         **({"parameters": params} if params else {})})
