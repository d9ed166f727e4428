"""The ibmcloud backend through the real app and worker against the fake IBM Cloud: credentials, identity
(API key or trusted profile), endpoint overrides, IBM transaction ids in the audit trail, and metering."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from broker.app import build_runtime, create_app
from broker.orchestrators.ibmcloud.endpoints import Endpoints
from broker.store.tables import audit_events
from broker.workflows.retry import RetryPolicy
from tests.conftest import SERVICE_ID, make_settings
from tests.ibmfake import FakeAdmin, fake_cloud, ibmcloud_env
from tests.services.conftest import DR

HOUR = 3600


def _start(tmp_path: Path, url: str, **extra: str) -> DR:
    rt = build_runtime(make_settings(tmp_path, orchestrator="ibmcloud", ibmcloud_env=ibmcloud_env(url, **extra)))
    rt.worker.start()
    return DR(create_app(runtime=rt).test_client(), rt)


@pytest.fixture
def fake() -> Iterator:
    with fake_cloud() as server:
        yield server


@pytest.fixture
def dr(tmp_path: Path, fake) -> Iterator[DR]:
    d = _start(tmp_path, fake.url, DRBROKER_METERING_RESOURCE_ID="powervs-dr-service-id")
    d.admin = FakeAdmin(fake.url)  # type: ignore[attr-defined]
    yield d
    d.runtime.worker.stop(10)


def test_byok_binding_has_a_wrapped_key_only_unwrappable_with_its_aad(dr: DR) -> None:
    dr.ready_plan("c-byok", "ksys-managed-byok")
    r = dr.put("/v2/service_instances/c-byok/service_bindings/b1",
               {"service_id": SERVICE_ID, "plan_id": dr.pid("ksys-managed-byok")})
    assert r.status_code == 201, r.get_data(as_text=True)
    creds = r.json["credentials"]
    kms = creds["kms"]
    assert kms["wrapped_dek"] and kms["aad"] == ["c-byok", "b1"] and "plaintext" not in json.dumps(creds)
    assert creds["iam"]["apikey"] and creds["iam"]["serviceid_crn"].startswith("crn:v1:bluemix:public:iam-identity")
    assert creds["orchestrator"]["primary_ip"] and creds["orchestrator"]["standby_ip"]
    kp = dr.runtime.orchestrator.kp
    key_id = kms["root_key_crn"].rsplit(":", 1)[-1]
    assert len(kp.unwrap(key_id, kms["wrapped_dek"], kms["aad"])["plaintext"]) > 0
    from broker.domain.errors import PermanentBackendError

    with pytest.raises(PermanentBackendError, match="422"):
        kp.unwrap(key_id, kms["wrapped_dek"], ["c-byok", "another-binding"])
    state = dr.admin.state()  # type: ignore[attr-defined]
    assert [p["description"] for p in state["policies"]] and len(state["service_ids"]) == 1
    assert dr.unbind("c-byok", "b1", plan=dr.pid("ksys-managed-byok")).status_code == 200
    state = dr.admin.state()  # type: ignore[attr-defined]
    assert state["policies"] == [] and state["service_ids"] == [] and state["api_keys"] == []


def test_bind_with_a_given_service_id_creates_none(dr: DR) -> None:
    dr.ready_plan("c-sid", "grs-async")
    given = "crn:v1:bluemix:public:iam-identity::a/0123456789abcdef0123456789abcdef::serviceid:ServiceId-given"
    r = dr.put("/v2/service_instances/c-sid/service_bindings/b1",
               {"service_id": SERVICE_ID, "plan_id": dr.pid("grs-async"), "bind_resource": {"serviceid_crn": given}})
    assert r.status_code == 201, r.get_data(as_text=True)
    assert r.json["credentials"]["iam"] == {"serviceid_crn": given}
    assert dr.admin.state()["service_ids"] == []  # type: ignore[attr-defined]


def test_ibm_transaction_ids_reach_the_audit_trail(dr: DR) -> None:
    dr.ready_plan("c-audit", "grs-async")
    with dr.runtime.store.read() as tx:
        rows = [dict(r._mapping) for r in tx.conn.execute(
            select(audit_events).where(audit_events.c.action.like("ibmcloud:%")))]
    steps = {r["action"] for r in rows}
    assert {"ibmcloud:create_replication_group", "ibmcloud:onboard_auxiliary_volumes"} <= steps
    served = {r["transaction_id"] for r in dr.admin.requests()}  # type: ignore[attr-defined]
    ids = [c["transaction_id"] for r in rows for c in json.loads(r["detail"])["ibm_calls"]]
    assert ids and set(ids) <= served
    assert all(r["instance_id"] == "c-audit" and r["operation_id"] for r in rows)
    assert dr.runtime.audit.verify().ok


def test_trusted_profile_identity(tmp_path: Path, fake) -> None:
    d = _start(tmp_path, fake.url, DRBROKER_IBMCLOUD_TRUSTED_PROFILE_ID="Profile-0b5c2a1e-9f3d-4c7b-8e6a-1d2f3a4b5c6d")
    try:
        assert "trusted profile" in d.runtime.orchestrator.describe()
        d.ready_plan("c-tp", "grs-async")
        grants = [r for r in FakeAdmin(fake.url).requests() if r["path"] == "/identity/token"]
        assert len(grants) >= 2  # the broker's own token, then the assumed profile's
    finally:
        d.runtime.worker.stop(10)


def test_endpoints_resolve_per_service_and_region() -> None:
    public = Endpoints()
    assert public.url("powervs", "us-south") == "https://us-south.power-iaas.cloud.ibm.com"
    assert public.url("kms", "eu-de") == "https://eu-de.kms.cloud.ibm.com"
    assert public.url("global_catalog") == "https://globalcatalog.cloud.ibm.com/api/v1"
    fake = Endpoints(base_url="http://127.0.0.1:9/", overrides={"kms": "https://kp.example/{region}"})
    assert fake.url("powervs", "us-east") == "http://127.0.0.1:9"
    assert fake.url("global_catalog") == "http://127.0.0.1:9/api/v1"
    assert fake.url("kms", "us-south") == "https://kp.example/us-south"


def test_missing_api_key_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="DRBROKER_IBMCLOUD_APIKEY"):
        build_runtime(make_settings(tmp_path, orchestrator="ibmcloud", ibmcloud_env={}))


# metering ---------------------------------------------------------------------------------------------
def _meter(dr: DR):
    meter = dr.runtime.meter
    assert meter is not None
    meter.retry = RetryPolicy(attempts=3, initial=0.01, maximum=0.05)
    return meter


def test_each_finished_hour_is_reported_once(dr: DR) -> None:
    dr.ready_plan("m-1", "grs-async")
    meter = _meter(dr)
    with dr.runtime.store.read() as tx:
        created = tx.get_instance("m-1").created_at
    now = (created // HOUR + 3) * HOUR + 5  # three hours have finished since the one it was created in
    sent = meter.run_once(now)
    assert [r.state for r in sent] == ["sent"] * 3
    assert meter.run_once(now) == []  # idempotent per hour
    usage = dr.admin.usage()  # type: ignore[attr-defined]
    assert len(usage) == 3
    assert {u["resource_instance_id"] for u in usage} == {"m-1"}
    assert usage[0]["measured_usage"] == [{"measure": "instance_hours", "quantity": 1},
                                          {"measure": "protected_volume_hours", "quantity": 2}]
    assert all(r["state"] == "sent" and r["transaction_id"] for r in meter.records())


def test_metering_retries_transient_errors_and_resumes_after_the_lease(dr: DR) -> None:
    from broker.orchestrators.ibmcloud.metering import LEASE_SECONDS

    dr.ready_plan("m-2", "grs-async")
    meter = _meter(dr)
    with dr.runtime.store.read() as tx:
        created = tx.get_instance("m-2").created_at
    now = (created // HOUR + 1) * HOUR + 5
    dr.admin.fault(service="metering", status=503, count=2)  # type: ignore[attr-defined]
    assert [r.state for r in meter.run_once(now)] == ["sent"]  # retried within the run
    dr.admin.fault(service="metering", status=429, retry_after=0, count=10)  # type: ignore[attr-defined]
    later = now + HOUR
    assert [r.state for r in meter.run_once(later)] == ["retrying"]
    assert meter.run_once(later + 1) == []  # still leased: no double send
    dr.admin.clear()  # type: ignore[attr-defined]
    assert [r.state for r in meter.run_once(later + LEASE_SECONDS + 1)] == ["sent"]
    assert len(dr.admin.usage()) == 2  # type: ignore[attr-defined]


def test_a_record_ibm_already_holds_counts_as_sent(dr: DR) -> None:
    dr.ready_plan("m-3", "grs-async")
    meter = _meter(dr)
    with dr.runtime.store.read() as tx:
        created = tx.get_instance("m-3").created_at
    now = (created // HOUR + 1) * HOUR + 5
    assert [r.state for r in meter.run_once(now)] == ["sent"]
    with dr.runtime.store.write() as tx:  # a lost local record: IBM answers 409 duplicate, still sent once
        from broker.store.tables import metering_records

        tx.conn.execute(metering_records.delete())
    assert [(r.state, r.detail) for r in meter.run_once(now)] == [("sent", "409")]
    assert len(dr.admin.usage()) == 1  # type: ignore[attr-defined]


def test_disabled_instances_are_not_metered(dr: DR) -> None:
    dr.ready_plan("m-4", "grs-async")
    assert dr.put("/bluemix_v1/service_instances/m-4", {"enabled": False}).status_code == 204
    assert _meter(dr).run_once() == []


def _status_reads(admin: FakeAdmin) -> int:
    """How many times PowerVS was asked for an instance's replication (its storage details)."""
    return sum(1 for r in admin.requests() if r["method"] == "GET" and r["path"].endswith("/storage-details"))


def test_replication_status_is_read_once_per_cache_period_and_afresh_after_the_instances_own_steps(dr: DR) -> None:
    admin: FakeAdmin = dr.admin  # type: ignore[attr-defined]
    dr.ready_plan("c-cache", "ksys-managed")
    before = _status_reads(admin)
    first = dr.attributes("c-cache")
    assert first["replication_state"] == "consistent_copying" and first["active_site"] == "primary"
    for _ in range(3):
        assert dr.attributes("c-cache")["replication_state"] == "consistent_copying"
    assert _status_reads(admin) - before <= 1  # four fetches, at most one read (the provision may have left one)

    # A day-2 action runs steps of this instance: its status is read afresh, not the cached one reused.
    r = dr.action("c-cache", "failover", mode="planned")
    assert r.status_code == 202, r.get_data(as_text=True)
    assert dr.wait("c-cache")["state"] == "succeeded"
    after = dr.attributes("c-cache")
    fresh, ok = dr.runtime.orchestrator._read_status("c-cache")
    assert ok and fresh is not None
    assert (after["replication_state"], after["replication_primary_role"]) == (fresh.state, fresh.primary_role)
    assert (after["replication_state"], after["replication_primary_role"]) != \
        (first["replication_state"], first["replication_primary_role"])
    assert after["active_site"] == "secondary"


def test_a_failed_status_read_is_not_kept(dr: DR) -> None:
    admin: FakeAdmin = dr.admin  # type: ignore[attr-defined]
    dr.ready_plan("c-err", "grs-async")
    dr.runtime.orchestrator._forget_status("c-err")
    admin.fault(status=503, path="/storage-details$", count=1)
    assert "replication_state" not in dr.attributes("c-err")  # the read failed: nothing to show, no error
    assert dr.attributes("c-err")["replication_state"] == "consistent_copying"  # read again, not the failure


def test_no_status_cache_when_its_period_is_zero(tmp_path: Path, fake) -> None:
    d = _start(tmp_path, fake.url, DRBROKER_IBMCLOUD_STATUS_CACHE_SECONDS="0")
    admin = FakeAdmin(fake.url)
    try:
        d.ready_plan("c-nocache", "grs-async")
        before = _status_reads(admin)
        for _ in range(3):
            assert d.attributes("c-nocache")["replication_state"] == "consistent_copying"
        assert _status_reads(admin) - before == 3
    finally:
        d.runtime.worker.stop(10)
