"""A report as JSON: the full structure, stable keys, times as ISO 8601 UTC (schema in docs/reports.md)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from broker.reports.model import SCHEMA, InstanceReport, Report
from broker.services.protection import iso

# Keys whose values are epoch seconds in the model and ISO 8601 strings in the output.
_TIME_KEYS = frozenset({"at", "since", "until", "rpo_covered_since", "started_at", "finished_at",
                        "first_sample_at", "last_sample_at", "last_rehearsal_at", "generated_at",
                        "worst_breach_at"})


def _times(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _times(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_times(v) for v in value]
    if key in _TIME_KEYS and isinstance(value, int | float):
        return iso(value)
    return value


def instance_dict(row: InstanceReport) -> dict[str, Any]:
    out = asdict(row)
    rpo = out["rpo"]
    rpo["share_within_target"] = row.rpo.share_within_target
    out["rehearsal_summary"] = {"count": len(row.rehearsals), "passed": row.rehearsal_count("passed"),
                                "failed": row.rehearsal_count("failed"), "skipped": row.rehearsal_count("skipped"),
                                "rto_missed": row.rto_missed}
    return out


def report_dict(report: Report) -> dict[str, Any]:
    out = {
        "schema": SCHEMA,
        "generated_at": report.generated_at,
        "scope": {"kind": report.scope, "value": report.scope_value},
        "period": asdict(report.period),
        "rpo_sampling": {"interval_seconds": report.sample_interval_seconds,
                         "retention_seconds": report.sample_retention_seconds},
        "totals": asdict(report.totals),
        "instances": [instance_dict(r) for r in report.instances],
    }
    return _times(out)


def render(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2, sort_keys=True) + "\n"
