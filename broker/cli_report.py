"""``drbroker report``: the DR report of one instance, one account or all, over a period (docs/reports.md).

It opens ``DRBROKER_DATABASE_URL`` as the server does (read-only use; it may run while brokers serve) and
asks the backend for each ready instance's replication status, for the protection status now.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

FORMATS = ("json", "csv", "html")


@click.command("report")
@click.option("--instance", "instance_id", metavar="ID", help="one instance")
@click.option("--account", metavar="ACCOUNT", help="every instance of one customer account")
@click.option("--all", "everything", is_flag=True, help="every instance")
@click.option("--since", metavar="ISO", help="start of the period (ISO 8601 date or time, UTC unless it says)")
@click.option("--days", metavar="N", help="the period is the N days before --until (default 30)")
@click.option("--until", metavar="ISO", help="end of the period (default now)")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="json", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, writable=True), help="write to FILE (default stdout)")
def report(instance_id: str | None, account: str | None, everything: bool, since: str | None, days: str | None,
           until: str | None, fmt: str, output: str | None) -> None:
    """RPO compliance, rehearsals with RTO, moves, failures and open risks over a period."""
    from broker.domain.errors import NotFound
    from broker.reports import render_csv, render_html, render_json
    from broker.reports.build import Scope, build_report, runtime_sources
    from broker.reports.period import PeriodError, resolve

    chosen = [name for name, value in (("--instance", instance_id), ("--account", account),
                                       ("--all", everything)) if value]
    if len(chosen) != 1:
        raise click.ClickException("give one of --instance ID, --account ACCOUNT or --all"
                                   + (f" (not {' and '.join(chosen)})" if chosen else ""))
    scope = (Scope("instance", instance_id) if instance_id else Scope("account", account) if account
             else Scope("all"))
    now = time.time()
    try:
        start, end = resolve(since=since, days=days, until=until, now=now)
    except PeriodError as exc:
        raise click.ClickException(str(exc)) from None
    runtime = _runtime()
    try:
        result = build_report(runtime_sources(runtime), scope, start, end, now=now)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        runtime.store.engine.dispose()
    renderer = {"json": render_json.render, "csv": render_csv.render, "html": render_html.render}[fmt]
    text = renderer(result)
    if output:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"--output: cannot write {output}: {exc.strerror}") from None
    else:
        click.echo(text, nl=False)


def _runtime():  # -> broker.app.Runtime (imported late, like every command)
    from broker.app import build_runtime
    from broker.config import Settings
    from broker.domain.errors import CatalogError
    from broker.store import db as store_db

    settings = Settings.from_env()
    engine = store_db.make_engine(settings.database_url)
    try:
        if not store_db.has_schema(engine):
            raise click.ClickException("no broker database here (set DRBROKER_DATABASE_URL)")
    finally:
        engine.dispose()
    try:
        return build_runtime(settings)
    except CatalogError as exc:
        raise click.ClickException(f"catalog: {exc}") from None
