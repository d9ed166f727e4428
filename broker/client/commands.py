"""``drbroker client ...``: the OSB client on the command line.

Exit codes say what happened: 0 done (or accepted without --wait), 1 the operation failed, 2 bad usage,
3 the broker refused the request (4xx, a wrong password included), 4 the broker or network failed (5xx,
unreachable), 5 --wait timed out. With ``--json`` every failure is one JSON object on stdout
(``{"error", "description", "status"}``), with the same exit codes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from broker.client.options import Options, command_options, group_options
from broker.client.osb import ClientError, NotInCatalog, OSBClient, Response
from broker.client.records import Records
from broker.client.render import (
    EXIT_BROKER,
    EXIT_FAILED,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    action_in,
    client_error,
    one_line,
    status_line,
)

DR_ACTIONS = ["test_failover", "cleanup_test", "failover", "failback", "resync", "rehearsal"]
_JSON = "drbroker.client.json"


def _json_wanted(ctx: click.Context) -> bool:
    return bool(ctx.meta.get(_JSON))


def _print_error(ctx: click.Context, doc: dict[str, Any], code: int) -> NoReturn:
    if _json_wanted(ctx):
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        click.echo(one_line(doc), err=True)
    ctx.exit(code)
    raise AssertionError("unreachable")  # ctx.exit raises


class ClientGroup(click.Group):
    """Click's own usage errors (a missing option, a bad choice) become JSON too when --json was given."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_JSON] = "--json" in (args[:args.index("--")] if "--" in args else args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            self._usage(ctx, exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            self._usage(ctx, exc)

    @staticmethod
    def _usage(ctx: click.Context, exc: click.UsageError) -> NoReturn:
        if not _json_wanted(ctx):
            raise exc
        _print_error(ctx, {"error": "UsageError", "description": exc.format_message(), "status": None},
                     EXIT_USAGE)


class Session:
    """One command's options, the HTTP client they make (on first use) and this machine's record."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.as_json = options.as_json
        self._client: OSBClient | None = None

    @property
    def client(self) -> OSBClient:
        if self._client is None:
            self._client = self.options.build_client()
        return self._client

    @property
    def records(self) -> Records:
        return Records(self.client.url)

    def emit(self, data: Any, text: str) -> None:
        click.echo(json.dumps(data, indent=2, sort_keys=True) if self.as_json else text)

    def resolve(self, service: str | None, plan: str | None) -> tuple[str, str | None]:
        try:
            return self.client.resolve(service, plan)
        except NotInCatalog as exc:
            raise click.UsageError(str(exc)) from None

    def names(self, service_id: str | None, plan_id: str | None) -> tuple[str, str]:
        """Catalog names for display; the id itself where the catalog lacks it."""
        service, plan = self.client.names(service_id, plan_id)
        return service or str(service_id), plan or str(plan_id)

    def current(self, instance_id: str) -> dict[str, Any]:
        return self.client.instance(instance_id).body or {}

    def service_and_plan(self, instance_id: str, service: str | None, plan: str | None) -> tuple[str, str]:
        """The given service and plan (names or ids), or else the instance's own."""
        if plan:
            sid, pid = self.resolve(service, plan)
            assert pid is not None
            return sid, pid
        current = self.current(instance_id)
        return current["service_id"], current["plan_id"]

    # the answer to a change, and --wait ----------------------------------------------------------------
    def finish(self, action: str, instance_id: str, resp: Response, wait: bool, timeout: float,
               binding_id: str | None = None) -> dict[str, Any]:
        """Print what happened to the request (with ``wait``, follow its operation to the end first)."""
        body = resp.body if isinstance(resp.body, dict) else {}
        operation = body.get("operation")
        if resp.status != 202:  # done at once (200: it was already so)
            self.emit({"status": resp.status, "action": action, **body}, f"{action}: succeeded")
            return {"state": "succeeded"}
        if not wait:
            follow = f"; follow it: drbroker client last-operation {instance_id}"
            self.emit({"status": resp.status, "action": action, **body},
                      f"{action}: accepted" + (f" (operation {operation}){follow}" if operation else follow))
            return {"state": "in progress"}
        final = self.client.wait(instance_id, operation=operation, binding_id=binding_id, timeout=timeout,
                                 on_progress=None if self.as_json else _progress(action))
        if final.get("state") != "succeeded":
            doc = {"error": "OperationFailed", "status": 200, "action": action, "instance_id": instance_id,
                   "operation": operation, **final,
                   "description": final.get("description") or f"{action} {final.get('state')}"}
            if self.as_json:
                click.echo(json.dumps(doc, indent=2, sort_keys=True))
            else:
                click.echo(status_line(action, final))
            sys.exit(EXIT_FAILED)
        self.emit({"action": action, "instance_id": instance_id, "operation": operation, **final},
                  status_line(action, final))
        return final


def _progress(action: str) -> Callable[[dict[str, Any]], None]:
    """One stderr line per change while the operation runs; the result itself is printed once, on stdout."""
    last = [""]

    def show(answer: dict[str, Any]) -> None:
        if answer.get("state") != "in progress":
            return
        line = status_line(action, answer)
        if line != last[0]:
            click.echo(line, err=True)
            last[0] = line
    return show


def with_session(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The shared options, merged into a ``Session``; request failures printed (or as JSON) with their exit code."""

    @command_options
    def run(options: Options, *args: Any, **kwargs: Any) -> Any:
        session = Session(options)
        ctx = click.get_current_context()
        try:
            return fn(session, *args, **kwargs)
        except ClientError as exc:
            doc, code = client_error(exc, token=bool(options.token))
            _print_error(ctx, doc, code)
        except TimeoutError as exc:
            _print_error(ctx, {"error": "Timeout", "description": str(exc), "status": None}, EXIT_TIMEOUT)

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def _load_json(value: str | None, what: str) -> Any:
    if value is None:
        return None
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text()
        except OSError as exc:
            raise click.UsageError(f"{what} {value}: cannot read the file: {exc.strerror or exc}") from None
    else:
        text = value
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.UsageError(f"{what}: not valid JSON ({exc})") from None


def _wait_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--timeout", default=3600.0, show_default=True, help="seconds --wait may take")(fn)
    return click.option("--wait", is_flag=True, help="follow the operation until it ends")(fn)


@click.group("client", cls=ClientGroup)
@group_options
@click.pass_context
def client(ctx: click.Context, **options: Any) -> None:
    """An OSB client for any broker (docs/client.md).

    Every option below is also accepted after the subcommand (there it wins). Exit codes: 0 ok, 1 operation
    failed, 2 usage, 3 refused (4xx, a wrong password included), 4 broker/network error, 5 --wait timed out.
    """
    ctx.obj = Options(**options)
    ctx.meta[_JSON] = ctx.meta.get(_JSON) or ctx.obj.as_json


@client.command()
@with_session
def catalog(s: Session) -> None:
    """Services and plans."""
    cat = s.client.catalog()
    lines = []
    for svc in s.client.services():
        lines.append(f"{svc.get('name')}  {svc.get('id')}")
        lines += [f"  {p.get('name', ''):20} {p.get('id')}  {p.get('description', '')}" for p in svc.get("plans", [])]
    s.emit(cat, "\n".join(lines))


@client.command("list")
@with_session
def list_instances(s: Session) -> None:
    """The instances this client created on this broker (a local record, checked with the broker).

    OSB has no endpoint listing a broker's instances; where the broker runs, `drbroker instances list` shows
    all of them, from its database."""
    records = s.records
    s.client.catalog()  # the names below, and a wrong password refused even when nothing is recorded
    rows = []
    for instance_id, entry in sorted(records.all().items()):
        try:
            last = s.client.last_operation(instance_id)
        except ClientError as exc:
            if exc.status != 404:
                raise
            last = Response(404, {}, {})
        if last.status in (404, 410):  # the broker no longer has it
            records.forget(instance_id)
            continue
        service_id, plan_id = entry.get("service_id"), entry.get("plan_id")
        try:
            body = s.current(instance_id)  # the plan as it is now (a 404 while it is being provisioned)
            service_id, plan_id = body.get("service_id", service_id), body.get("plan_id", plan_id)
        except ClientError as exc:
            if exc.status not in (404, 422):
                raise
        answer = last.body if isinstance(last.body, dict) else {}
        action = _name_action(records, instance_id, None, answer)
        service, plan = s.names(service_id, plan_id)
        rows.append({"instance_id": instance_id, "service": service, "service_id": service_id, "plan": plan,
                     "plan_id": plan_id, "last_operation": {"action": action, **answer},
                     "status_line": status_line(action, answer)})
    if not s.as_json:
        click.echo(f"instances created with drbroker client on {s.client.url} from this machine; every instance: "
                   "`drbroker instances list` where the broker runs", err=True)
    if not rows:
        s.emit([], f"no instances created with drbroker client on {s.client.url}")
        return
    width = max(len("INSTANCE"), *(len(r["instance_id"]) for r in rows))
    swidth = max(len("SERVICE"), *(len(r["service"]) for r in rows))
    pwidth = max(len("PLAN"), *(len(r["plan"]) for r in rows))
    lines = [f"{'INSTANCE':{width}}  {'SERVICE':{swidth}}  {'PLAN':{pwidth}}  LAST OPERATION"]
    lines += [f"{r['instance_id']:{width}}  {r['service']:{swidth}}  {r['plan']:{pwidth}}  {r['status_line']}"
              for r in rows]
    s.emit(rows, "\n".join(lines))


@client.command()
@click.argument("instance_id")
@click.option("--service", help="service name or id (default: the one service offering --plan)")
@click.option("--plan", required=True, help="plan name or id")
@click.option("-c", "--parameters", help="JSON or @file")
@click.option("--context", "context_json", help="context JSON (default: {\"platform\": \"drbroker-client\"})")
@_wait_options
@with_session
def provision(s: Session, instance_id: str, service: str | None, plan: str, parameters: str | None,
              context_json: str | None, wait: bool, timeout: float) -> None:
    """Create an instance."""
    params = _load_json(parameters, "-c") or {}
    context = _load_json(context_json, "--context")
    sid, pid = s.resolve(service, plan)
    assert pid is not None
    resp = s.client.provision(instance_id, sid, pid, params, context=context)
    s.records.remember(instance_id, service_id=sid, plan_id=pid)
    s.records.started(instance_id, (resp.body or {}).get("operation"), "provision")
    s.finish("provision", instance_id, resp, wait, timeout)


@client.command()
@click.argument("instance_id")
@click.option("--service", help="service name or id (default: the instance's)")
@click.option("--plan", help="new plan name or id")
@click.option("-c", "--parameters", help="JSON or @file")
@_wait_options
@with_session
def update(s: Session, instance_id: str, service: str | None, plan: str | None, parameters: str | None, wait: bool,
           timeout: float) -> None:
    """Change an instance's plan or parameters."""
    params = _load_json(parameters, "-c")
    if service:
        sid, pid = s.resolve(service, plan)
    else:
        sid = s.current(instance_id)["service_id"]
        pid = s.resolve(sid, plan)[1] if plan else None
    resp = s.client.update(instance_id, sid, plan_id=pid, parameters=params)
    s.records.started(instance_id, (resp.body or {}).get("operation"), "update")
    s.finish("update", instance_id, resp, wait, timeout)


@client.command("dr-action")
@click.argument("instance_id")
@click.option("--type", "kind", required=True, type=click.Choice(DR_ACTIONS))
@click.option("--mode", type=click.Choice(["planned", "unplanned"]), help="failover only")
@_wait_options
@with_session
def dr_action(s: Session, instance_id: str, kind: str, mode: str | None, wait: bool, timeout: float) -> None:
    """Run a DR day-2 action (an OSB update whose only parameter is dr_action)."""
    sid = s.current(instance_id)["service_id"]
    action: dict[str, Any] = {"type": kind}
    if mode:
        action["mode"] = mode
    resp = s.client.update(instance_id, sid, parameters={"dr_action": action})
    s.records.started(instance_id, (resp.body or {}).get("operation"), kind)
    s.finish(kind, instance_id, resp, wait, timeout)


@client.command()
@click.argument("instance_id")
@click.option("--service", help="service name or id (default: the instance's)")
@click.option("--plan", help="plan name or id (default: the instance's)")
@_wait_options
@with_session
def deprovision(s: Session, instance_id: str, service: str | None, plan: str | None, wait: bool,
                timeout: float) -> None:
    """Delete an instance."""
    sid, pid = s.service_and_plan(instance_id, service, plan)
    try:
        resp = s.client.deprovision(instance_id, sid, pid)
    except ClientError as exc:
        if exc.status == 410:  # already gone
            s.records.forget(instance_id)
        raise
    s.records.started(instance_id, (resp.body or {}).get("operation"), "deprovision")
    final = s.finish("deprovision", instance_id, resp, wait, timeout)
    if final.get("state") == "succeeded":
        s.records.forget(instance_id)


@client.command()
@click.argument("instance_id")
@with_session
def instance(s: Session, instance_id: str) -> None:
    """Fetch an instance: service and plan, dashboard, parameters, live DR attributes."""
    body = s.current(instance_id)
    service, plan = s.names(body.get("service_id"), body.get("plan_id"))
    attrs = (body.get("metadata") or {}).get("attributes") or {}
    lines = [f"instance: {instance_id}", f"service: {service}", f"plan: {plan}"]
    if attrs.get("protection_status"):
        # the broker's verdict first (what an SRE needs in an outage), then what to do about it
        lines.append(f"protection: {attrs['protection_status']}"
                     + (f" ({attrs['protection_reason']})" if attrs.get("protection_reason") else ""))
        if attrs.get("next_step"):
            lines.append(f"next step: {attrs['next_step']}")
    lines.append(f"dashboard: {body.get('dashboard_url') or '-'}")
    shown = {"protection_status", "protection_reason", "next_step", "recent_events"}
    lines += [f"{k}: {v}" for k, v in sorted(attrs.items()) if k not in shown]
    # the broker's DR event log, newest first (docs/events.md)
    lines += ["recent events:"] + [f"  {e.get('at')}  {e.get('type')}  {e.get('summary')}"
                                   for e in attrs.get("recent_events") or []] if attrs.get("recent_events") else []
    s.emit({**body, "service_name": service, "plan_name": plan}, "\n".join(lines))


def _name_action(records: Records, instance_id: str, operation: str | None, answer: dict[str, Any]) -> str:
    """What to call an operation: what the broker's description says, made precise by what this client
    recorded it started ("update: queued" on a test_failover it started is a test_failover)."""
    named = action_in(str(answer.get("description") or ""))
    recorded = records.action_of(instance_id, operation)
    if recorded and (named is None or named == recorded or (named == "update" and recorded in DR_ACTIONS)):
        return recorded
    return named or recorded or "operation"


@client.command("last-operation")
@click.argument("instance_id")
@click.option("--binding", "binding_id")
@click.option("--operation")
@with_session
def last_operation(s: Session, instance_id: str, binding_id: str | None, operation: str | None) -> None:
    """The state of the instance's (or binding's) last operation."""
    resp = s.client.last_operation(instance_id, binding_id, operation)
    body = resp.body if isinstance(resp.body, dict) else {}
    if resp.status == 410:
        body = {"state": "succeeded", "description": "gone", **body}
    action = _name_action(s.records, instance_id, operation, body) if binding_id is None else (
        action_in(str(body.get("description") or "")) or "binding operation")
    s.emit({"action": action, **body}, status_line(action, body))


@client.command()
@click.argument("instance_id")
@click.argument("binding_id")
@click.option("--service", help="service name or id (default: the instance's)")
@click.option("--plan", help="plan name or id (default: the instance's)")
@click.option("-c", "--parameters", help="JSON or @file")
@click.option("--serviceid-crn", help="bind this IAM service ID instead of creating one")
@with_session
def bind(s: Session, instance_id: str, binding_id: str, service: str | None, plan: str | None,
         parameters: str | None, serviceid_crn: str | None) -> None:
    """Create a binding and print its credentials (JSON)."""
    params = _load_json(parameters, "-c")
    sid, pid = s.service_and_plan(instance_id, service, plan)
    resp = s.client.bind(instance_id, binding_id, sid, pid, params,
                         {"serviceid_crn": serviceid_crn} if serviceid_crn else None)
    click.echo(json.dumps(resp.body, indent=2, sort_keys=True))


@client.command()
@click.argument("instance_id")
@click.argument("binding_id")
@click.option("--service", help="service name or id (default: the instance's)")
@click.option("--plan", help="plan name or id (default: the instance's)")
@with_session
def unbind(s: Session, instance_id: str, binding_id: str, service: str | None, plan: str | None) -> None:
    """Delete a binding."""
    sid, pid = s.service_and_plan(instance_id, service, plan)
    resp = s.client.unbind(instance_id, binding_id, sid, pid)
    s.emit({"status": resp.status, "action": "unbind"}, "unbind: succeeded")


__all__ = ["EXIT_BROKER", "EXIT_FAILED", "EXIT_REFUSED", "EXIT_TIMEOUT", "EXIT_USAGE", "client"]
