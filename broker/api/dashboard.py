"""The DR dashboard behind each instance's ``dashboard_url``: a server-rendered page (no front-end build).

It shows both sites and which is active, the replication group's state, the achieved RPO against its target
over time (an inline SVG of the sampler's history), the last rehearsal and its RTO, the bindings, and the
operation history with step progress. Access: the broker's own authentication, or a signed, expiring link
(``drbroker dashboard link INSTANCE_ID``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import time
from typing import Any

from flask import Blueprint, Response, current_app, render_template_string, request

from broker.api import parsing as p
from broker.domain.errors import NotFound
from broker.domain.sites import parse_workspace_crn
from broker.security.links import load_or_create_secret, verify
from broker.workflows.rpo_sampler import history

bp = Blueprint("dashboard", __name__)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>DR dashboard: {{ inst.id }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#161616;background:#f4f4f4}
h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.2em 0 .4em}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:1em}
.card{background:#fff;border:1px solid #e0e0e0;padding:1em}
.card.active{border:2px solid #0f62fe}
.ok{color:#198038;font-weight:600}.bad{color:#da1e28;font-weight:600}
table{border-collapse:collapse;width:100%;background:#fff}td,th{padding:.35em .6em;border-bottom:1px solid #e0e0e0;
text-align:left;font-size:.92em}code{font-size:.85em;word-break:break-all}
</style></head>
<body>
<h1>Disaster recovery: {{ plan }}</h1>
<div id="instance">Instance <code>{{ inst.id }}</code> &middot; state <b id="state">{{ inst.state.value }}</b>
{% if not inst.enabled %}&middot; <span class="bad">disabled by the platform (replication keeps running)</span>{% endif %}</div>

<h2>Sites</h2>
<div class="grid">
{% for site in sites %}
<div class="card{% if site.active %} active{% endif %}" id="site-{{ site.role }}">
<b>{{ site.role|capitalize }}</b>{% if site.active %} &middot; <span class="ok">active</span>{% endif %}<br>
zone <b>{{ site.zone }}</b><br><code>{{ site.crn }}</code></div>
{% endfor %}
</div>

<h2>Replication</h2>
<div class="grid">
<div class="card" id="replication">state <b id="replication-state">{{ attrs.get("replication_state", "unknown") }}</b><br>
primary role {{ attrs.get("replication_primary_role", "-") }}<br>
consistency group <code>{{ attrs.get("consistency_group") or "-" }}</code><br>
cycle period {{ attrs.get("cycle_period_seconds", "-") }} s</div>
<div class="card" id="rpo">achieved RPO <b id="rpo-achieved">{{ fmt_s(attrs.get("achieved_rpo_seconds")) }}</b>
against target <b id="rpo-target">{{ fmt_s(attrs.get("rpo_target_seconds")) }}</b>:
{% if attrs.get("rpo_met") is none %}-{% elif attrs.get("rpo_met") %}<span class="ok">met</span>
{% else %}<span class="bad">missed</span>{% endif %}<br>
last freeze {{ attrs.get("last_freeze_time") or "-" }}</div>
<div class="card" id="rehearsal">last rehearsal <b id="rehearsal-at">{{ attrs.get("last_rehearsal_at") or "never" }}</b><br>
measured RTO <b id="rehearsal-rto">{{ fmt_s(attrs.get("last_rehearsal_rto_seconds")) }}</b><br>
test failover active: {{ "yes" if attrs.get("test_failover_active") else "no" }}</div>
</div>

<h2>Achieved RPO over the last 24 hours</h2>
<div class="card">{{ chart|safe }}</div>

<h2>Bindings</h2>
<table id="bindings"><tr><th>Binding</th><th>State</th><th>Created</th></tr>
{% for b in bindings %}<tr><td><code>{{ b.id }}</code></td><td>{{ b.state.value }}</td><td>{{ when(b.created_at) }}</td></tr>
{% else %}<tr><td colspan="3">none</td></tr>{% endfor %}</table>

<h2>Operations</h2>
<table id="operations"><tr><th>When</th><th>Type</th><th>State</th><th>Progress</th><th>Description</th></tr>
{% for op in ops %}<tr><td>{{ when(op.created_at) }}</td>
<td>{{ op.type.value }}{% if op.payload.get("dr_action") %} ({{ op.payload["dr_action"]["type"] }}){% endif %}</td>
<td>{{ op.state.value }}</td>
<td><progress max="{{ op.step_total or 1 }}" value="{{ op.step_index }}"></progress> {{ op.step_index }}/{{ op.step_total }}</td>
<td>{{ op.description or "" }}</td></tr>{% endfor %}
</table>
</body></html>"""


def _style_hash(page: str) -> str:
    """The CSP source for the page's one inline ``<style>`` block (static text, so a hash, not a nonce)."""
    match = re.search(r"<style>(.*?)</style>", page, re.S)
    assert match is not None
    return "'sha256-" + base64.b64encode(hashlib.sha256(match.group(1).encode()).digest()).decode() + "'"


# The page runs no script at all; its only inline content is the style block (allowed by hash) and the inline
# SVG chart (markup, not a fetch). The favicon is a data: URL.
CONTENT_SECURITY_POLICY = (f"default-src 'none'; style-src {_style_hash(_PAGE)}; img-src data:; "
                           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


def _fmt_seconds(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    if value < 10:
        return f"{value:.1f} s"
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def _chart(samples: list[tuple[float, float | None, str]], target: float | None, now: float) -> str:
    """An inline SVG: achieved RPO samples (line) and the target (dashed)."""
    width, height, pad = 720, 180, 30
    start = now - 86400
    points = [(t, r) for t, r, _ in samples if r is not None]
    top = max([r for _, r in points] + [target or 0, 60.0]) * 1.1

    def x(t: float) -> float:
        return pad + (t - start) / 86400 * (width - 2 * pad)

    def y(v: float) -> float:
        return height - pad - v / top * (height - 2 * pad)

    parts = [f'<svg id="rpo-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="100%" role="img" aria-label="achieved RPO over 24 hours">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#8d8d8d"/>',
             f'<text x="{pad}" y="{height - 8}" font-size="11">24 h ago</text>',
             f'<text x="{width - pad - 20}" y="{height - 8}" font-size="11">now</text>']
    if target:
        parts.append(f'<line id="rpo-target-line" x1="{pad}" y1="{y(target):.1f}" x2="{width - pad}" '
                     f'y2="{y(target):.1f}" stroke="#da1e28" stroke-dasharray="6 4"/>'
                     f'<text x="{pad + 4}" y="{y(target) - 4:.1f}" font-size="11" fill="#da1e28">target '
                     f'{_fmt_seconds(target)}</text>')
    if points:
        coords = " ".join(f"{x(t):.1f},{y(r):.1f}" for t, r in points)
        parts.append(f'<polyline id="rpo-line" fill="none" stroke="#0f62fe" stroke-width="2" points="{coords}"/>')
    else:
        parts.append(f'<text x="{width / 2 - 60}" y="{height / 2}" font-size="12">no samples yet</text>')
    parts.append("</svg>")
    return "".join(parts)


def _secret() -> bytes:
    runtime = current_app.extensions["drbroker"]
    key = "drbroker.dashboard_secret"
    if key not in current_app.extensions:
        current_app.extensions[key] = load_or_create_secret(
            runtime.settings.state_dir, getattr(runtime.settings, "dashboard_secret", None))
    return current_app.extensions[key]


@bp.before_request
def _before() -> None:
    raw = (request.view_args or {}).get("instance_id")
    if raw is not None and "sig" in request.args:
        iid = p.decode_id(raw, "instance_id")
        if verify(_secret(), iid, request.args.get("exp"), request.args.get("sig")):
            return
    current_app.extensions["drbroker"].authenticate()


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
    with runtime.store.read() as tx:
        inst = tx.get_instance(iid)
        if inst is None:
            raise NotFound(f"instance {iid} does not exist")
        ops = tx.list_operations(instance_id=iid, limit=25)
        bindings = tx.list_bindings(iid)
    plan = runtime.catalog.plan(inst.plan_id)
    attrs = runtime.service.dr_attributes(inst)
    now = time.time()
    sites = []
    for role in ("primary", "secondary"):
        crn = inst.parameters.get(f"{role}_workspace_crn", "")
        ref = parse_workspace_crn(crn)
        sites.append({"role": role, "crn": crn, "zone": ref.zone if ref else "-",
                      "active": attrs.get("active_site", "primary") == role})
    chart = _chart(history(runtime.store, iid, now - 86400), attrs.get("rpo_target_seconds"), now)
    return render_template_string(
        _PAGE, inst=inst, ops=ops, bindings=bindings, plan=plan.name if plan else inst.plan_id, attrs=attrs,
        sites=sites, chart=chart, fmt_s=_fmt_seconds,
        when=lambda t: dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
