"""The store on both SQLite and PostgreSQL: one transaction per decision, guarded updates, exclusive claims,
reconnects, the single-statement reads behind fetch instance and an idle worker's poll, and reads that need no
transaction on SQLite."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from broker.app import build_runtime
from broker.domain.models import (
    Binding,
    BindingState,
    Instance,
    InstanceState,
    Operation,
    OperationState,
    OperationType,
)
from broker.security.envelope import PREFIX, Envelope, LocalKeyFile
from broker.services.requests import ProvisionRequest
from broker.store import db as store_db
from broker.store.repository import Store, Tx
from broker.store.tables import instances
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


# --- rows written straight through the store ---------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path, db_url: str) -> Iterator[Store]:
    """The store as the broker builds it: secret columns sealed by the real envelope."""
    engine = store_db.make_engine(db_url)
    store_db.upgrade(engine)
    yield Store(engine, Envelope(LocalKeyFile(tmp_path / "kek.json")))
    engine.dispose()


def _instance(iid: str, **fields: Any) -> Instance:
    values: dict[str, Any] = dict(
        id=iid, service_id=SERVICE_ID, plan_id=GRS_PLAN, state=InstanceState.READY,
        parameters={**GRS_PARAMS, "ibmcloud_api_key": f"api-key-of-{iid}"}, context={"platform": "ibmcloud"},
        organization_guid="o", space_guid="s", maintenance_version=None, dashboard_url=None, request_hash="h",
        enabled=True, last_active=None, created_at=1.0, updated_at=1.0, dr_state={"active_site": "primary"},
        account_id="acct-1")
    values.update(fields)
    return Instance(**values)


def _binding(iid: str, bid: str, state: BindingState) -> Binding:
    return Binding(instance_id=iid, id=bid, service_id=SERVICE_ID, plan_id=GRS_PLAN, state=state, parameters={},
                   bind_resource={}, context={}, credentials={"iam": {"apikey": f"key-{bid}"}}, request_hash="h",
                   created_at=1.0, updated_at=1.0)


def _operation(op_id: str, iid: str, op_type: OperationType, state: OperationState, *,
               created_at: float = 1.0, **fields: Any) -> Operation:
    return Operation(id=op_id, instance_id=iid, binding_id=None, type=op_type, state=state, plan_id=GRS_PLAN,
                     request_hash="h", created_at=created_at, **fields)


NOW, ME, OTHER = 1000.0, "host-a:1:me", "host-b:2:other"


def test_has_claimable_is_false_on_an_empty_table(store: Store) -> None:
    with store.read() as tx:
        assert tx.has_claimable(NOW, ME) is False


@pytest.mark.parametrize(("state", "lease_owner", "lease_until", "claimable"), [
    (OperationState.QUEUED, None, None, True),
    (OperationState.IN_PROGRESS, ME, NOW + 30, False),
    (OperationState.IN_PROGRESS, OTHER, NOW + 30, True),
    (OperationState.IN_PROGRESS, ME, NOW - 1, True),
    (OperationState.IN_PROGRESS, ME, NOW, False),
    (OperationState.IN_PROGRESS, None, NOW + 30, True),
    (OperationState.IN_PROGRESS, ME, None, True),
    (OperationState.SUCCEEDED, None, None, False),
    (OperationState.FAILED, None, None, False),
], ids=["queued", "own-valid-lease", "other-owner", "lease-expired", "lease-ends-now", "no-owner", "no-lease",
        "succeeded", "failed"])
def test_has_claimable_says_whether_a_worker_could_get_anything(
        store: Store, state: OperationState, lease_owner: str | None, lease_until: float | None,
        claimable: bool) -> None:
    with store.write() as tx:
        tx.insert_operation(_operation("op-1", "i-1", OperationType.PROVISION, state, lease_owner=lease_owner,
                                       lease_until=lease_until))
    with store.read() as tx:
        assert tx.has_claimable(NOW, ME) is claimable
        # A worker that does not hold the lease may take any in-progress operation over (when its holder's
        # process is found dead), so for it only finished operations are nothing.
        assert tx.has_claimable(NOW, "host-c:3:third") is not state.finished


def test_claim_next_claims_a_queued_operation_and_an_idle_poll_opens_no_write_transaction(
        tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rt = build_runtime(make_settings(tmp_path, database_url=db_url))
    writes: list[int] = []
    real_write = rt.store.write

    def counting_write() -> AbstractContextManager[Tx]:
        writes.append(1)
        return real_write()

    monkeypatch.setattr(rt.store, "write", counting_write)
    try:
        assert rt.worker.claim_next() is None
        assert writes == [], "nothing to claim: the poll must not take the write lock"

        op_id = rt.service.provision(_request("claim-me")).operation
        writes.clear()
        assert rt.worker.claim_next() == op_id
        assert len(writes) == 1
        with rt.store.read() as tx:
            claimed = tx.get_operation(op_id)
        assert claimed.state == OperationState.IN_PROGRESS and claimed.lease_owner == rt.worker.owner
        assert claimed.lease_until > time.time()

        # The only operation is this worker's own, under a valid lease: nothing to claim, and no write.
        assert rt.worker.claim_next() is None
        assert len(writes) == 1
    finally:
        rt.store.engine.dispose()


def test_instance_summary_reads_the_instance_whether_it_is_updating_and_its_bound_bindings(store: Store) -> None:
    with store.write() as tx:
        tx.insert_instance(_instance("i-1"))
        tx.insert_instance(_instance("i-2"))
        tx.insert_instance(_instance("i-3", state=InstanceState.PROVISIONING))
        for bid, state in (("b-1", BindingState.BOUND), ("b-2", BindingState.BOUND), ("b-gone", BindingState.GONE),
                           ("b-binding", BindingState.BINDING), ("b-failed", BindingState.FAILED),
                           ("b-unbinding", BindingState.UNBINDING)):
            tx.insert_binding(_binding("i-1", bid, state))
        tx.insert_binding(_binding("i-2", "b-1", BindingState.BOUND))
        tx.insert_operation(_operation("prov-1", "i-1", OperationType.PROVISION, OperationState.SUCCEEDED))
        tx.insert_operation(_operation("prov-3", "i-3", OperationType.PROVISION, OperationState.IN_PROGRESS))
        tx.insert_operation(_operation("upd-2", "i-2", OperationType.UPDATE, OperationState.IN_PROGRESS))
    with store.engine.connect() as conn:
        raw = conn.execute(select(instances.c.parameters).where(instances.c.id == "i-1")).scalar_one()
    assert raw.startswith(PREFIX) and "api-key-of-i-1" not in raw

    def summary(iid: str) -> tuple[Instance, bool, int] | None:
        with store.read(snapshot=False) as tx:
            return tx.instance_summary(iid)

    assert summary("unknown") is None
    found = summary("i-1")
    assert found is not None
    inst, updating, bound = found
    with store.read() as tx:
        assert inst == tx.get_instance("i-1")
    assert inst.parameters == {**GRS_PARAMS, "ibmcloud_api_key": "api-key-of-i-1"}
    assert inst.state == InstanceState.READY and inst.enabled is True
    assert inst.dr_state == {"active_site": "primary"} and inst.context == {"platform": "ibmcloud"}
    assert (updating, bound) == (False, 2)
    assert summary("i-2")[1:] == (True, 1), "another instance's update and binding"
    assert summary("i-3")[1:] == (False, 0), "a provision in progress is not an update"

    # An update of i-1: updating while queued and while it runs, not once it has finished.
    with store.write() as tx:
        tx.insert_operation(_operation("upd-1", "i-1", OperationType.UPDATE, OperationState.QUEUED, created_at=2.0))
    assert summary("i-1")[1] is True
    with store.write() as tx:
        assert tx.update_operation("upd-1", state=OperationState.IN_PROGRESS)
    assert summary("i-1")[1] is True
    for finished in (OperationState.SUCCEEDED, OperationState.FAILED):
        with store.write() as tx:
            assert tx.update_operation("upd-1", state=finished)
        assert summary("i-1")[1] is False

    with store.write() as tx:
        assert tx.update_binding("i-1", "b-2", state=BindingState.GONE.value)
    assert summary("i-1")[2] == 1


def test_instance_exists(store: Store) -> None:
    with store.write() as tx:
        tx.insert_instance(_instance("i-1"))
        tx.insert_instance(_instance("i-gone", state=InstanceState.GONE))
    with store.read() as tx:
        assert tx.instance_exists("i-1") is True
        assert tx.instance_exists("i-gone") is True, "a gone instance's row is still there"
        assert tx.instance_exists("unknown") is False


# --- reads without a transaction (SQLite) ------------------------------------------------------------

def _sqlite_store(tmp_path: Path) -> Store:
    engine = store_db.make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    store_db.upgrade(engine)
    return Store(engine, Envelope(LocalKeyFile(tmp_path / "kek.json")))


def test_a_read_without_snapshot_works_while_another_thread_holds_the_write_transaction(tmp_path: Path) -> None:
    store = _sqlite_store(tmp_path)
    with store.write() as tx:
        tx.insert_instance(_instance("i-1"))
        tx.insert_binding(_binding("i-1", "b-1", BindingState.BOUND))
        tx.insert_operation(_operation("prov-1", "i-1", OperationType.PROVISION, OperationState.SUCCEEDED))
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with store.write() as tx:  # BEGIN IMMEDIATE: the database's write lock, held until release
                assert tx.update_instance("i-1", enabled=False, updated_at=2.0)
                assert tx.update_binding("i-1", "b-1", state=BindingState.GONE.value)
                tx.insert_operation(_operation("upd-1", "i-1", OperationType.UPDATE, OperationState.QUEUED,
                                               created_at=2.0))
                holding.set()
                assert release.wait(30)
        except BaseException as exc:
            errors.append(exc)
            holding.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(30) and not errors, errors
        with store.read(snapshot=False) as tx:
            summary = tx.instance_summary("i-1")
            latest = tx.latest_instance_operation("i-1")
            exists = tx.instance_exists("i-1")
        assert summary is not None and exists
        inst, updating, bound = summary
        # The last committed state, opened as usual: nothing of the uncommitted transaction.
        assert inst.enabled is True and inst.updated_at == 1.0
        assert inst.parameters["ibmcloud_api_key"] == "api-key-of-i-1"
        assert (updating, bound) == (False, 1)
        assert latest is not None and latest.id == "prov-1"
    finally:
        release.set()
        thread.join(30)
    assert not thread.is_alive() and not errors, errors
    with store.read(snapshot=False) as tx:
        inst, updating, bound = tx.instance_summary("i-1")
        latest = tx.latest_instance_operation("i-1")
    assert inst.enabled is False and (updating, bound) == (True, 0) and latest.id == "upd-1"
    store.engine.dispose()


def test_a_read_without_snapshot_sees_each_commit_and_a_snapshot_read_does_not(tmp_path: Path) -> None:
    store = _sqlite_store(tmp_path)
    with store.write() as tx:
        tx.insert_instance(_instance("i-1"))
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None, timeout=30)  # another process

    def commit_enabled(value: bool) -> None:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE instances SET enabled = ? WHERE id = 'i-1'", (value,))
        other.execute("COMMIT")

    try:
        with store.read() as tx:
            assert tx.get_instance("i-1").enabled is True
            commit_enabled(False)
            assert tx.get_instance("i-1").enabled is True, "a snapshot read keeps what it saw first"
        with store.read(snapshot=False) as tx:
            assert tx.get_instance("i-1").enabled is False
            commit_enabled(True)
            assert tx.get_instance("i-1").enabled is True, "each statement reads the last commit"
        # While the other connection holds the write lock with an uncommitted change, reads go on.
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE instances SET enabled = 0 WHERE id = 'i-1'")
        with store.read(snapshot=False) as tx:
            assert tx.get_instance("i-1").enabled is True
        other.execute("ROLLBACK")
    finally:
        other.close()
        store.engine.dispose()
