"""An IBM error body that echoes the request (DR Automation's ``manage_dr`` carries the orchestrator password and
an API key) is redacted before it reaches last_operation, the step records, the logs or the database files."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from broker.app import build_runtime, create_app
from broker.store.tables import operation_steps, operations
from tests.conftest import make_settings
from tests.ibmfake import FakeAdmin, fake_cloud, ibmcloud_env
from tests.security.test_secrets_at_rest import Capture, db_bytes, debug_logs  # noqa: F401  (fixture)
from tests.services.conftest import DR, params_for


@pytest.fixture
def ibm(tmp_path: Path) -> Iterator[tuple[DR, FakeAdmin]]:
    with fake_cloud() as fake:
        rt = build_runtime(make_settings(tmp_path, orchestrator="ibmcloud", ibmcloud_env=ibmcloud_env(fake.url)))
        rt.worker.start()
        try:
            yield DR(create_app(runtime=rt).test_client(), rt), FakeAdmin(fake.url)
        finally:
            rt.worker.stop(10)
            rt.store.engine.dispose()


def test_an_echoed_request_body_in_an_ibm_error_is_redacted_everywhere(ibm, tmp_path: Path,
                                                                         debug_logs: Capture) -> None:  # noqa: F811
    dr, fake = ibm
    tag = secrets.token_hex(6)
    password, api_key = f"PLANTED-orchpw-{tag}-Xw7", f"PLANTED-apikey-{tag}-Zq81"
    params = params_for("ksys-managed")
    params["orchestrator"] = {**params["orchestrator"], "password": password}
    params["ibmcloud_api_key"] = api_key
    fake.fault(service="dra", method="POST", path=r"/manage_dr/", status=400, count=5, echo=True)
    r = dr.provision_plan("leaky", "ksys-managed", params)
    assert r.status_code == 202, r.get_data(as_text=True)
    result = dr.wait("leaky", timeout=60)
    assert result["state"] == "failed", result
    # The fault did answer, echoing the secrets: the broker saw them and kept them out of its records.
    assert any(f["hits"] for f in fake.faults()), fake.faults()
    assert "400" in result["description"], result
    # the echoing answer, and every request that led to it, hold to IBM's DR Automation definitions
    contract = requests.get(f"{fake.url}/_fake/contract", timeout=10).json()
    assert contract["exchanges_checked"] > 0 and contract["violations"] == [], contract["violations"]
    text = json.dumps(result)
    with dr.runtime.store.read() as tx:
        rows = [tuple(r) for r in tx.conn.execute(select(operation_steps))]
        rows += [tuple(r) for r in tx.conn.execute(select(operations))]
    stored = repr(rows)
    assert "injected fault" in stored  # the error text itself is kept, only its secrets go
    logs = "\n".join(debug_logs.lines)
    dr.runtime.worker.stop(10)
    raw = db_bytes(tmp_path / "state.db")
    for secret in (password, api_key):
        assert secret not in text, result
        assert secret not in stored
        assert secret not in logs
        assert secret.encode() not in raw
