"""``drbroker client ...``: the OSB client on the command line.

Exit codes say what happened: 0 done (or accepted without --wait), 1 the operation failed, 2 bad usage,
3 the broker refused the request (4xx), 4 the broker or network failed (5xx, unreachable), 5 timed out.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml

from broker.client.osb import ClientError, OSBClient

EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_BROKER, EXIT_TIMEOUT = 1, 2, 3, 4, 5
_STEP = re.compile(r"step (\d+)/(\d+): (.*)")
DEFAULT_PROFILE = Path.home() / ".config" / "drbroker" / "client.yaml"


class Ctx:
    def __init__(self, client: OSBClient, as_json: bool) -> None:
        self.client = client
        self.as_json = as_json


def _load_json(value: str | None, what: str) -> Any:
    if value is None:
        return None
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.UsageError(f"{what}: not valid JSON ({exc})") from None


def _emit(ctx: Ctx, data: Any, text: str | None = None) -> None:
    if ctx.as_json or text is None:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(text)


def _fail(exc: Exception) -> None:
    if isinstance(exc, ClientError):
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_REFUSED if exc.status and 400 <= exc.status < 500 else EXIT_BROKER)
    if isinstance(exc, TimeoutError):
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_TIMEOUT)
    raise exc


def _wait(ctx: Ctx, instance_id: str, operation: str | None, timeout: float,
          binding_id: str | None = None) -> dict[str, Any]:
    if ctx.as_json or (not sys.stderr.isatty() and os.environ.get("DRBROKER_CLIENT_PROGRESS") != "always"):
        return ctx.client.wait(instance_id, operation=operation, binding_id=binding_id, timeout=timeout,
                               on_progress=None if ctx.as_json else _plain_progress())
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), transient=False) as bar:
        task = bar.add_task("waiting", total=None)

        def update(state: dict[str, Any]) -> None:
            m = _STEP.search(state.get("description") or "")
            if m:
                bar.update(task, completed=int(m.group(1)) - 1, total=int(m.group(2)), description=m.group(3))
            elif state.get("state") != "in progress":
                done = bar.tasks[0].total or 1
                bar.update(task, completed=done, total=done, description=state.get("state", ""))

        return ctx.client.wait(instance_id, operation=operation, binding_id=binding_id, timeout=timeout,
                               on_progress=update)


def _plain_progress():
    last = [""]

    def show(state: dict[str, Any]) -> None:
        line = f"{state.get('state')}: {state.get('description', '')}"
        if line != last[0]:
            click.echo(line, err=True)
            last[0] = line
    return show


def _finish(ctx: Ctx, instance_id: str, send: Callable[[], Any], wait: bool, timeout: float,
            binding_id: str | None = None) -> None:
    """Send the request, print the answer, and with ``wait`` follow its operation to the end."""
    try:
        resp = send()
    except ClientError as exc:
        _fail(exc)
        return
    body = resp.body or {}
    if not wait or resp.status != 202:
        _emit(ctx, {"status": resp.status, **body}, f"{resp.status}: {json.dumps(body, sort_keys=True)}")
        return
    try:
        final = _wait(ctx, instance_id, body.get("operation"), timeout, binding_id)
    except (ClientError, TimeoutError) as exc:
        _fail(exc)
        return
    _emit(ctx, final, f"{final.get('state')}: {final.get('description', '')}")
    if final.get("state") != "succeeded":
        sys.exit(EXIT_FAILED)


@click.group("client")
@click.option("--url", envvar="DRBROKER_CLIENT_URL", help="broker base URL")
@click.option("--user", envvar="DRBROKER_CLIENT_USER")
@click.option("--password", envvar="DRBROKER_CLIENT_PASSWORD")
@click.option("--token", envvar="DRBROKER_CLIENT_TOKEN", help="bearer token instead of basic auth")
@click.option("--profile", type=click.Path(dir_okay=False), envvar="DRBROKER_CLIENT_PROFILE",
              help=f"YAML with url/user/password/token (default {DEFAULT_PROFILE} if it exists)")
@click.option("--api-version", default="2.17", show_default=True)
@click.option("--insecure", is_flag=True, help="do not verify TLS certificates")
@click.option("--json", "as_json", is_flag=True, help="JSON output for scripts")
@click.pass_context
def client(ctx: click.Context, url: str | None, user: str | None, password: str | None, token: str | None,
           profile: str | None, api_version: str, insecure: bool, as_json: bool) -> None:
    """An OSB client for any broker. Exit codes: 0 ok, 1 operation failed, 2 usage, 3 refused (4xx),
    4 broker/network error, 5 timeout."""
    path = Path(profile) if profile else DEFAULT_PROFILE
    data: dict[str, Any] = {}
    if profile or path.exists():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise click.UsageError(f"--profile {path}: {exc}") from None
    url = url or data.get("url")
    if not url:
        raise click.UsageError("--url (or a profile with url) is required")
    ctx.obj = Ctx(OSBClient(url, user=user or data.get("user"), password=password or data.get("password"),
                            token=token or data.get("token"), api_version=api_version, verify=not insecure),
                  as_json)


def _ids(ctx: Ctx, service: str, plan: str | None) -> tuple[str, str | None]:
    try:
        return ctx.client.resolve(service, plan)
    except ClientError as exc:
        if exc.status is None and "not" in str(exc):
            raise click.UsageError(str(exc)) from None
        _fail(exc)
        raise


def _current(ctx: Ctx, instance_id: str) -> dict[str, Any]:
    try:
        return ctx.client.instance(instance_id).body
    except ClientError as exc:
        _fail(exc)
        raise


def _service_and_plan(ctx: Ctx, instance_id: str, service: str | None, plan: str | None) -> tuple[str, str]:
    """The given service and plan (names or ids), or else the instance's own."""
    if service and plan:
        sid, pid = _ids(ctx, service, plan)
        assert pid is not None
        return sid, pid
    current = _current(ctx, instance_id)
    return current["service_id"], current["plan_id"]


@client.command()
@click.pass_obj
def catalog(ctx: Ctx) -> None:
    """Services and plans."""
    try:
        cat = ctx.client.catalog()
    except ClientError as exc:
        _fail(exc)
        return
    lines = []
    for svc in cat.get("services", []):
        lines.append(f"{svc['name']}  {svc['id']}")
        lines += [f"  {p['name']:20} {p['id']}  {p.get('description', '')}" for p in svc.get("plans", [])]
    _emit(ctx, cat, "\n".join(lines))


_wait_opts = [
    click.option("--wait", is_flag=True, help="follow last_operation until it ends"),
    click.option("--timeout", default=3600.0, show_default=True, help="seconds --wait may take"),
]


def _with_wait(fn):
    for opt in reversed(_wait_opts):
        fn = opt(fn)
    return fn


@client.command()
@click.argument("instance_id")
@click.option("--service", required=True, help="service name or id")
@click.option("--plan", required=True, help="plan name or id")
@click.option("-c", "--parameters", help="JSON or @file")
@click.option("--context", "context_json", help="context JSON (default: {\"platform\": \"drbroker-client\"})")
@_with_wait
@click.pass_obj
def provision(ctx: Ctx, instance_id: str, service: str, plan: str, parameters: str | None,
              context_json: str | None, wait: bool, timeout: float) -> None:
    """Create an instance."""
    sid, pid = _ids(ctx, service, plan)
    assert pid is not None
    _finish(ctx, instance_id, lambda: ctx.client.provision(
        instance_id, sid, pid, _load_json(parameters, "-c") or {}, context=_load_json(context_json, "--context")),
        wait, timeout)


@client.command()
@click.argument("instance_id")
@click.option("--service", help="service name or id (default: the instance's)")
@click.option("--plan", help="new plan name or id")
@click.option("-c", "--parameters", help="JSON or @file")
@_with_wait
@click.pass_obj
def update(ctx: Ctx, instance_id: str, service: str | None, plan: str | None, parameters: str | None, wait: bool,
           timeout: float) -> None:
    """Change an instance's plan or parameters."""
    if service:
        sid, pid = _ids(ctx, service, plan)
    else:
        sid = _current(ctx, instance_id)["service_id"]
        pid = _ids(ctx, sid, plan)[1] if plan else None
    _finish(ctx, instance_id, lambda: ctx.client.update(
        instance_id, sid, plan_id=pid, parameters=_load_json(parameters, "-c")), wait, timeout)


@client.command("dr-action")
@click.argument("instance_id")
@click.option("--type", "kind", required=True,
              type=click.Choice(["test_failover", "cleanup_test", "failover", "failback", "resync"]))
@click.option("--mode", type=click.Choice(["planned", "unplanned"]))
@_with_wait
@click.pass_obj
def dr_action(ctx: Ctx, instance_id: str, kind: str, mode: str | None, wait: bool, timeout: float) -> None:
    """Run a DR day-2 action (an OSB update whose only parameter is dr_action)."""
    sid = _current(ctx, instance_id)["service_id"]
    action: dict[str, Any] = {"type": kind}
    if mode:
        action["mode"] = mode
    _finish(ctx, instance_id, lambda: ctx.client.update(instance_id, sid, parameters={"dr_action": action}),
            wait, timeout)


@client.command()
@click.argument("instance_id")
@click.option("--service", help="service name or id (default: the instance's)")
@click.option("--plan", help="plan name or id (default: the instance's)")
@_with_wait
@click.pass_obj
def deprovision(ctx: Ctx, instance_id: str, service: str | None, plan: str | None, wait: bool,
                timeout: float) -> None:
    """Delete an instance."""
    sid, pid = _service_and_plan(ctx, instance_id, service, plan)
    _finish(ctx, instance_id, lambda: ctx.client.deprovision(instance_id, sid, pid), wait, timeout)


@client.command()
@click.argument("instance_id")
@click.pass_obj
def instance(ctx: Ctx, instance_id: str) -> None:
    """Fetch an instance (plan, parameters, live DR attributes)."""
    body = _current(ctx, instance_id)
    attrs = (body.get("metadata") or {}).get("attributes") or {}
    lines = [f"plan: {body.get('plan_id')}", f"dashboard: {body.get('dashboard_url')}"]
    lines += [f"{k}: {v}" for k, v in sorted(attrs.items())]
    _emit(ctx, body, "\n".join(lines))


@client.command("last-operation")
@click.argument("instance_id")
@click.option("--binding", "binding_id")
@click.option("--operation")
@click.pass_obj
def last_operation(ctx: Ctx, instance_id: str, binding_id: str | None, operation: str | None) -> None:
    """The state of the instance's (or binding's) last operation."""
    try:
        resp = ctx.client.last_operation(instance_id, binding_id, operation)
    except ClientError as exc:
        _fail(exc)
        return
    body = resp.body or {}
    _emit(ctx, body, f"{body.get('state')}: {body.get('description', '')}")


@client.command()
@click.argument("instance_id")
@click.argument("binding_id")
@click.option("--service", help="service name or id (default: the instance's)")
@click.option("--plan", help="plan name or id (default: the instance's)")
@click.option("-c", "--parameters", help="JSON or @file")
@click.option("--serviceid-crn", help="bind this IAM service ID instead of creating one")
@click.pass_obj
def bind(ctx: Ctx, instance_id: str, binding_id: str, service: str | None, plan: str | None,
         parameters: str | None, serviceid_crn: str | None) -> None:
    """Create a binding and print its credentials."""
    sid, pid = _service_and_plan(ctx, instance_id, service, plan)
    try:
        resp = ctx.client.bind(instance_id, binding_id, sid, pid, _load_json(parameters, "-c"),
                               {"serviceid_crn": serviceid_crn} if serviceid_crn else None)
    except ClientError as exc:
        _fail(exc)
        return
    _emit(ctx, resp.body, json.dumps(resp.body, indent=2, sort_keys=True))


@client.command()
@click.argument("instance_id")
@click.argument("binding_id")
@click.option("--service", help="service name or id (default: the instance's)")
@click.option("--plan", help="plan name or id (default: the instance's)")
@click.pass_obj
def unbind(ctx: Ctx, instance_id: str, binding_id: str, service: str | None, plan: str | None) -> None:
    """Delete a binding."""
    sid, pid = _service_and_plan(ctx, instance_id, service, plan)
    try:
        resp = ctx.client.unbind(instance_id, binding_id, sid, pid)
    except ClientError as exc:
        _fail(exc)
        return
    _emit(ctx, {"status": resp.status}, f"{resp.status}: unbound")
