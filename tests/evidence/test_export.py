"""The COS export job in process, against a real moto server: every record once, in order, resumable, never a
second object for the same records, object lock requested, and the export lag metric."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select, update

from broker.app import make_audit, make_envelope
from broker.events.log import DrEvent, record
from broker.evidence import cursors
from broker.evidence.cos import Bucket, CosConfig, CosError
from broker.evidence.export import CosExport, make_job
from broker.evidence.streams import AUDIT, EVENTS
from broker.security.audit import AuditEvent
from broker.store import db
from broker.store.repository import Store
from broker.store.tables import export_cursors
from tests.conftest import make_settings
from tests.evidence.conftest import cos_env, read_lines, s3, versions


def store_runtime(settings: Any) -> Any:
    """What the export needs of the runtime (store, audit trail, settings, clock), built as build_runtime does
    it, without the other DR-evidence jobs."""
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine)
    store = Store(engine, sealer=make_envelope(settings))
    return SimpleNamespace(settings=settings, store=store, audit=make_audit(settings, store),
                           service=SimpleNamespace(clock=time.time))


@pytest.fixture
def rt(tmp_path: Path, moto_url: str, bucket: str) -> Any:
    settings = make_settings(tmp_path, evidence_env=cos_env(moto_url, bucket, DRBROKER_COS_BATCH_RECORDS="3"))
    runtime = store_runtime(settings)
    yield runtime
    runtime.store.engine.dispose()


def job_of(rt: Any) -> CosExport:
    return CosExport(rt.store, Bucket(CosConfig.from_env(rt.settings.evidence_env)))


def add_events(rt: Any, n: int) -> None:
    for i in range(n):
        with rt.store.write() as tx:
            record(tx.conn, DrEvent("rpo.breached", f"inst-{i}", f"event {i}", {"i": i}), at=1_700_000_000 + i)


def add_audit(rt: Any, n: int) -> None:
    for i in range(n):
        rt.audit.append(AuditEvent(action="test:audit", principal="tester", detail={"i": i}))


def exported_seqs(url: str, bucket: str, folder: str, column: str) -> list[int]:
    seqs = []
    for v in versions(url, bucket, f"drb/{folder}/"):
        seqs += [line[column] for line in read_lines(url, bucket, v["Key"], v["VersionId"])]
    return sorted(seqs)


def test_make_job_needs_a_bucket_and_names_a_bad_variable(tmp_path: Path, moto_url: str) -> None:
    assert CosConfig.from_env({}) is None
    with pytest.raises(SystemExit, match="DRBROKER_COS_RETENTION_DAYS"):
        CosConfig.from_env(cos_env(moto_url, "dr-x-bucket", DRBROKER_COS_RETENTION_DAYS="many"))
    with pytest.raises(SystemExit, match="DRBROKER_COS_APIKEY"):
        CosConfig.from_env({"DRBROKER_COS_BUCKET": "dr-x-bucket", "DRBROKER_COS_ENDPOINT": moto_url})
    with pytest.raises(SystemExit, match="DRBROKER_COS_INSTANCE_CRN"):
        CosConfig.from_env({"DRBROKER_COS_BUCKET": "dr-x-bucket", "DRBROKER_COS_ENDPOINT": moto_url,
                            "DRBROKER_COS_APIKEY": "an-iam-api-key-value"})
    assert make_job(SimpleNamespace(settings=make_settings(tmp_path))) is None


def test_every_event_and_audit_record_reaches_cos_once_in_order_with_object_lock(rt: Any, moto_url: str,
                                                                                   bucket: str) -> None:
    add_events(rt, 7)
    first_audit = AUDIT.head(rt.store.engine.connect())
    add_audit(rt, 4)
    job = job_of(rt)
    summary = job.run_once()
    assert summary["events"]["exported"] == 7 and summary["events"]["objects"] == 3
    add_events(rt, 2)
    job.run_once()
    assert job.run_once()["events"]["exported"] == 0  # nothing new: nothing written
    keys = [v["Key"] for v in versions(moto_url, bucket, "drb/events/")]
    assert sorted(keys) == [f"drb/events/{a:020d}-{b:020d}.jsonl" for a, b in ((1, 3), (4, 6), (7, 7), (8, 9))]
    assert exported_seqs(moto_url, bucket, "events", "seq") == list(range(1, 10))
    audit_head = AUDIT.head(rt.store.engine.connect())
    assert audit_head >= first_audit + 4
    assert exported_seqs(moto_url, bucket, "audit", "id") == list(range(1, audit_head + 1))
    line = read_lines(moto_url, bucket, keys[0])[0]
    assert line["type"] == "rpo.breached" and line["data"] == {"i": 0}
    head = s3(moto_url).head_object(Bucket=bucket, Key=keys[0])
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"]
    anchors = [v["Key"] for v in versions(moto_url, bucket, "drb/anchors/")]
    assert anchors == [f"drb/anchors/audit-{audit_head:020d}.json"]


def test_a_batch_named_before_a_crash_is_finished_under_its_name_and_never_written_twice(
        rt: Any, moto_url: str, bucket: str) -> None:
    add_events(rt, 5)
    job = job_of(rt)
    body = EVENTS.body(EVENTS.between(rt.store.engine.connect(), 1, 3))
    key = EVENTS.key("drb", 1, 3)
    # A run that died after its PUT reached COS, before it advanced the cursor.
    assert cursors.lease(rt.store, EVENTS.name, "dead-run", 0.0, 1.0) is not None
    assert cursors.set_pending(rt.store, EVENTS.name, "dead-run", 0, 1, 3, key, 0.0)
    job.bucket.put_once(key, body)
    job.run_once()
    assert [v["Key"] for v in versions(moto_url, bucket, "drb/events/")].count(key) == 1
    assert exported_seqs(moto_url, bucket, "events", "seq") == [1, 2, 3, 4, 5]
    # A run that died after naming the batch, before its PUT: the next run writes exactly that object.
    add_events(rt, 4)
    with rt.store.write() as tx:
        tx.conn.execute(update(export_cursors).where(export_cursors.c.name == EVENTS.name).values(
            pending_start=6, pending_end=7, pending_key=EVENTS.key("drb", 6, 7), lease_owner="dead", lease_until=0))
    job.run_once()
    keys = sorted(v["Key"] for v in versions(moto_url, bucket, "drb/events/"))
    assert EVENTS.key("drb", 6, 7) in keys and EVENTS.key("drb", 8, 9) in keys
    assert exported_seqs(moto_url, bucket, "events", "seq") == list(range(1, 10))


def test_a_held_lease_is_respected_and_other_content_under_a_key_is_never_overwritten(
        rt: Any, moto_url: str, bucket: str) -> None:
    add_events(rt, 2)
    job = job_of(rt)
    assert cursors.lease(rt.store, EVENTS.name, "other-replica", job.clock(), 60.0) is not None
    assert job._export(EVENTS) == {"skipped": "another exporter holds the lease"}
    with rt.store.write() as tx:
        tx.conn.execute(update(export_cursors).where(export_cursors.c.name == EVENTS.name).values(lease_until=0))
    s3(moto_url).put_object(Bucket=bucket, Key=EVENTS.key("drb", 1, 2), Body=b"someone else's bytes\n")
    with pytest.raises(CosError, match="exists with other content"):
        job.run_once()
    with rt.store.read() as tx:
        row = tx.conn.execute(select(export_cursors).where(export_cursors.c.name == EVENTS.name)).one()
    assert row.last_seq == 0 and "other content" in row.last_error and row.lease_owner is None
    assert len(versions(moto_url, bucket, "drb/events/")) == 1


def test_export_lag_metric_counts_what_is_not_in_cos_yet(rt: Any) -> None:
    from broker.api.metrics_evidence import evidence_families

    add_events(rt, 4)

    def metric(name: str, stream: str) -> float:
        for family in evidence_families(rt):
            for sample in family.samples:
                if sample.name == name and sample.labels.get("stream") == stream:
                    return float(sample.value)
        raise AssertionError(name)

    assert metric("drbroker_cos_export_pending_records", "events") == 4
    assert metric("drbroker_cos_export_lag_seconds", "events") > 0
    assert metric("drbroker_cos_export_last_success_timestamp_seconds", "events") == 0
    job_of(rt).run_once()
    assert metric("drbroker_cos_export_pending_records", "events") == 0
    assert metric("drbroker_cos_export_lag_seconds", "events") == 0
    assert metric("drbroker_cos_export_last_success_timestamp_seconds", "events") > 0
