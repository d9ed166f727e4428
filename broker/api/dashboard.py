"""A small server-rendered status page per instance (the ``dashboard_url``), behind the broker's auth."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, current_app, render_template_string

from broker.api import parsing as p
from broker.domain.errors import NotFound

bp = Blueprint("dashboard", __name__)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>DR instance {{ inst.id }}</title>
<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .8em;text-align:left}</style></head>
<body><h1>Disaster recovery instance</h1>
<table>
<tr><th>Instance</th><td>{{ inst.id }}</td></tr>
<tr><th>Plan</th><td>{{ plan }}</td></tr>
<tr><th>State</th><td>{{ inst.state.value }}{% if not inst.enabled %} (disabled){% endif %}</td></tr>
<tr><th>Primary site</th><td>{{ inst.parameters.get("primary_workspace_crn", "") }}</td></tr>
<tr><th>Secondary site</th><td>{{ inst.parameters.get("secondary_workspace_crn", "") }}</td></tr>
<tr><th>Bindings</th><td>{{ bindings }}</td></tr>
</table>
<h2>Operations</h2>
<table><tr><th>When</th><th>Type</th><th>State</th><th>Description</th></tr>
{% for op in ops %}<tr><td>{{ when(op.created_at) }}</td><td>{{ op.type.value }}</td><td>{{ op.state.value }}</td>
<td>{{ op.description or "" }}</td></tr>{% endfor %}
</table></body></html>"""


@bp.before_request
def _before() -> None:
    current_app.extensions["drbroker"].authenticate()


@bp.get("/dashboard/instances/<instance_id>")
def instance_page(instance_id: str) -> str:
    runtime = current_app.extensions["drbroker"]
    iid = p.decode_id(instance_id, "instance_id")
    with runtime.store.read() as tx:
        inst = tx.get_instance(iid)
        if inst is None:
            raise NotFound(f"instance {iid} does not exist")
        ops = tx.list_operations(instance_id=iid, limit=20)
        bindings = len(tx.list_bindings(iid))
    plan = runtime.catalog.plan(inst.plan_id)
    return render_template_string(
        _PAGE, inst=inst, ops=ops, bindings=bindings, plan=plan.name if plan else inst.plan_id,
        when=lambda t: dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
