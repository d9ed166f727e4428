"""A report as CSV: one row per instance with the summary figures (columns in docs/reports.md). The totals,
the rehearsal lines and the failures themselves are in the JSON and HTML forms."""

from __future__ import annotations

import csv
import io
from typing import Any

from broker.reports.model import InstanceReport, Report
from broker.services.protection import iso

COLUMNS = (
    "instance_id", "account_id", "plan", "state", "protection_status", "period_since", "period_until",
    "rpo_covered_since", "rpo_target_seconds", "rpo_samples", "rpo_expected_samples", "rpo_within_target",
    "rpo_share_within_target", "rpo_breach_samples", "rpo_not_copying_samples", "rpo_breach_minutes",
    "rpo_worst_seconds", "rpo_worst_at", "rehearsals", "rehearsals_passed", "rehearsals_failed",
    "rehearsals_skipped", "rto_target_seconds", "rto_missed", "last_rehearsal_at", "moves", "failures",
    "open_risks",
)

_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value[:1] in _FORMULA:
        return "'" + value  # a spreadsheet would run it: ids and plan names are the platform's to choose
    return value


def row(report: Report, r: InstanceReport) -> dict[str, Any]:
    worst = r.rpo.worst
    values = {
        "instance_id": r.instance_id, "account_id": r.account_id, "plan": r.plan, "state": r.state,
        "protection_status": r.protection_status, "period_since": iso(report.period.since),
        "period_until": iso(report.period.until), "rpo_covered_since": iso(report.period.rpo_covered_since),
        "rpo_target_seconds": r.rpo.target_seconds, "rpo_samples": r.rpo.samples,
        "rpo_expected_samples": r.rpo.expected_samples, "rpo_within_target": r.rpo.within_target,
        "rpo_share_within_target": r.rpo.share_within_target, "rpo_breach_samples": r.rpo.breaches,
        "rpo_not_copying_samples": r.rpo.not_copying, "rpo_breach_minutes": r.rpo.breach_minutes,
        "rpo_worst_seconds": worst.achieved_rpo_seconds if worst else None,
        "rpo_worst_at": iso(worst.at) if worst else None, "rehearsals": len(r.rehearsals),
        "rehearsals_passed": r.rehearsal_count("passed"), "rehearsals_failed": r.rehearsal_count("failed"),
        "rehearsals_skipped": r.rehearsal_count("skipped"), "rto_target_seconds": r.rto_target_seconds,
        "rto_missed": r.rto_missed, "last_rehearsal_at": iso(r.last_rehearsal_at), "moves": len(r.moves),
        "failures": len(r.failures), "open_risks": ";".join(k.code for k in r.risks),
    }
    return {k: _cell(values[k]) for k in COLUMNS}


def render(report: Report) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in report.instances:
        writer.writerow(row(report, r))
    return out.getvalue()
