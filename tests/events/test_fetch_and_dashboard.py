"""The instance's newest DR events in fetch instance (``recent_events``) and on its dashboard page."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import urlsplit

from tests.events.conftest import events
from tests.services.conftest import DR


def _run(dr: DR, iid: str, kind: str, mode: str | None = None) -> None:
    assert dr.action(iid, kind, mode).status_code == 202
    assert dr.wait(iid)["state"] == "succeeded"


def test_fetch_instance_lists_the_newest_five_events_newest_first(dr: DR) -> None:
    dr.ready("fe-1")
    first = dr.attributes("fe-1")["recent_events"]
    assert [e["type"] for e in first] == ["instance.provisioned"]
    assert set(first[0]) == {"seq", "at", "type", "severity", "summary"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first[0]["at"])

    _run(dr, "fe-1", "test_failover")
    _run(dr, "fe-1", "cleanup_test")
    _run(dr, "fe-1", "failover", "planned")
    _run(dr, "fe-1", "failback")
    recent = dr.attributes("fe-1")["recent_events"]
    stored = events(dr.runtime, instance_id="fe-1")
    assert len(stored) == 7 and len(recent) == 5
    assert [e["seq"] for e in recent] == [e["seq"] for e in stored][::-1][:5]
    assert [e["type"] for e in recent] == ["failback.finished", "failback.started", "failover.finished",
                                           "failover.started", "rehearsal.passed"]
    assert recent[0]["severity"] == "info" and recent[0]["summary"] == stored[-1]["summary"]
    assert recent[2]["severity"] == "warning"


def test_the_dashboard_lists_the_events(dr: DR) -> None:
    dr.ready("fe-d")
    page = dr.get("/v2/service_instances/fe-d").json["dashboard_url"]
    empty_then = unescape(dr.client.get(urlsplit(page).path + "?" + urlsplit(page).query).get_data(as_text=True))
    assert 'data-type="instance.provisioned"' in empty_then
    _run(dr, "fe-d", "test_failover")
    html = unescape(dr.client.get(urlsplit(page).path + "?" + urlsplit(page).query).get_data(as_text=True))
    section = html[html.index('id="events"'):]
    rows = re.findall(r'<tr class="event" data-type="([^"]+)" data-seq="(\d+)">', section)
    assert [t for t, _ in rows] == ["rehearsal.passed", "rehearsal.started", "instance.provisioned"]
    passed = events(dr.runtime, instance_id="fe-d", types=["rehearsal.passed"])[0]
    assert passed["summary"] in section
    assert "drbroker events list --instance fe-d" in section
