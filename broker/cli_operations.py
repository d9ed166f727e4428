"""``drbroker operations list|show|retry|abandon``: the operator's view of durable operations.

The rules of ``retry`` and ``abandon`` live in ``broker.services.operations``; this module only opens the
database the broker uses (``DRBROKER_DATABASE_URL``, the same key for sealed columns) and prints tables or
JSON. A running broker picks a retried operation up at its next poll (``DRBROKER_POLL_SECONDS``).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from broker.config import Settings
from broker.domain.errors import BrokerError, CatalogError
from broker.domain.models import Operation, OperationState
from broker.services.operations import OperationsAdmin, OperationView, summary

_STATES = [s.value for s in OperationState]


def _admin() -> OperationsAdmin:
    from broker.app import make_envelope
    from broker.domain.catalog import load_catalog
    from broker.store import db as store_db
    from broker.store.repository import Store

    settings = Settings.from_env()
    engine = store_db.make_engine(settings.database_url)
    if not store_db.has_schema(engine):
        raise click.ClickException("no broker database here (set DRBROKER_DATABASE_URL)")
    try:
        catalog = load_catalog(settings.catalog_path)
    except CatalogError as exc:
        raise click.ClickException(f"catalog: {exc}") from None
    return OperationsAdmin(Store(engine, sealer=make_envelope(settings)), catalog)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    """Timestamps (``*_at``, ``*_until``, ``deadline``) as ISO 8601 UTC strings."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, float) and (key.endswith(("_at", "_until")) or key == "deadline"):
            out[key] = _iso(value)
        elif isinstance(value, list):
            out[key] = [_jsonable(v) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out


def _dump(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _took(start: float | None, end: float | None) -> str:
    if start is None:
        return "-"
    return f"{(end if end is not None else time.time()) - start:.2f}s" + ("" if end is not None else "+")


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _done_text(op: Operation) -> str:
    """Steps finished out of the total (the total is known once the operation has started)."""
    return f"{op.step_index}/{op.step_total}" if op.step_total else "-"


def _short(text: str | None, width: int = 70) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 3] + "..."


@click.group()
def operations() -> None:
    """Durable operations: inspect them, retry a failed one, abandon a stuck one."""


@operations.command("list")
@click.option("--state", type=click.Choice(_STATES), help="only operations in this state")
@click.option("--instance", "instance_id", help="only operations of this instance")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100000))
@click.option("--json", "as_json", is_flag=True, help="JSON output")
def list_operations(state: str | None, instance_id: str | None, limit: int, as_json: bool) -> None:
    """List operations, newest first."""
    ops = _admin().list_operations(state=state, instance_id=instance_id, limit=limit)
    if as_json:
        _dump([_jsonable(summary(op)) for op in ops])
        return
    if not ops:
        click.echo("no operations")
        return
    _table(["ID", "TYPE", "STATE", "INSTANCE", "BINDING", "DONE", "CLAIMS", "CREATED", "DESCRIPTION"],
           [[op.id, op.type.value, op.state.value, op.instance_id, op.binding_id or "-", _done_text(op),
             str(op.attempts), _iso(op.created_at) or "-", _short(op.description)] for op in ops])


def _print_view(view: OperationView) -> None:
    op = view.operation
    lines = [
        ("operation", op.id),
        ("type", op.type.value),
        ("state", op.state.value),
        ("instance", op.instance_id),
        ("binding", op.binding_id or "-"),
        ("plan", op.plan_id),
        ("created", _iso(op.created_at)),
        ("started", _iso(op.started_at) or "-"),
        ("finished", _iso(op.finished_at) or "-"),
        ("took", _took(op.started_at, op.finished_at)),
        ("claims", str(op.attempts)),
        ("operator retries", str(op.payload.get("operator_retries", 0))),
        ("lease", f"{op.lease_owner} until {_iso(op.lease_until)} (heartbeat {_iso(op.heartbeat_at) or '-'})"
         if op.lease_owner else "-"),
        ("deadline", f"{_iso(view.deadline)} (maximum_polling_duration {view.maximum_polling_duration} s)"
         if view.deadline else "-"),
        ("cancel requested", "yes" if op.cancel_requested else "no"),
        ("blocked by", op.blocked_by or "-"),
        ("description", op.description or "-"),
        ("error", op.error or "-"),
    ]
    for label, value in lines:
        click.echo(f"{label + ':':18}{value}")
    click.echo("steps:")
    if not view.steps:
        click.echo("  (none)")
        return
    _table(["  #", "ACTION", "STATE", "ATTEMPTS", "STARTED", "TOOK", "ERROR"],
           [[f"  {s.idx + 1}", s.action, s.state, str(s.attempts), _iso(s.started_at) or "-",
             _took(s.started_at, s.finished_at) if s.started_at else "-", _short(s.error, 80) or "-"]
            for s in view.steps])


@operations.command("show")
@click.argument("operation_id")
@click.option("--json", "as_json", is_flag=True, help="JSON output")
def show(operation_id: str, as_json: bool) -> None:
    """One operation: its steps with attempts, timings and errors, its lease and deadline."""
    try:
        view = _admin().show(operation_id)
    except BrokerError as exc:
        raise click.ClickException(exc.description) from None
    if as_json:
        _dump(_jsonable(view.as_dict()))
    else:
        _print_view(view)


@operations.command("retry")
@click.argument("operation_id")
def retry(operation_id: str) -> None:
    """Queue a FAILED operation again (the latest of its instance or binding; rules: docs/architecture.md)."""
    admin = _admin()
    try:
        op = admin.retry(operation_id)
    except BrokerError as exc:
        raise click.ClickException(exc.description) from None
    where = f"step {op.step_index + 1}" + (f"/{op.step_total}" if op.step_total else "")
    click.echo(f"operation {op.id} ({op.type.value} of {op.instance_id}) queued again from {where}; a running "
               "broker picks it up at its next poll")


@operations.command("abandon")
@click.argument("operation_id")
def abandon(operation_id: str) -> None:
    """End a QUEUED or IN-PROGRESS operation as failed ("abandoned by operator"); no compensation runs."""
    try:
        op = _admin().abandon(operation_id)
    except BrokerError as exc:
        raise click.ClickException(exc.description) from None
    click.echo(f"operation {op.id} ({op.type.value} of {op.instance_id}) abandoned: failed, \"{op.description}\". "
               "No compensation ran; a DELETE of the instance removes what it created.")
