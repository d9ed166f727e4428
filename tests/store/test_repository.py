"""The store on both SQLite and PostgreSQL: one transaction per decision, guarded updates, exclusive claims,
reconnects."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import text

from broker.app import build_runtime
from broker.domain.models import OperationState
from broker.services.requests import ProvisionRequest
from tests.conftest import GRS_PARAMS, GRS_PLAN, SERVICE_ID, grs_params, make_settings


def _request(iid: str, params=None) -> ProvisionRequest:
    return ProvisionRequest(instance_id=iid, service_id=SERVICE_ID, plan_id=GRS_PLAN, accepts_incomplete=True,
                            organization_guid="o", space_guid="s", parameters=params or dict(GRS_PARAMS))


def test_concurrent_identical_provisions_share_one_operation(tmp_path: Path, db_url: str) -> None:
    rt = build_runtime(make_settings(tmp_path, database_url=db_url))
    results, errors = [], []

    def go() -> None:
        try:
            results.append(rt.service.provision(_request("same-id")))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {r.status for r in results} == {"accepted"}
    assert len({r.operation for r in results}) == 1
    with rt.store.read() as tx:
        assert len(tx.list_operations(instance_id="same-id")) == 1


def test_guarded_update_applies_only_while_the_expected_state_holds(tmp_path: Path, db_url: str) -> None:
    rt = build_runtime(make_settings(tmp_path, database_url=db_url))
    op_id = rt.service.provision(_request("guarded")).operation
    with rt.store.write() as tx:
        assert tx.update_operation(op_id, expect={"state": OperationState.QUEUED}, state=OperationState.FAILED)
    with rt.store.write() as tx:
        assert not tx.update_operation(op_id, expect={"state": OperationState.QUEUED},
                                       state=OperationState.SUCCEEDED)
        assert tx.get_operation(op_id).state == OperationState.FAILED


def test_workers_never_claim_the_same_operation(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, database_url=db_url)
    a, b = build_runtime(settings), build_runtime(settings)
    ops = {a.service.provision(_request(f"claim-{i}", grs_params(i + 1))).operation for i in range(20)}
    claimed: dict[str, list[str]] = {"a": [], "b": []}

    def drain(name: str, rt) -> None:
        while True:
            op_id = rt.worker.claim_next()
            if op_id is None:
                return
            claimed[name].append(op_id)

    threads = [threading.Thread(target=drain, args=(n, r)) for n, r in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    together = claimed["a"] + claimed["b"]
    assert sorted(together) == sorted(ops)
    assert len(together) == len(set(together))


def test_the_store_reconnects_after_its_connections_are_dropped(tmp_path: Path, db_url: str) -> None:
    app_name = f"drb-reconnect-{uuid.uuid4().hex[:8]}"
    if db_url.startswith("postgresql"):
        db_url += f"&application_name={app_name}"
    rt = build_runtime(make_settings(tmp_path, database_url=db_url))
    rt.service.provision(_request("before"))
    engine = rt.store.engine
    if engine.dialect.name == "postgresql":
        # What a database restart looks like from here: every server-side session ends.
        import psycopg

        from tests.conftest import PG_URL

        with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
            ended = c.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                              "WHERE application_name = %s", (app_name,)).fetchone()[0]
        assert ended >= 1
        time.sleep(0.2)
    else:
        engine.dispose()
    rt.service.provision(_request("after", grs_params(5)))
    with rt.store.read() as tx:
        assert tx.get_instance("after") is not None
        assert tx.conn.execute(text("SELECT 1")).scalar() == 1
