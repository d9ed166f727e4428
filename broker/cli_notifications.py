"""``drbroker notifications``: the delivery outbox, for an SRE (what waits, what died and why, retry)."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import click

STATES = ("pending", "sending", "sent", "dead")


def _store() -> Any:
    from broker.config import Settings
    from broker.store import db as store_db
    from broker.store.repository import Store

    engine = store_db.make_engine(Settings.from_env().database_url)
    if not store_db.has_schema(engine):
        raise click.ClickException("no broker database here (set DRBROKER_DATABASE_URL)")
    return Store(engine)  # the outbox holds no sealed column: no key needed


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _shown(target: str) -> str:
    # a webhook URL's query may carry the receiver's own token: shown up to its path only
    parts = urlsplit(target)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme in ("http", "https") else target


@click.group()
def notifications() -> None:
    """Notification deliveries (webhooks, e-mail, Event Notifications)."""


@notifications.command("list")
@click.option("--state", type=click.Choice(STATES), help="only deliveries in this state")
@click.option("--instance", "instance_id", help="only this instance's deliveries")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def notifications_list(state: str | None, instance_id: str | None, limit: int, as_json: bool) -> None:
    """Deliveries, newest first: channel, target, state, attempts, next attempt, last error."""
    from broker.notifications.outbox import list_rows

    store = _store()
    with store.engine.connect() as conn:
        rows = list_rows(conn, state=state, instance_id=instance_id, limit=limit)
    out = [{"id": r["id"], "event_seq": r["event_seq"], "instance_id": r["instance_id"], "channel": r["channel"],
            "target": _shown(r["target"]), "state": r["state"], "attempts": r["attempts"],
            "next_attempt_at": _iso(r["next_attempt_at"]) if r["state"] == "pending" else None,
            "created_at": _iso(r["created_at"]), "sent_at": _iso(r["sent_at"]), "last_error": r["last_error"]}
           for r in rows]
    store.engine.dispose()
    if as_json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    click.echo(f"{'ID':36}  {'EVENT':>6}  {'CHANNEL':19}  {'STATE':7}  {'TRIES':>5}  TARGET / LAST ERROR")
    for r in out:
        click.echo(f"{r['id']:36}  {r['event_seq']:>6}  {r['channel']:19}  {r['state']:7}  {r['attempts']:>5}  "
                   f"{r['target']}" + (f"  ({r['last_error']})" if r["last_error"] else ""))


@notifications.command("retry")
@click.argument("delivery_id")
def notifications_retry(delivery_id: str) -> None:
    """Send a dead delivery again (its attempts start from zero)."""
    from broker.notifications.outbox import retry

    store = _store()
    ok = retry(store, delivery_id, now=time.time())
    store.engine.dispose()
    if not ok:
        raise click.ClickException(f"no dead delivery {delivery_id} (only dead deliveries can be retried)")
    click.echo(f"delivery {delivery_id} is pending again")
