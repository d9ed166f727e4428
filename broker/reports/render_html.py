"""A report as a printable HTML page: no script, no outside resource, print CSS (A4, no page breaks inside an
instance). The same page is written by ``drbroker report --format html`` and served by the dashboard."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from broker.api.dashboard_view import duration_text as duration
from broker.reports.model import Report

_API = Path(__file__).resolve().parent.parent / "api"
CSS = (_API / "static" / "report.css").read_text(encoding="utf-8")
_ENV = Environment(loader=FileSystemLoader(str(_API / "templates" / "reports")),
                   autoescape=select_autoescape(default=True, default_for_string=True), trim_blocks=True,
                   lstrip_blocks=True)


def stamp(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.2f} %"


def render(report: Report, *, dashboard_url: str | None = None) -> str:
    """The page; ``dashboard_url`` (the dashboard serves it) adds a link back to the instance's dashboard."""
    return _ENV.get_template("report.html").render(
        r=report, css=CSS, stamp=stamp, duration=duration, percent=percent, dashboard_url=dashboard_url)
