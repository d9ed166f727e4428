"""Snapshots in process against moto: one object per change (none when nothing changed), secrets sealed, and
what ``restore`` refuses or repairs (an instance that exists, a deprovisioned one, another KEK, an operation
that was running)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from broker.domain.models import Instance, InstanceState, Operation, OperationState, OperationType
from broker.evidence import snapshots
from broker.evidence.cos import Bucket, CosConfig
from broker.evidence.restore import RestoreError, restore
from broker.security.envelope import Envelope, LocalKeyFile
from broker.store.repository import Store
from broker.store.tables import instance_snapshots, instances, operations
from tests.conftest import GRS_PARAMS, GRS_PLAN, SERVICE_ID, make_settings
from tests.evidence.conftest import cos_env, versions
from tests.evidence.test_export import store_runtime

IID = "snap-instance-1"
SECRET = "an-ibmcloud-api-key-that-must-stay-sealed"


@pytest.fixture
def rt(tmp_path: Path, moto_url: str, bucket: str) -> Any:
    runtime = store_runtime(make_settings(tmp_path, evidence_env=cos_env(moto_url, bucket)))
    runtime.bucket = Bucket(CosConfig.from_env(runtime.settings.evidence_env))
    yield runtime
    runtime.store.engine.dispose()


def add_instance(rt: Any, state: InstanceState = InstanceState.READY, op_state: OperationState =
                 OperationState.SUCCEEDED) -> None:
    now = time.time()
    with rt.store.write() as tx:
        tx.insert_instance(Instance(
            id=IID, service_id=SERVICE_ID, plan_id=GRS_PLAN, state=state,
            parameters={**GRS_PARAMS, "ibmcloud_api_key": SECRET}, context={}, organization_guid=None,
            space_guid=None, maintenance_version=None, dashboard_url=None, request_hash="h", enabled=True,
            last_active=None, created_at=now, updated_at=now))
        tx.insert_operation(Operation(id="op-1", instance_id=IID, binding_id=None, type=OperationType.PROVISION,
                                      state=op_state, plan_id=GRS_PLAN, request_hash="h", created_at=now,
                                      lease_owner="host:1:x", lease_until=now + 60))
        snapshots.mark(tx.conn, IID, now)


def export(rt: Any) -> dict[str, Any]:
    return snapshots.export_due(rt.store, rt.bucket, "me", time.time)


def keys(url: str, bucket: str) -> list[str]:
    return sorted(v["Key"] for v in versions(url, bucket, "drb/snapshots/"))


def test_one_snapshot_per_change_with_secrets_sealed(rt: Any, moto_url: str, bucket: str) -> None:
    add_instance(rt)
    assert export(rt)["written"] == 1
    assert export(rt) == {"written": 0, "due": 0}  # nothing changed: nothing written
    with rt.store.write() as tx:
        before = tx.conn.execute(select(instance_snapshots.c.changed_at)).scalar()
        snapshots.mark(tx.conn, IID, before - 10)  # a clock behind the last mark still moves it forward
        assert tx.conn.execute(select(instance_snapshots.c.changed_at)).scalar() > before
    assert export(rt)["written"] == 1
    found = keys(moto_url, bucket)
    assert len(found) == 2 and found[0] < found[1]
    for key in found:
        body = rt.bucket.get(key).decode()
        assert SECRET not in body and '"parameters":"enc:' in body


def test_restore_refuses_an_existing_instance_a_deprovisioned_one_and_another_kek(rt: Any, tmp_path: Path) -> None:
    add_instance(rt)
    export(rt)
    with pytest.raises(RestoreError, match="exists in the database"):
        restore(rt.store, rt.bucket, IID, now=time.time())
    assert restore(rt.store, rt.bucket, IID, replace=True, now=time.time()).operations == 1
    other = Store(rt.store.engine, Envelope(LocalKeyFile(tmp_path / "other" / "kek.json")))
    with pytest.raises(RestoreError, match="does not open with the configured KEK"):
        restore(other, rt.bucket, IID, replace=True, now=time.time())
    with pytest.raises(RestoreError, match="no snapshot of instance nobody"):
        restore(rt.store, rt.bucket, "nobody", now=time.time())
    with pytest.raises(RestoreError, match="at or before"):
        restore(rt.store, rt.bucket, IID, at=1.0, replace=True, now=time.time())
    with rt.store.write() as tx:
        tx.update_instance(IID, state=InstanceState.GONE.value)
        snapshots.mark(tx.conn, IID, time.time())
    export(rt)
    with pytest.raises(RestoreError, match="was deprovisioned"):
        restore(rt.store, rt.bucket, IID, replace=True, now=time.time())


def test_an_operation_running_at_snapshot_time_comes_back_failed(rt: Any) -> None:
    add_instance(rt, InstanceState.PROVISIONING, OperationState.IN_PROGRESS)
    export(rt)
    with rt.store.write() as tx:
        tx.conn.execute(operations.delete())
        tx.conn.execute(instances.delete())
    result = restore(rt.store, rt.bucket, IID, now=time.time())
    assert result.interrupted == ["op-1"] and result.state == "failed"
    with rt.store.read() as tx:
        op = tx.get_operation("op-1")
        inst = tx.get_instance(IID)
    assert op is not None and op.state == OperationState.FAILED and op.lease_owner is None
    assert inst is not None and inst.state == InstanceState.FAILED
    assert inst.parameters["ibmcloud_api_key"] == SECRET  # the sealed value opens again under the same KEK


def test_restore_into_a_new_database_with_the_same_kek(rt: Any, tmp_path: Path) -> None:
    add_instance(rt)
    export(rt)
    fresh = store_runtime(make_settings(tmp_path / "new", kek_file=str(rt.settings.kek_path)))
    try:
        result = restore(fresh.store, rt.bucket, IID, now=time.time())
        assert (result.state, result.operations) == ("ready", 1)
        with fresh.store.read() as tx:
            inst = tx.get_instance(IID)
        assert inst is not None and inst.parameters["ibmcloud_api_key"] == SECRET
    finally:
        fresh.store.engine.dispose()
