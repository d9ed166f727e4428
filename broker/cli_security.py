"""``drbroker keys``, ``drbroker audit`` and ``drbroker credentials``: key rotation, the audit trail, password
hashes. Registered on the main command group in ``broker.cli``."""

from __future__ import annotations

import getpass
import json
import sys
import time
from datetime import datetime

import click

from broker.config import Settings


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from broker.store import db as store_db

    engine = store_db.make_engine(settings.database_url)
    if not store_db.has_schema(engine):
        raise click.ClickException("no broker database here (set DRBROKER_DATABASE_URL)")
    if store_db.needs_upgrade(engine):
        raise click.ClickException("the database schema is not current: run `drbroker db upgrade`")
    return engine


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@click.group()
def keys() -> None:
    """Keys: the key-encryption key (KEK) of secrets at rest; approving a root key's deletion."""


@keys.command("status")
def keys_status() -> None:
    """The active KEK and how many sealed values each key wraps."""
    from broker.app import make_envelope
    from broker.security.envelope import Envelope
    from broker.store.sealed import count_by_kek

    settings = Settings.from_env()
    envelope = make_envelope(settings)
    engine = _engine(settings)
    click.echo(f"KEK: {envelope.kek.name}, active key {envelope.kek.active_id()}")
    for kid, n in sorted(count_by_kek(engine, Envelope.kek_id).items()):
        click.echo(f"  {kid}: {n} sealed value(s)")


@keys.command("init")
@click.argument("path", type=click.Path(dir_okay=False, path_type=str))
def keys_init(path: str) -> None:
    """Write a new local KEK file (kek.json, 0600 in a 0700 directory) to share with every replica, e.g. as a
    Kubernetes Secret. Refuses to overwrite a file that exists: its key may seal data somewhere."""
    from pathlib import Path

    from broker.security.envelope import LocalKeyFile, SecretsError

    if Path(path).exists():
        raise click.ClickException(f"{path} exists; it may hold the key of an existing database (not replaced)")
    try:
        kek = LocalKeyFile(path)
    except (OSError, SecretsError) as exc:
        raise click.ClickException(f"cannot write {path}: {exc}") from None
    click.echo(f"wrote {path}: active key {kek.active_id()}")


@keys.command("rotate")
@click.option("--batch", default=50, show_default=True, type=click.IntRange(1, 10_000),
              help="rows per write transaction")
@click.option("--grace", default=2.0, show_default=True, type=click.FloatRange(0, 300),
              help="seconds between switching keys and the sweep, for writes that wrapped under the old key "
                   "just before the switch to commit")
def keys_rotate(batch: int, grace: float) -> None:
    """Re-wrap every record's data key under a new KEK, online, while brokers keep serving.

    A new key becomes the active one (running brokers notice at their next write); the old keys stay in the
    key file, so every record keeps opening, until a pass finds nothing left under them.
    """
    from broker.app import make_envelope
    from broker.security import audit_key
    from broker.security.audit import AuditEvent, AuditTrail
    from broker.store.repository import Store
    from broker.store.sealed import RewrapStats, rewrap_all

    settings = Settings.from_env()
    envelope = make_envelope(settings)
    engine = _engine(settings)
    started = time.monotonic()
    old = envelope.kek.active_id()
    new = envelope.kek.begin_rotation()
    click.echo(f"new key {new} is active (was {old}); brokers switch at their next write")
    time.sleep(grace)
    total = RewrapStats()
    for passes in range(1, 21):
        stats = rewrap_all(engine, envelope, batch=batch)
        # The audit trail's MAC key is sealed under the KEK too: once the old keys are retired it must open.
        stats.rewrapped += audit_key.rewrap(engine, envelope)
        for name in ("examined", "rewrapped", "sealed_plaintext", "raced", "transactions"):
            setattr(total, name, getattr(total, name) + getattr(stats, name))
        click.echo(f"pass {passes}: {stats.examined} value(s) examined, {stats.rewrapped} re-wrapped, "
                   f"{stats.sealed_plaintext} plaintext value(s) sealed, {stats.raced} changed meanwhile "
                   f"({stats.transactions} transactions)")
        if not (stats.rewrapped or stats.sealed_plaintext or stats.raced):
            break
    else:
        raise click.ClickException("values kept changing for 20 passes; the old keys are kept, run it again")
    retired = envelope.kek.finish_rotation()
    seconds = time.monotonic() - started
    AuditTrail(Store(engine, envelope), checkpoint=settings.audit_checkpoint).append(AuditEvent(
        action="keys:rotate", principal=_operator(), outcome="ok",
        detail={"new_key": new, "retired_keys": retired, "rewrapped": total.rewrapped,
                "sealed_plaintext": total.sealed_plaintext, "seconds": round(seconds, 3)}))
    click.echo(f"done in {seconds:.2f}s: {total.rewrapped} data key(s) re-wrapped under {new}; "
               f"retired {', '.join(retired) or 'nothing'}")
    engine.dispose()


@keys.command("approve-deletion")
@click.argument("instance_id")
@click.option("--approver", required=True, help="who approves: another identity than the one that set the key for "
                                                 "deletion (the broker's worker, drbroker-worker)")
def keys_approve_deletion(instance_id: str, approver: str) -> None:
    """Second approval of the deletion of an instance's dual-authorisation root key (simulated Key Protect).

    Deprovisioning an instance whose root key has a dual-authorisation policy (encryption.dual_auth_delete) sets
    the key for deletion and waits; this command, run by another person, approves it, and the deprovision then
    deletes the key and finishes (a running broker picks it up at its next poll). Every attempt, refused ones
    included, is written to the audit trail.
    """
    from broker.app import make_envelope
    from broker.domain.catalog import load_catalog
    from broker.domain.errors import BrokerError, CatalogError
    from broker.orchestrators.simulated.cloud import SimulatedCloud
    from broker.orchestrators.simulated.keyprotect import SimKeyProtect
    from broker.security.audit import AuditEvent, AuditTrail
    from broker.services.operations import OperationsAdmin
    from broker.store.repository import Store

    settings = Settings.from_env()
    if settings.orchestrator != "simulated":
        raise click.ClickException(
            "on IBM Cloud Key Protect itself counts the approvals: the second approver deletes the key with their "
            "own identity (`ibmcloud kp key delete KEY_ID -i KP_INSTANCE_ID`, as the deprovision's last_operation "
            "says); the broker notices at its next look")
    engine = _engine(settings)
    store = Store(engine, sealer=make_envelope(settings))
    trail = AuditTrail(store, checkpoint=settings.audit_checkpoint)
    principal = _operator()
    try:
        auth = SimKeyProtect(SimulatedCloud(engine)).approve_deletion(instance_id, approver=approver)
    except BrokerError as exc:
        trail.append(AuditEvent(action="keys:approve-deletion", principal=principal, instance_id=instance_id,
                                status=422, outcome="refused", detail={"approver": approver,
                                                                       "reason": exc.description[:500]}))
        engine.dispose()
        raise click.ClickException(exc.description) from None
    try:
        resumed = OperationsAdmin(store, load_catalog(settings.catalog_path)).resume_parked(instance_id)
    except CatalogError:
        resumed = None  # the waiting step looks again when its wait ends
    trail.append(AuditEvent(action="keys:approve-deletion", principal=principal, instance_id=instance_id,
                            operation_id=resumed.id if resumed else None, status=200, outcome="ok",
                            detail={"approver": approver, "key_id": auth.get("key_id"),
                                    "set_by": auth.get("set_by")}))
    engine.dispose()
    click.echo(f"deletion of root key {auth.get('key_id')} of instance {instance_id} approved by {approver} (first "
               f"approval by {auth.get('set_by')}); "
               + (f"operation {resumed.id} deletes it at a running broker's next poll" if resumed else
                  "the waiting deprovision deletes it when it next looks"))


@click.group()
def audit() -> None:
    """The MAC-chained audit trail."""


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("not an ISO 8601 date or time, e.g. 2025-01-31T12:00:00Z") from None
    if parsed.tzinfo is None:
        raise click.BadParameter("give a time zone, e.g. 2025-01-31T12:00:00Z")
    return parsed.timestamp()


@audit.command("export")
@click.option("--since", help="only records at or after this ISO 8601 time (with a zone, e.g. ...Z)")
def audit_export(since: str | None) -> None:
    """Write the audit records as JSON lines to stdout, oldest first."""
    from broker.security.audit import AuditTrail
    from broker.store.repository import Store

    settings = Settings.from_env()
    trail = AuditTrail(Store(_engine(settings)))
    for record in trail.records(since=_since(since)):
        sys.stdout.write(json.dumps(trail.exported(record), sort_keys=True) + "\n")


def _verifying_envelope(settings: Settings):  # type: ignore[no-untyped-def]
    """The KEK that opens the audit MAC key; a missing local key file is an error, never a new key."""
    from broker.app import make_envelope

    if settings.kek == "local" and not settings.kek_path.exists():
        raise click.ClickException(f"no KEK file at {settings.kek_path} (DRBROKER_KEK_FILE): verifying the "
                                   "keyed audit trail needs the KEK that sealed its MAC key")
    return make_envelope(settings)


@audit.command("verify")
@click.option("--head", help="a record hash exported earlier that must still be in the chain")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="the checkpoint file whose head must still be in the chain  [default: DRBROKER_AUDIT_CHECKPOINT]")
@click.option("--against-cos", is_flag=True,
              help="also hold every record up to the newest anchor in COS to its exported copy (DRBROKER_COS_*)")
def audit_verify(head: str | None, checkpoint: str | None, against_cos: bool) -> None:
    """Check every record's link (MAC, or SHA-256 for records from before the chain was keyed) and the head
    against the checkpoint file; exit 1 naming the first broken record, a truncation or a missing checkpoint."""
    from broker.security.audit import AuditTrail
    from broker.store.repository import Store

    settings = Settings.from_env()
    checkpoint = checkpoint or settings.audit_checkpoint
    engine = _engine(settings)
    store = Store(engine, _verifying_envelope(settings))
    result = AuditTrail(store).verify(head=head, checkpoint=checkpoint)
    cos_note = _verify_against_cos(settings, store) if against_cos and result.ok else None
    engine.dispose()
    if not result.ok:
        click.echo(f"audit trail BROKEN: {result.problem}", err=True)
        sys.exit(1)
    if cos_note:
        click.echo(cos_note)
    keyed = result.records - result.legacy
    click.echo(f"audit trail intact: {result.records} record(s) ({keyed} keyed, {result.legacy} unkeyed from "
               f"before the upgrade), head #{result.head_id} {result.head}; "
               + (result.checkpoint or "no checkpoint file (set DRBROKER_AUDIT_CHECKPOINT) to detect truncation"))


def _verify_against_cos(settings: Settings, store: object) -> str:
    """``--against-cos`` (broker.evidence.anchor): exit 1 naming the first record that differs from COS."""
    from broker.evidence.anchor import verify_against_cos
    from broker.evidence.cos import CosError
    from broker.evidence.restore import require_bucket

    try:
        check = verify_against_cos(store, require_bucket(settings.evidence_env))  # type: ignore[arg-type]
    except SystemExit as exc:  # a bad DRBROKER_COS_* value
        raise click.ClickException(str(exc.code)) from None
    except CosError as exc:
        click.echo(f"audit trail NOT VERIFIED against COS: {exc}", err=True)
        sys.exit(1)
    if not check.ok:
        click.echo(f"audit trail BROKEN (against COS): {check.problem}", err=True)
        sys.exit(1)
    return f"COS: records #1..#{check.anchor_id} match their exported copies and the anchor of #{check.anchor_id}"


@click.group()
def credentials() -> None:
    """Basic-auth credentials."""


@credentials.command("hash")
@click.option("--username", default="broker", show_default=True)
def credentials_hash(username: str) -> None:
    """Read a password (prompt, or stdin when piped) and print a DRBROKER_CREDENTIALS_FILE entry holding
    only its scrypt hash."""
    from broker.security.basic import hash_password

    if sys.stdin.isatty():
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 12:
        raise click.ClickException("use a password of at least 12 characters")
    click.echo(json.dumps({"username": username, "password_hash": hash_password(password)}))


COMMANDS = (keys, audit, credentials)
