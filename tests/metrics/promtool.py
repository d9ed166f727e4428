"""The shipped alert rules run by Prometheus's own rule engine (``promtool test rules``) on what a real broker's
``/metrics`` said: each scrape becomes a stretch of samples of every series it held, one per minute.

A scenario is a list of phases (scrape text, minutes it lasts). ``check`` asserts, at the end of the first phase
(the healthy broker) that no alert fires, and once the last phase has lasted an alert's ``for:`` plus two
minutes that exactly the expected alerts fire, with their labels and their annotations as Prometheus renders
them.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, required_in_ci

RULES = ROOT / "deploy" / "prometheus" / "drbroker-alerts.yaml"
# What a second replica of the same database reports the same as the first: the gauges read from the
# database at scrape time. Its own counters and process figures are its own (left out here).
SHARED_PREFIXES = ("drbroker_instance_", "drbroker_operation", "drbroker_queue_", "drbroker_notifications_",
                   "drbroker_cos_")
REPLICAS = ("broker-0:8080", "broker-1:8080")


def promtool() -> str:
    """The promtool binary. CI must run these tests: there a missing promtool fails; elsewhere it is a skip
    that says how to install it (as for PostgreSQL and the browser, tests/test_ci_policy.py)."""
    found = shutil.which("promtool")
    if found:
        return found
    reason = "promtool not found (Debian: apt-get install -y --no-install-recommends prometheus)"
    required_in_ci("alert-rule", reason)


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_minutes: int
    labels: Mapping[str, str]
    annotations: Mapping[str, str]


def _minutes(duration: str | None) -> int:
    if not duration:
        return 0
    total = 0
    for amount, unit in re.findall(r"(\d+)([smhd])", duration):
        total += int(amount) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return math.ceil(total / 60)


def alerts() -> dict[str, Alert]:
    doc = yaml.safe_load(RULES.read_text())
    found: dict[str, Alert] = {}
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                found[rule["alert"]] = Alert(rule["alert"], rule["expr"], _minutes(rule.get("for")),
                                             rule.get("labels") or {}, rule.get("annotations") or {})
    return found


_TEMPLATE = re.compile(r"\{\{\s*\$labels\.(\w+)\s*\}\}")


def render(text: str, labels: Mapping[str, str]) -> str:
    """An annotation as Prometheus renders it; the rules use ``{{ $labels.NAME }}`` and nothing else."""
    out = _TEMPLATE.sub(lambda m: labels[m.group(1)], text)
    assert "{{" not in out, f"a template this test cannot render: {text!r}"
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    return repr(float(value))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def input_series(phases: Sequence[tuple[str, int]]) -> list[dict[str, str]]:
    """promtool ``input_series``: each phase's scrape held for its minutes; ``_`` where a scrape lacked a series."""
    scraped = [(samples(text), minutes) for text, minutes in phases]
    keys = sorted({key for got, _ in scraped for key in got})
    series = []
    for name, labels in keys:
        replicas = REPLICAS if name.startswith(SHARED_PREFIXES) else REPLICAS[:1]
        values = " ".join(" ".join([_number(got[(name, labels)]) if (name, labels) in got else "_"] * minutes)
                          for got, minutes in scraped)
        for replica in replicas:
            shown = ",".join(f'{k}="{_escape(v)}"' for k, v in
                             (*labels, ("instance", replica), ("job", "drbroker")))
            series.append({"series": f"{name}{{{shown}}}", "values": values})
    return series


def expected(alert: Alert, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"exp_labels": {**labels, **alert.labels},
            "exp_annotations": {k: render(v, labels) for k, v in alert.annotations.items()}}


def check(tmp_path: Path, phases: Sequence[tuple[str, int]], firing: Mapping[str, list[Mapping[str, str]]]) -> str:
    """Run the rules over ``phases``: nothing fires at the end of the first phase; at the end of the last one,
    the alerts in ``firing`` (name -> the label sets of its alerts, without ``severity``) and no other."""
    rules = alerts()
    unknown = set(firing) - set(rules)
    assert not unknown, f"no such alert in {RULES.name}: {unknown}"
    healthy_end = phases[0][1] - 1
    longest = max(alert.for_minutes for alert in rules.values())
    assert healthy_end > longest, f"the first phase must outlast the longest for: ({longest} min)"
    last_start = sum(minutes for _, minutes in phases[:-1])
    cases = []
    for name, alert in rules.items():
        cases.append({"eval_time": f"{healthy_end}m", "alertname": name, "exp_alerts": []})
        at = last_start + alert.for_minutes + 2
        assert at < last_start + phases[-1][1], f"the last phase is too short for {name} (for: {alert.for_minutes}m)"
        cases.append({"eval_time": f"{at}m", "alertname": name,
                      "exp_alerts": [expected(alert, labels) for labels in firing.get(name, [])]})
    test = {"rule_files": [str(RULES)], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": input_series(phases), "alert_rule_test": cases}]}
    path = tmp_path / "alerts-test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    run = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout
