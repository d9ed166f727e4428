"""``drbroker events list|show``: the DR event log (``broker.events``), read from the broker's database.

Like ``drbroker operations`` it opens ``DRBROKER_DATABASE_URL`` and may run while brokers are serving; events
hold no secrets, so no sealing key is needed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy import Connection

from broker.config import Settings
from broker.events.log import get_event, list_events, public
from broker.events.types import EVENT_TYPES


@contextmanager
def _connect() -> Iterator[Connection]:
    from broker.store import db as store_db

    engine = store_db.make_engine(Settings.from_env().database_url)
    try:
        if not store_db.has_schema(engine):
            raise click.ClickException("no broker database here (set DRBROKER_DATABASE_URL)")
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def expand_types(patterns: tuple[str, ...]) -> list[str] | None:
    """Event type names from ``--type`` values: a name, or a prefix ending in ``*`` (``rehearsal.*``)."""
    if not patterns:
        return None
    names: list[str] = []
    for pattern in patterns:
        if pattern.endswith("*"):
            found = [n for n in EVENT_TYPES if n.startswith(pattern[:-1])]
        else:
            found = [pattern] if pattern in EVENT_TYPES else []
        if not found:
            raise click.BadParameter(f"no event type {pattern!r} (types: {', '.join(EVENT_TYPES)}; a prefix "
                                     "may end in *, e.g. rehearsal.*)", param_hint="--type")
        names += [n for n in found if n not in names]
    return names


def parse_time(value: str | None, option: str) -> float | None:
    """An ISO 8601 time (``2026-03-01``, ``2026-03-01T12:00:00Z``; UTC unless it names a zone)."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time (e.g. 2026-03-01T12:00:00Z)",
                                 param_hint=option) from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _dump(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


@click.group()
def events() -> None:
    """The DR event log: replication, RPO, protection, rehearsals, moves, keys, bindings."""


@events.command("list")
@click.option("--instance", "instance_id", help="only events of this instance")
@click.option("--type", "types", multiple=True, help="only this type (repeatable; a prefix may end in *)")
@click.option("--since", help="only events at or after this ISO 8601 time")
@click.option("--until", help="only events before this ISO 8601 time")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100000),
              help="the newest N matching events")
@click.option("--json", "as_json", is_flag=True, help="JSON output")
def list_cmd(instance_id: str | None, types: tuple[str, ...], since: str | None, until: str | None, limit: int,
             as_json: bool) -> None:
    """List the newest matching events, oldest first (in seq order)."""
    names = expand_types(types)
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    if start is not None and end is not None and end <= start:
        raise click.BadParameter("must be after --since", param_hint="--until")
    with _connect() as conn:
        found = list_events(conn, instance_id=instance_id, types=names, since=start, until=end, limit=limit,
                            newest_first=True)[::-1]
    if as_json:
        _dump([public(e) for e in found])
        return
    if not found:
        click.echo("no events")
        return
    rows = [[str(e["seq"]), public(e)["at"], e["type"], e["severity"], e["instance_id"] or "-",
             e["summary"].splitlines()[0][:100]] for e in found]
    header = ["SEQ", "AT", "TYPE", "SEVERITY", "INSTANCE", "SUMMARY"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])


@events.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="JSON output")
def show_cmd(ref: str, as_json: bool) -> None:
    """Show one event by its SEQ (a number) or its ID (a UUID)."""
    with _connect() as conn:
        event = get_event(conn, ref)
    if event is None:
        raise click.ClickException(f"no event {ref} (give its seq or id; see `drbroker events list`)")
    out = public(event)
    if as_json:
        _dump(out)
        return
    for key in ("seq", "id", "at", "type", "severity", "instance_id", "binding_id", "operation_id", "summary"):
        click.echo(f"{key:13} {out[key] if out[key] is not None else '-'}")
    click.echo("data")
    for key, value in sorted(out["data"].items()):
        click.echo(f"  {key:20} {json.dumps(value, default=str)}")
