"""The DR dashboard behind each instance's ``dashboard_url``: a server-rendered page (no front-end build).

At the top, the protection status (``broker.services.protection``, the one fetch instance returns) as a
coloured banner that says what to do next, with the time the page was made and its refresh period; then the
sites, replication and the achieved RPO (or since when it is not replicating), the orchestrator's health, the
protected volumes, the operation history with each move's measured RTO, and the RPO chart
(``dashboard_chart``); the bindings and workspace CRNs below.

Access: the broker's own authentication, or a signed, expiring link (the ``dashboard_url`` the platform gets,
or ``drbroker dashboard link INSTANCE_ID``). A correctly signed link past its expiry answers a page that says
when it expired and how to get a new one; any other bad link is refused without the basic-auth challenge a
customer could not answer. The page runs no script: it refreshes itself with a meta refresh.
"""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from flask.blueprints import BlueprintSetupState

from broker.api import dashboard_view as view
from broker.api import parsing as p
from broker.api.dashboard_chart import render as render_chart
from broker.domain.errors import NotFound
from broker.reports.render_html import CSS as REPORT_CSS
from broker.security.filemodes import InsecureFileError
from broker.security.links import KEY_FILE, DashboardLinks, LinkCheck, LinkLifetimeError
from broker.services.protection import iso, when
from broker.workflows.rpo_sampler import history

bp = Blueprint("dashboard", __name__, template_folder="templates")

REFRESH_SECONDS = 30
HISTORY_SECONDS = 86400
# The pages' one inline style block is this file, verbatim: the CSP admits it by its hash.
CSS = (Path(__file__).with_name("static") / "dashboard.css").read_text(encoding="utf-8")


def _style_hash(css: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"


# No script at all: the only inline content is the style block (allowed by hash) and the inline SVG chart
# (markup, not a fetch); the page refreshes through <meta http-equiv="refresh">, which CSP does not govern.
# The report page (broker.api.dashboard_report) has a style block of its own, admitted by its hash too.
CONTENT_SECURITY_POLICY = (f"default-src 'none'; style-src {_style_hash(CSS)} {_style_hash(REPORT_CSS)}; img-src data:; "
                           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


@bp.record_once
def _install_links(state: BlueprintSetupState) -> None:
    """The service signs every dashboard_url it hands out with the links this dashboard accepts."""
    runtime = state.app.extensions.get("drbroker")
    if runtime is None or runtime.service.dashboard_links is not None:
        return
    try:
        links = DashboardLinks.from_settings(runtime.settings)
        if (links.state_dir / KEY_FILE).exists():
            # an unreadable or group-readable key stops start-up in one line, not each provision with a 500
            links.secret()
    except (LinkLifetimeError, InsecureFileError) as exc:
        raise SystemExit(str(exc)) from None
    runtime.service.dashboard_links = links


def _links() -> DashboardLinks:
    runtime = current_app.extensions["drbroker"]
    if runtime.service.dashboard_links is None:
        runtime.service.dashboard_links = DashboardLinks.from_settings(runtime.settings)
    return runtime.service.dashboard_links


def _now() -> float:
    runtime = current_app.extensions["drbroker"]
    return float(getattr(runtime.service, "clock", time.time)())


def _refused(instance_id: str, verdict: LinkCheck) -> Response:
    """403 for a link that does not open the page: expired (say when, and how to get a new one) or invalid.
    HTML for a browser, the OSB error body for a client that asks for JSON."""
    links = _links()
    expired = verdict is LinkCheck.EXPIRED
    if expired:
        at = int(request.args.get("exp") or 0)
        title = "This link has expired"
        message = (f"it opened this dashboard until {view.stamp(at)} (a dashboard link lives at most "
                   f"{view.duration_text(links.max_seconds)}).")
        error, field = "LinkExpired", "exp"
    else:
        title = "This link is not valid"
        message = "it was not signed by this broker for this instance, or it was changed."
        error, field = "LinkInvalid", "sig"
    next_step = ("Get a new link: open the instance's dashboard again from your platform's console (the broker "
                 "gives the platform a fresh link whenever it fetches the instance), or ask the broker's operator "
                 f"to run `drbroker dashboard link {instance_id}`.")
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "application/json":
        response = jsonify({"error": error, "description": f"{field}: {title.lower()}: {message} {next_step}"})
    else:
        response = Response(render_template("dashboard/link.html", css=CSS, instance_id=instance_id, title=title,
                                            message=message, next=next_step, expired=expired), mimetype="text/html")
    response.status_code = 403
    return response


@bp.before_request
def _before() -> Response | None:
    raw = (request.view_args or {}).get("instance_id")
    if raw is not None and "sig" in request.args:
        iid = p.decode_id(raw, "instance_id")
        verdict = _links().check(iid, request.args.get("exp"), request.args.get("sig"), now=_now())
        if verdict is LinkCheck.VALID:
            return None
        if not request.headers.get("Authorization"):
            return _refused(iid, verdict)
    current_app.extensions["drbroker"].authenticate()
    return None


@bp.after_request
def _security_headers(response: Response) -> Response:
    """Every dashboard answer, its refusals and error pages included: no framing, no sniffing, no caching (a
    signed link's page shows an instance's state), no referrer (the link's signature is in its query)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


@bp.get("/dashboard/instances/<instance_id>")
def instance_page(instance_id: str) -> str:
    runtime = current_app.extensions["drbroker"]
    iid = p.decode_id(instance_id, "instance_id")
    now = _now()
    with runtime.store.read() as tx:
        inst = tx.get_instance(iid)
        if inst is None:
            raise NotFound(f"instance {iid} does not exist")
        ops = tx.list_operations(instance_id=iid, limit=25)
        bindings = tx.list_bindings(iid)
        steps = {op.id: tx.steps(op.id) for op in view.moves(ops)}
    plan = runtime.catalog.plan(inst.plan_id)
    attrs, protection = runtime.service.dr_view(inst)
    samples = history(runtime.store, iid, now - HISTORY_SECONDS)
    rto_minutes = plan.features.get("rto_target_minutes") if plan else None
    rows = view.operation_rows(ops, steps, plan, now)
    context: dict[str, Any] = {
        "css": CSS, "inst": inst, "dr": inst.dr_state or {}, "attrs": attrs, "protection": protection, "now": now,
        "plan_name": plan.name if plan else inst.plan_id, "refresh_seconds": REFRESH_SECONDS,
        "sites": view.sites(inst.parameters, attrs.get("active_site", "primary")),
        "volumes": list(inst.parameters.get("protected_volumes") or []),
        "orch": view.orchestrator_health(plan, ops, steps, now), "backend": runtime.orchestrator.name,
        "ops": rows, "last_failed": view.last_failed(rows), "bindings": bindings,
        "rto_target": rto_minutes * 60 if rto_minutes else None,
        "report_url": report_href(iid, request.args.to_dict()),
        "chart": render_chart(samples, attrs.get("rpo_target_seconds"), now),
        "stamp": view.stamp, "iso": iso, "duration": view.duration_text,
        "when": lambda ts: when(ts, now), "clock": lambda ts: view.clock_text(ts, now),
    }
    return render_template("dashboard/instance.html", **context)


from broker.api.dashboard_report import report_href  # noqa: E402  (it adds its route to this blueprint)
