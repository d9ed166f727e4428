"""The ``drbroker`` command."""

from __future__ import annotations

import json
import os
import sys

import click

from broker.config import Settings
from broker.domain.catalog import load_catalog
from broker.domain.errors import CatalogError


@click.group()
def main() -> None:
    """powervs-dr-broker: an Open Service Broker for PowerVS disaster recovery."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="gunicorn worker processes")
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False),
              help="serve HTTPS (TLS 1.2 or newer) with this PEM certificate (chain)")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False), help="the certificate's PEM private key")
def serve(host: str, port: int, workers: int, certfile: str | None, keyfile: str | None) -> None:
    """Serve the broker (gunicorn) with the operation worker."""
    _prepare_metrics_dir()
    from broker.server import serve as run

    if bool(certfile) != bool(keyfile):
        raise click.UsageError("--certfile and --keyfile go together")
    settings = Settings.from_env()
    try:
        run(settings, host, port, workers, certfile=certfile, keyfile=keyfile)
    except CatalogError as exc:
        raise click.ClickException(f"catalog: {exc}") from None


def _prepare_metrics_dir() -> None:
    """prometheus-client's multiprocess mode reads its directory when first imported: set it up before."""
    import shutil
    import tempfile
    from pathlib import Path

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="drbroker-metrics-")
    path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if path.exists():
        for child in path.iterdir():  # values of an earlier run are not this run's
            if child.is_file():
                child.unlink()
            else:
                shutil.rmtree(child, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the Alembic migrations to DRBROKER_DATABASE_URL."""
    from sqlalchemy.exc import SQLAlchemyError

    from broker.app import database_error
    from broker.store import db as store_db

    settings = Settings.from_env()
    engine = store_db.make_engine(settings.database_url)
    try:
        store_db.upgrade(engine, revision)
        current = store_db.current_revision(engine)
    except SQLAlchemyError as exc:
        raise SystemExit(database_error(settings.database_url, exc)) from None
    click.echo(f"database at revision {current}")


@main.group()
def catalog() -> None:
    """The service catalog."""


@catalog.command("validate")
@click.argument("path", required=False)
def catalog_validate(path: str | None) -> None:
    """Load and validate a catalog file or folder (default: DRBROKER_CATALOG)."""
    location = path or Settings.from_env().catalog_path
    try:
        cat = load_catalog(location)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    plans = sum(len(s.plans) for s in cat.services)
    click.echo(f"{location}: valid ({len(cat.services)} service(s), {plans} plan(s))")


@catalog.command("export")
@click.option("--format", "fmt", type=click.Choice(["osb", "ibm-global-catalog"]), default="osb",
              show_default=True)
@click.option("--locations", default="us-south,us-east,eu-de,lon,syd,tok", show_default=True,
              help="comma-separated deployment locations (ibm-global-catalog)")
@click.option("--broker-name", default="powervs-dr-broker", show_default=True)
@click.option("--broker-guid", default="",
              help="the broker's URL-encoded CRN from Partner Center (ibm-global-catalog; default: "
                   "DRBROKER_BROKER_CRN, URL-encoded)")
@click.argument("path", required=False)
def catalog_export(fmt: str, locations: str, broker_name: str, broker_guid: str, path: str | None) -> None:
    """Write the catalog as OSB JSON, or as the IBM Global Catalog entries Partner Center needs."""
    from urllib.parse import quote

    from broker.services.catalog_export import ibm_global_catalog

    if fmt == "ibm-global-catalog" and not broker_guid:
        crn = (os.environ.get("DRBROKER_BROKER_CRN") or "").strip()
        if not crn:
            raise click.UsageError("--format ibm-global-catalog needs --broker-guid (the broker's URL-encoded "
                                   "CRN from Partner Center) or DRBROKER_BROKER_CRN")
        # Partner Center shows the CRN URL-encoded (crn%3Av1%3A...); an already encoded one is kept.
        broker_guid = crn if "%" in crn else quote(crn, safe="")
    try:
        cat = load_catalog(path or Settings.from_env().catalog_path)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    if fmt == "osb":
        doc: object = cat.document
    else:
        doc = ibm_global_catalog(cat, locations=[x.strip() for x in locations.split(",") if x.strip()],
                                 broker_name=broker_name, broker_guid=broker_guid)
    json.dump(doc, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


@main.group()
def instances() -> None:
    """The broker's instances (its own state, read from the database)."""


def _runtime_for_cli():
    from broker.app import build_runtime

    try:
        return build_runtime(Settings.from_env())
    except CatalogError as exc:
        raise click.ClickException(f"catalog: {exc}") from None


@instances.command("list")
@click.option("--all", "include_gone", is_flag=True, help="include deprovisioned instances (tombstones)")
@click.option("--json", "as_json", is_flag=True)
def instances_list(include_gone: bool, as_json: bool) -> None:
    """Every instance with its plan, state and DR state."""
    rt = _runtime_for_cli()
    with rt.store.read() as tx:
        rows = tx.list_instances(include_gone=include_gone)
    out = []
    for inst in rows:
        plan = rt.catalog.plan(inst.plan_id)
        out.append({"id": inst.id, "plan": plan.name if plan else inst.plan_id, "state": inst.state.value,
                    "enabled": inst.enabled, "active_site": (inst.dr_state or {}).get("active_site"),
                    "account_id": inst.account_id})
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    if not out:
        click.echo("no instances")
        return
    click.echo(f"{'INSTANCE':40} {'PLAN':18} {'STATE':15} {'ENABLED':8} ACTIVE SITE")
    for row in out:
        click.echo(f"{row['id'][:40]:40} {row['plan']:18} {row['state']:15} {row['enabled']!s:8} "
                   f"{row['active_site'] or '-'}")


@instances.command("show")
@click.argument("instance_id")
@click.option("--json", "as_json", is_flag=True)
def instances_show(instance_id: str, as_json: bool) -> None:
    """One instance: parameters (secrets left out), live DR attributes, bindings, recent operations."""
    from broker.services.validation import redact

    rt = _runtime_for_cli()
    with rt.store.read() as tx:
        inst = tx.get_instance(instance_id)
        if inst is None:
            raise click.ClickException(f"instance {instance_id} does not exist")
        bindings = tx.list_bindings(instance_id, include_gone=True)
        ops = tx.list_operations(instance_id=instance_id, limit=10)
    plan = rt.catalog.plan(inst.plan_id)
    doc = {"id": inst.id, "plan": plan.name if plan else inst.plan_id, "state": inst.state.value,
           "enabled": inst.enabled,
           "parameters": redact(inst.parameters, plan.parameter_schema("provision") if plan else None),
           "attributes": rt.service.dr_attributes(inst),
           "bindings": [{"id": b.id, "state": b.state.value} for b in bindings],
           "operations": [{"id": o.id, "type": o.type.value, "state": o.state.value, "description": o.description}
                          for o in ops]}
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    click.echo(f"{doc['id']}  plan {doc['plan']}  state {doc['state']}  enabled {doc['enabled']}")
    for key, value in sorted(doc["attributes"].items()):
        click.echo(f"  {key}: {value}")
    click.echo("bindings: " + (", ".join(f"{b['id']} ({b['state']})" for b in doc["bindings"]) or "none"))
    for op in doc["operations"]:
        click.echo(f"  {op['type']:12} {op['state']:12} {op['description'] or ''}")


@main.group()
def dashboard() -> None:
    """The DR dashboard."""


@dashboard.command("link")
@click.argument("instance_id")
@click.option("--ttl", type=int, help="seconds the link stays valid (default 3600, or the maximum if lower; at most "
              "DRBROKER_DASHBOARD_LINK_MAX_SECONDS)")
@click.option("--base-url", help="the broker's external URL (default DRBROKER_PUBLIC_URL)")
def dashboard_link(instance_id: str, ttl: int | None, base_url: str | None) -> None:
    """Print a signed link that opens one instance's dashboard until it expires."""
    from broker.security.filemodes import InsecureFileError
    from broker.security.links import DashboardLinks, LinkLifetimeError

    settings = Settings.from_env()
    base = base_url or settings.public_url
    if not base:
        raise click.UsageError("--base-url (or DRBROKER_PUBLIC_URL) is required")
    try:
        links = DashboardLinks.from_settings(settings)
        click.echo(links.url(base, instance_id, ttl if ttl is not None else min(3600, links.max_seconds)))
    except LinkLifetimeError as exc:
        raise click.UsageError(str(exc)) from None
    except InsecureFileError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # e.g. a read-only root and no writable DRBROKER_STATE_DIR
        raise click.ClickException(f"cannot keep the link key in {settings.state_dir}: {exc.strerror}; set "
                                   "DRBROKER_DASHBOARD_SECRET (the same for every replica) or DRBROKER_STATE_DIR") \
            from None


@main.group()
def sim() -> None:
    """The simulated PowerVS cloud."""


@sim.command("inventory")
@click.option("--json", "as_json", is_flag=True, help="JSON output")
@click.option("--all", "include_seed", is_flag=True,
              help="also the customer's own resources (workspaces, pools, volumes, VMs) the broker never owns")
def sim_inventory(as_json: bool, include_seed: bool) -> None:
    """List every simulated resource and the instance that owns it."""
    from broker.orchestrators.simulated.cloud import SimulatedCloud
    from broker.store import db as store_db

    settings = Settings.from_env()
    engine = store_db.make_engine(settings.database_url)
    if not store_db.has_schema(engine):
        raise click.ClickException("no broker database here (set DRBROKER_DATABASE_URL)")
    items = SimulatedCloud(engine).inventory(include_seed=include_seed)
    if as_json:
        json.dump([{"id": r.id, "kind": r.kind, "name": r.name, "instance_id": r.instance_id,
                    "binding_id": r.binding_id, "state": r.state} for r in items], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    if not items:
        click.echo("no simulated resources")
        return
    for r in items:
        owner = (r.instance_id or "(customer)") + (f" / {r.binding_id}" if r.binding_id else "")
        click.echo(f"{r.kind:24} {r.state:22} {r.id:48} {owner}")


def _register_fake_ibmcloud() -> None:
    from broker.fakecloud.cli import fake_ibmcloud

    main.add_command(fake_ibmcloud)


_register_fake_ibmcloud()


def _register_security_commands() -> None:
    from broker.cli_security import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_register_security_commands()


def _add_operations() -> None:
    from broker.cli_operations import operations

    main.add_command(operations)


_add_operations()


def _register_client() -> None:
    from broker.client.commands import client

    main.add_command(client)


_register_client()


def _register_jobs() -> None:
    from broker.cli_jobs import jobs

    main.add_command(jobs)


_register_jobs()


def _register_snapshot() -> None:
    from broker.cli_snapshot import snapshot

    main.add_command(snapshot)


_register_snapshot()


def _register_events() -> None:
    from broker.cli_events import events

    main.add_command(events)


_register_events()


def _register_report() -> None:
    from broker.cli_report import report

    main.add_command(report)


_register_report()


def _register_notifications() -> None:
    from broker.cli_notifications import notifications

    main.add_command(notifications)


_register_notifications()


if __name__ == "__main__":  # pragma: no cover
    main()
