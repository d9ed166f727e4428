"""``drbroker snapshot``: the per-instance DR configuration snapshots in COS (broker.evidence.snapshots), and
rebuilding an instance's broker records from one after the loss of the broker's database."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime

import click

from broker.config import Settings


def _bucket(settings: Settings):  # type: ignore[no-untyped-def]
    from broker.evidence.cos import CosError
    from broker.evidence.restore import require_bucket

    try:
        return require_bucket(settings.evidence_env)
    except CosError as exc:
        raise click.ClickException(str(exc)) from None
    except SystemExit as exc:  # a bad DRBROKER_COS_* value: its one-line message
        raise click.ClickException(str(exc.code)) from None


def _when(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("not an ISO 8601 time, e.g. 2026-01-31T12:00:00Z", param_hint="--at") from None
    if parsed.tzinfo is None:
        raise click.BadParameter("give a time zone, e.g. 2026-01-31T12:00:00Z", param_hint="--at")
    return parsed.timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@click.group()
def snapshot() -> None:
    """DR configuration snapshots in Cloud Object Storage: list them, restore an instance's records."""


@snapshot.command("list")
@click.argument("instance_id")
@click.option("--json", "as_json", is_flag=True)
def snapshot_list(instance_id: str, as_json: bool) -> None:
    """The snapshots of INSTANCE_ID in COS, oldest first (time of the change each shows, object key)."""
    from broker.evidence.cos import CosError
    from broker.evidence.restore import snapshots

    bucket = _bucket(Settings.from_env())
    try:
        found = snapshots(bucket, instance_id)
    except CosError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        json.dump([{"changed_at": _iso(at), "key": key} for at, key in found], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    if not found:
        click.echo(f"no snapshot of {instance_id}")
    for at, key in found:
        click.echo(f"{_iso(at)}  {key}")


@snapshot.command("restore")
@click.argument("instance_id")
@click.option("--at", "at", help="the newest snapshot at or before this ISO 8601 time (default: the newest)")
@click.option("--replace", is_flag=True, help="overwrite the instance's records if it exists in the database")
@click.option("--dry-run", is_flag=True, help="check the snapshot and say what would be restored; write nothing")
def snapshot_restore(instance_id: str, at: str | None, replace: bool, dry_run: bool) -> None:
    """Rebuild INSTANCE_ID's broker records (instance, bindings, operations and their steps) from its snapshot
    in COS, with the same KEK, after the loss of the broker's database; refuses an instance that exists."""
    from broker.app import make_envelope
    from broker.cli_security import _engine, _operator
    from broker.evidence.cos import CosError
    from broker.evidence.restore import RestoreError, restore
    from broker.security.audit import AuditEvent, AuditTrail
    from broker.store import db as store_db
    from broker.store.repository import Store

    settings = Settings.from_env()
    when = _when(at)
    bucket = _bucket(settings)
    if settings.kek == "local" and not settings.kek_path.exists():
        raise click.ClickException(f"no KEK file at {settings.kek_path} (DRBROKER_KEK_FILE): the snapshot's sealed "
                                   "values open only with the KEK of the broker that wrote them")
    engine = store_db.make_engine(settings.database_url)
    if store_db.is_sqlite(engine) and not store_db.has_schema(engine):
        store_db.upgrade(engine)  # a lost SQLite database: start a new one, as `drbroker serve` would
    engine.dispose()
    engine = _engine(settings)
    store = Store(engine, make_envelope(settings))
    try:
        result = restore(store, bucket, instance_id, at=when, replace=replace, dry_run=dry_run, now=time.time())
    except (RestoreError, CosError) as exc:
        engine.dispose()
        raise click.ClickException(str(exc)) from None
    if not dry_run:
        AuditTrail(store, checkpoint=settings.audit_checkpoint).append(AuditEvent(
            action="snapshot:restore", principal=_operator(), instance_id=instance_id, outcome="ok",
            detail={"object": result.key, "bindings": result.bindings, "operations": result.operations,
                    "interrupted": result.interrupted, "replace": replace}))
    engine.dispose()
    verb = "would restore" if dry_run else "restored"
    click.echo(f"{verb} instance {instance_id} ({result.state}) from {result.key}: {result.bindings} binding(s), "
               f"{result.operations} operation(s), {result.steps} step record(s)"
               + (f"; {len(result.interrupted)} operation(s) that were running come back failed"
                  if result.interrupted else ""))
