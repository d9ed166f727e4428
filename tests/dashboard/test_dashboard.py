"""The DR dashboard in a real headless browser (Debian's chromium), through real ``drbroker serve`` processes.

One scene serves three instances of the simulated backend, each opened through the signed ``dashboard_url``
fetch instance hands the platform: a healthy one (bound, rehearsed), a degraded one (a resync that stopped
while the copy was inconsistent: the broker restarted with ``DRBROKER_SIM_FAULTS=wait_consistent_copying=fail``)
and one failed over (``dr_action failover`` with ``mode: unplanned``). Screenshots (1200x800, the page above
the fold) go to each test's folder, or to docs/images/ with ``DRBROKER_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from broker.config import Settings
from broker.security.links import DashboardLinks, signed_query
from tests.conftest import KSYS_PARAMS, KSYS_PLAN, PASSWORD, ROOT, SERVICE_ID, USER, grs_params, required_in_ci
from tests.e2e.conftest import BrokerProcess, base_env, drbroker_command, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS_IMAGES = ROOT / "docs" / "images"
UPDATE_SCREENSHOTS = "DRBROKER_UPDATE_SCREENSHOTS"
VIEWPORT = {"width": 1200, "height": 800}
CASES = {"healthy": "dash-ok", "degraded": "dash-deg", "failed-over": "dash-fo"}


def _need_chromium() -> str:
    """The browser, or: in CI (``CI`` set) a failure, elsewhere a skip that says why."""
    if CHROMIUM is None:
        required_in_ci("browser", "no chromium on this machine (apt-get install chromium; .ci/run does)")
    return CHROMIUM


def screenshot_path(tmp_path: Path, case: str) -> Path:
    """Where the test writes a case's screenshot: the test's own folder, unless ``DRBROKER_UPDATE_SCREENSHOTS=1``
    asks to refresh the image the docs show (docs/images/dashboard-<case>.png, tracked in git)."""
    name = f"dashboard-{case}.png"
    if os.environ.get(UPDATE_SCREENSHOTS) == "1":
        return DOCS_IMAGES / name
    return tmp_path / name


def test_the_screenshots_go_to_the_docs_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UPDATE_SCREENSHOTS, raising=False)
    assert screenshot_path(tmp_path, "healthy") == tmp_path / "dashboard-healthy.png"
    monkeypatch.setenv(UPDATE_SCREENSHOTS, "1")
    assert screenshot_path(tmp_path, "healthy") == DOCS_IMAGES / "dashboard-healthy.png"


def test_a_missing_browser_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as outcome:  # a skip must not pass
        _need_chromium()
    assert outcome.type is pytest.fail.Exception, outcome.value
    assert "CI must run the browser test" in str(outcome.value)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        _need_chromium()


# --- the scene ------------------------------------------------------------------------------------------------

def _session() -> requests.Session:
    s = requests.Session()
    s.auth = (USER, PASSWORD)
    s.headers["X-Broker-API-Version"] = "2.17"
    return s


def _wait(s: requests.Session, url: str, iid: str) -> dict[str, Any]:
    for _ in range(600):
        body = s.get(f"{url}/v2/service_instances/{iid}/last_operation", timeout=10).json()
        if body["state"] != "in progress":
            return body
        time.sleep(0.1)
    raise AssertionError("operation did not finish")


def _action(s: requests.Session, url: str, iid: str, action: dict[str, Any]) -> dict[str, Any]:
    r = s.patch(f"{url}/v2/service_instances/{iid}?accepts_incomplete=true", timeout=30,
                json={"service_id": SERVICE_ID, "parameters": {"dr_action": action}})
    assert r.status_code == 202, r.text
    return _wait(s, url, iid)


@dataclass
class Scene:
    broker: BrokerProcess
    session: requests.Session

    def fetch(self, iid: str) -> dict[str, Any]:
        r = self.session.get(f"{self.broker.url}/v2/service_instances/{iid}", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def cli_link(self, iid: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*drbroker_command(), "dashboard", "link", iid, "--base-url", self.broker.url, *args],
                              env={**self.broker.env, **env}, cwd=self.broker.cwd, capture_output=True, text=True,
                              timeout=60)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    folder = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    env = base_env(folder / "state.db", DRBROKER_RPO_SAMPLE_SECONDS="1")
    started: list[BrokerProcess] = []
    try:
        first = BrokerProcess(env, folder, folder / "broker-1.log")
        started.append(first.start(port))
        s, url = _session(), first.url
        for n, iid in enumerate(CASES.values()):
            params = {**grs_params(n + 1), "orchestrator": KSYS_PARAMS["orchestrator"]}
            r = s.put(f"{url}/v2/service_instances/{iid}?accepts_incomplete=true", timeout=30,
                      json={"service_id": SERVICE_ID, "plan_id": KSYS_PLAN, "organization_guid": "o",
                            "space_guid": "s", "parameters": params})
            assert r.status_code == 202, r.text
        for iid in CASES.values():
            assert _wait(s, url, iid)["state"] == "succeeded"
        assert s.put(f"{url}/v2/service_instances/dash-ok/service_bindings/app-1", timeout=30,
                     json={"service_id": SERVICE_ID, "plan_id": KSYS_PLAN}).status_code == 201
        assert _action(s, url, "dash-ok", {"type": "test_failover"})["state"] == "succeeded"
        assert _action(s, url, "dash-ok", {"type": "cleanup_test"})["state"] == "succeeded"
        assert _action(s, url, "dash-fo", {"type": "failover", "mode": "unplanned"})["state"] == "succeeded"
        first.stop()
        # The same database and port, with the wait for a consistent copy failing: a resync stops half-way.
        second = BrokerProcess({**env, "DRBROKER_SIM_FAULTS": "wait_consistent_copying=fail"}, folder,
                               folder / "broker-2.log")
        started.append(second.start(port))
        assert _action(s, second.url, "dash-deg", {"type": "resync"})["state"] == "failed"
        # a few RPO samples at 1 s; a fuller chart when the docs' images are refreshed
        time.sleep(90 if os.environ.get(UPDATE_SCREENSHOTS) == "1" else 3)
        yield Scene(second, s)
    finally:
        for proc in started:
            proc.stop()


# --- the three cases in the browser -----------------------------------------------------------------------------

EXPECT = {
    "healthy": ("protected", "Protected", "replication is consistent_copying"),
    "degraded": ("degraded", "Degraded", "replication is inconsistent_copying"),
    "failed-over": ("not protected", "Not protected", "running on the secondary site since "),
}


def _open(scene: Scene, link: str, tmp_path: Path, shot: Path | None) -> tuple[dict[str, Any], list[str]]:
    """Open ``link`` in Chromium; return what the page shows (read through the DOM) and its console problems."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_need_chromium(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            response = page.goto(link)
            assert response is not None
            seen: dict[str, Any] = {"status": response.status, "headers": response.headers,
                                    "text": page.locator("body").inner_text()}
            if response.status == 200:
                chart = page.locator("#rpo-chart")
                seen.update({
                    "banner": page.locator("#banner").get_attribute("data-status"),
                    "banner_status": page.locator("#banner-status").inner_text(),
                    "banner_reason": page.locator("#banner-reason").inner_text(),
                    "banner_next": page.locator("#banner-next").inner_text() if page.locator(
                        "#banner-next").count() else "",
                    "as_of": page.locator("#as-of").inner_text(),
                    "refresh": page.locator('meta[http-equiv="refresh"]').get_attribute("content"),
                    "secondary_class": page.locator("#site-secondary").get_attribute("class"),
                    "rpo_achieved": page.locator("#rpo-achieved").inner_text(),
                    "rpo_met": page.locator("#rpo-met").inner_text(),
                    "orchestrator": page.locator("#orchestrator-health").inner_text(),
                    "volumes": page.locator("#volume-list li").all_inner_texts(),
                    "ops": [(r.get_attribute("data-kind"), r.get_attribute("data-state"),
                             r.locator(".took").inner_text(), r.locator(".rto").inner_text())
                            for r in page.locator("#operations tr.op").all()],
                    "ops_top": page.locator("#operations tr.op").first.bounding_box(),
                    "x_label": page.locator("#rpo-x-label").text_content(),
                    "y_label": page.locator("#rpo-y-label").text_content(),
                    "x_ticks": page.locator("#rpo-chart .x-tick").all_text_contents(),
                    "y_ticks": page.locator("#rpo-chart .y-tick").all_text_contents(),
                    "window": (float(chart.get_attribute("data-start") or 0),
                               float(chart.get_attribute("data-end") or 0)),
                    "samples": int(chart.get_attribute("data-samples") or 0),
                    "points": page.locator("#rpo-chart .rpo-point").count(),
                    "bands": page.locator("#rpo-chart .not-replicating").count(),
                    "target_line": page.locator("#rpo-target-line").count(),
                    "chart_box": chart.bounding_box(),
                })
            if shot is not None:
                shot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shot))  # the viewport: what is above the fold
        finally:
            browser.close()
    return seen, problems


def _numbers_out(text: str) -> str:
    return re.sub(r"\d+", "N", text)


@pytest.mark.parametrize("case", list(CASES))
def test_each_case_shows_its_protection_status_above_the_fold(scene: Scene, tmp_path: Path, case: str) -> None:
    iid = CASES[case]
    body = scene.fetch(iid)
    attrs = body["metadata"]["attributes"]
    status, title, reason = EXPECT[case]
    assert attrs["protection_status"] == status, attrs
    shot = screenshot_path(tmp_path, case)
    seen, problems = _open(scene, body["dashboard_url"], tmp_path, shot)
    assert problems == []
    assert seen["status"] == 200
    assert seen["banner"] == status and seen["banner_status"] == title
    assert seen["banner_reason"].startswith(reason) or reason in seen["banner_reason"], seen["banner_reason"]
    # one status, computed once (the live RPO may have moved on by a second between the two reads)
    assert _numbers_out(seen["banner_reason"]) == _numbers_out(attrs["protection_reason"])
    assert seen["as_of"].startswith("as of ") and "refreshes every 30 s" in seen["as_of"]
    assert seen["refresh"] == "30"
    assert seen["volumes"] == body["parameters"]["protected_volumes"]
    assert seen["orchestrator"] in ("healthy", "failing")
    # the operations and the chart start above the fold (the viewport is 800 px high)
    assert seen["ops_top"] is not None and seen["ops_top"]["y"] < VIEWPORT["height"] - 40
    assert seen["chart_box"] is not None and seen["chart_box"]["y"] < VIEWPORT["height"] - 100
    # labelled axes, the target line, a window that fits the history instead of a fixed 24 hours
    assert seen["x_label"] == "time (UTC)" and seen["y_label"] == "achieved RPO"
    assert len(seen["x_ticks"]) >= 2 and len(seen["y_ticks"]) >= 2 and "15 min" in seen["y_ticks"]
    assert seen["target_line"] == 1
    start, end = seen["window"]
    assert seen["samples"] >= 2
    assert 180 - 1 <= end - start < 3600, seen["window"]  # from the first sample (at least 3 min) to now
    assert shot.stat().st_size > 10_000
    kinds = [k for k, _, _, _ in seen["ops"]]
    if case == "healthy":
        assert seen["banner_next"] == ""  # nothing to do
        assert seen["rpo_met"] == "met" and seen["rpo_achieved"].endswith(" s")
        assert seen["points"] >= 2 and seen["bands"] == 0
        rehearsal = next(op for op in seen["ops"] if op[0] == "test_failover")
        assert rehearsal[1] == "succeeded" and rehearsal[3].endswith("met"), rehearsal  # measured RTO vs target
        assert {"provision", "bind", "cleanup_test"} <= set(kinds)
    elif case == "degraded":
        assert seen["rpo_met"] == "not met"
        assert seen["banner_next"].startswith("Next: wait for consistent_copying")
        assert ("resync", "failed") in [(k, s) for k, s, _, _ in seen["ops"]]
        assert "resync failed" in seen["text"]  # the banner names the failed operation
    else:
        assert seen["banner_next"] == "Next: run dr_action failback when the primary site is back"
        assert seen["secondary_class"] == "site active"
        assert seen["rpo_achieved"].startswith("not replicating since ")
        assert seen["rpo_met"] == "not met"
        assert seen["bands"] >= 1  # the samples since the failover are "not replicating", not a growing lag
        failover = next(op for op in seen["ops"] if op[0] == "failover (unplanned)")
        assert failover[1] == "succeeded" and failover[3] != "-", failover  # its measured RTO


def test_an_expired_link_says_so_and_how_to_get_a_new_one(scene: Scene, tmp_path: Path) -> None:
    out = scene.cli_link("dash-ok", "--ttl", "-1")
    assert out.returncode == 0, out.stderr
    link = out.stdout.strip()
    exp = int(parse_qs(urlsplit(link).query)["exp"][0])
    seen, problems = _open(scene, link, tmp_path, tmp_path / "expired.png")
    assert problems == [] or all("403" in p for p in problems), problems
    assert seen["status"] == 403
    assert "www-authenticate" not in seen["headers"]  # no basic-auth prompt for broker credentials
    text = seen["text"]
    assert "This link has expired" in text and "authentication required" not in text
    assert time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(exp)) in text
    assert "open the instance's dashboard again from your platform" in text
    assert "drbroker dashboard link dash-ok" in text


def test_the_platforms_link_is_signed_fresh_on_each_fetch_and_capped(scene: Scene) -> None:
    first = scene.fetch("dash-ok")["dashboard_url"]
    time.sleep(1.1)
    second = scene.fetch("dash-ok")["dashboard_url"]
    assert first != second and first.split("?")[0] == second.split("?")[0]
    exp = int(parse_qs(urlsplit(second).query)["exp"][0])
    assert abs(exp - (time.time() + 86400)) < 30  # DRBROKER_DASHBOARD_LINK_MAX_SECONDS' default
    assert requests.get(first, timeout=10).status_code == 200  # the older link still opens until it expires
    page = first.split("?")[0]
    r = requests.get(page, timeout=10)
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers  # the bare page needs the broker's auth
    assert requests.get(page, auth=(USER, PASSWORD), timeout=10).status_code == 200


def test_bad_links_are_refused(scene: Scene) -> None:
    link = scene.fetch("dash-ok")["dashboard_url"]
    tampered = link.replace("sig=", "sig=x")
    r = requests.get(tampered, headers={"Accept": "text/html"}, timeout=10)
    assert r.status_code == 403 and "This link is not valid" in r.text and "WWW-Authenticate" not in r.headers
    answer = requests.get(tampered, headers={"Accept": "application/json"}, timeout=10)
    assert answer.status_code == 403 and answer.json()["error"] == "LinkInvalid"
    assert answer.json()["description"].startswith("sig: ")  # names the bad field
    assert requests.get(link.replace("/dash-ok?", "/dash-fo?"), timeout=10).status_code == 403  # its own instance only
    # an operator's credentials still open the page whatever the link
    assert requests.get(tampered, auth=(USER, PASSWORD), timeout=10).status_code == 200
    # signed with this broker's key but living longer than DRBROKER_DASHBOARD_LINK_MAX_SECONDS allows
    links = DashboardLinks.from_settings(Settings.from_env(scene.broker.env))
    too_long = f"{link.split('?')[0]}?{signed_query(links.secret(), 'dash-ok', 10 * 86400)}"
    assert requests.get(too_long, timeout=10).status_code == 403


def test_the_cli_cannot_issue_a_link_longer_than_the_maximum(scene: Scene) -> None:
    refused = scene.cli_link("dash-ok", "--ttl", "86401")
    assert refused.returncode == 2 and "DRBROKER_DASHBOARD_LINK_MAX_SECONDS" in refused.stderr, refused.stderr
    lower = scene.cli_link("dash-ok", "--ttl", "601", DRBROKER_DASHBOARD_LINK_MAX_SECONDS="600")
    assert lower.returncode == 2 and "at most 600 s" in lower.stderr
    default = scene.cli_link("dash-ok", DRBROKER_DASHBOARD_LINK_MAX_SECONDS="600")
    assert default.returncode == 0, default.stderr
    link = default.stdout.strip()
    assert abs(int(parse_qs(urlsplit(link).query)["exp"][0]) - (time.time() + 600)) < 30
    assert requests.get(link, timeout=10).status_code == 200
