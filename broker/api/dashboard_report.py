"""The dashboard's report page: ``GET /dashboard/instances/<id>/report?days=30`` (or ``since``/``until``;
``format=html|json|csv``), the printable DR report of one instance (``broker.reports``).

It is a route of the dashboard's blueprint, so it is opened exactly like the dashboard: the same signed link
(the signature covers the instance id and expiry, not the path: the dashboard's link opens its report too) or
the broker's own authentication, and it gets the same security headers.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from flask import Response, current_app, request

from broker.api import parsing as p
from broker.api.dashboard import _now, bp
from broker.domain.errors import BadRequest
from broker.reports import render_csv, render_html, render_json
from broker.reports.build import Scope, build_report, runtime_sources
from broker.reports.period import PeriodError, resolve

DEFAULT_DAYS = 30
_MIMETYPES = {"html": "text/html", "json": "application/json", "csv": "text/csv"}


def _signed(args: dict[str, str]) -> dict[str, str]:
    """The signed link's ``exp`` and ``sig`` of this request, to carry over to the next page."""
    return {k: args[k] for k in ("exp", "sig") if k in args}


def report_href(instance_id: str, args: dict[str, str], days: int = DEFAULT_DAYS) -> str:
    """The dashboard page's link to its report, relative to ``/dashboard/instances/<id>`` (``./`` keeps an id
    such as ``crn:v1:...`` from reading as a URL scheme)."""
    return f"./{quote(instance_id, safe='')}/report?" + urlencode({"days": days, **_signed(args)})


@bp.get("/dashboard/instances/<instance_id>/report")
def instance_report(instance_id: str) -> Response:
    runtime = current_app.extensions["drbroker"]
    iid = p.decode_id(instance_id, "instance_id")
    args = request.args.to_dict()
    fmt = args.get("format", "html")
    if fmt not in _MIMETYPES:
        raise BadRequest(f"format: must be one of {', '.join(_MIMETYPES)}, not {fmt!r}")
    now = _now()
    try:
        since, until = resolve(since=args.get("since"), days=args.get("days"), until=args.get("until"), now=now,
                               fields=("since", "days", "until"))
    except PeriodError as exc:
        raise BadRequest(str(exc)) from None
    report = build_report(runtime_sources(runtime), Scope("instance", iid), since, until, now=now)
    if fmt == "json":
        return Response(render_json.render(report), mimetype="application/json")
    if fmt == "csv":
        return Response(render_csv.render(report), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="dr-report.csv"'})
    back = f"../{quote(iid, safe='')}" + (f"?{urlencode(_signed(args))}" if _signed(args) else "")
    return Response(render_html.render(report, dashboard_url=back), mimetype="text/html")
