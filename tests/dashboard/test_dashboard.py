"""The DR dashboard in a real headless browser (Debian's chromium), through a real ``drbroker serve``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import KSYS_PARAMS, KSYS_PLAN, PASSWORD, ROOT, SERVICE_ID, USER
from tests.e2e.conftest import drbroker_command

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS_SCREENSHOT = ROOT / "docs" / "images" / "dashboard.png"
UPDATE_SCREENSHOTS = "DRBROKER_UPDATE_SCREENSHOTS"


def _need_chromium() -> str:
    """The browser, or: in CI (``CI`` set) a failure, elsewhere a skip that says why."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: install Debian's chromium (.ci/run does)")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    return CHROMIUM


def screenshot_path(tmp_path: Path) -> Path:
    """Where the test writes its screenshot: the test's own folder, unless ``DRBROKER_UPDATE_SCREENSHOTS=1``
    asks to refresh the image the docs show (docs/images/dashboard.png, tracked in git)."""
    if os.environ.get(UPDATE_SCREENSHOTS) == "1":
        return DOCS_SCREENSHOT
    return tmp_path / "dashboard.png"


def test_the_screenshot_goes_to_the_docs_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UPDATE_SCREENSHOTS, raising=False)
    assert screenshot_path(tmp_path) == tmp_path / "dashboard.png"
    monkeypatch.setenv(UPDATE_SCREENSHOTS, "1")
    assert screenshot_path(tmp_path) == DOCS_SCREENSHOT


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


def _osb(url: str) -> requests.Session:
    s = requests.Session()
    s.auth = (USER, PASSWORD)
    s.headers["X-Broker-API-Version"] = "2.17"
    return s


def _wait(s: requests.Session, url: str, iid: str) -> dict:
    for _ in range(600):
        body = s.get(f"{url}/v2/service_instances/{iid}/last_operation", timeout=10).json()
        if body["state"] != "in progress":
            return body
        time.sleep(0.1)
    raise AssertionError("operation did not finish")


def _link(broker, iid: str, ttl: int) -> str:
    out = subprocess.run([*drbroker_command(), "dashboard", "link", iid, "--ttl", str(ttl), "--base-url", broker.url],
                         env=broker.env, cwd=broker.cwd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def broker_with_history(broker_factory, db_path):
    broker = broker_factory(db_path, DRBROKER_RPO_SAMPLE_SECONDS="1")
    s = _osb(broker.url)
    r = s.put(f"{broker.url}/v2/service_instances/dash-1?accepts_incomplete=true", timeout=30,
              json={"service_id": SERVICE_ID, "plan_id": KSYS_PLAN, "organization_guid": "o", "space_guid": "s",
                    "parameters": KSYS_PARAMS})
    assert r.status_code == 202, r.text
    assert _wait(s, broker.url, "dash-1")["state"] == "succeeded"
    assert s.put(f"{broker.url}/v2/service_instances/dash-1/service_bindings/app-1", timeout=30,
                 json={"service_id": SERVICE_ID, "plan_id": KSYS_PLAN}).status_code == 201
    r = s.patch(f"{broker.url}/v2/service_instances/dash-1?accepts_incomplete=true", timeout=30,
                json={"service_id": SERVICE_ID, "parameters": {"dr_action": {"type": "test_failover"}}})
    assert r.status_code == 202, r.text
    assert _wait(s, broker.url, "dash-1")["state"] == "succeeded"
    time.sleep(2.5)  # a few RPO samples
    return broker


def test_dashboard_shows_the_instance_in_a_real_browser_without_console_errors(broker_with_history,
                                                                                 tmp_path: Path) -> None:
    """The screenshot goes to this test's tmp_path; ``DRBROKER_UPDATE_SCREENSHOTS=1`` writes it to
    docs/images/dashboard.png instead, to refresh the image the README shows on purpose."""
    from playwright.sync_api import sync_playwright

    executable = _need_chromium()
    shot = screenshot_path(tmp_path)
    broker = broker_with_history
    link = _link(broker, "dash-1", 600)
    attrs = _osb(broker.url).get(f"{broker.url}/v2/service_instances/dash-1", timeout=10).json()["metadata"][
        "attributes"]
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        page = browser.new_page(viewport={"width": 1100, "height": 1300})
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        response = page.goto(link)
        assert response is not None and response.status == 200
        assert page.locator("#replication-state").inner_text() == attrs["replication_state"] == "consistent_copying"
        assert page.locator("#site-primary").get_attribute("class") == "card active"
        assert "dal10" in page.locator("#site-primary").inner_text()
        assert "wdc07" in page.locator("#site-secondary").inner_text()
        assert page.locator("#rpo-target").inner_text() == "15.0 min"
        assert page.locator("#rehearsal-at").inner_text() == attrs["last_rehearsal_at"]
        assert page.locator("#rehearsal-rto").inner_text() != "-"
        assert "app-1" in page.locator("#bindings").inner_text()
        ops = page.locator("#operations").inner_text()
        assert "provision" in ops and "test_failover" in ops and "bind" in ops
        assert page.locator("#rpo-line").count() == 1  # sampled history drawn
        assert page.locator("#rpo-target-line").count() == 1
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert problems == []
    assert shot.stat().st_size > 10_000


def test_dashboard_needs_auth_or_a_valid_signed_link(broker_with_history) -> None:
    broker = broker_with_history
    base = f"{broker.url}/dashboard/instances/dash-1"
    assert requests.get(base, timeout=10).status_code == 401
    assert requests.get(base, auth=(USER, PASSWORD), timeout=10).status_code == 200
    link = _link(broker, "dash-1", 600)
    assert requests.get(link, timeout=10).status_code == 200
    assert requests.get(link.replace("sig=", "sig=x"), timeout=10).status_code == 401
    other = link.replace("/dash-1?", "/dash-2?")
    assert requests.get(other, timeout=10).status_code == 401  # a link opens only its own instance
    expired = _link(broker, "dash-1", -1)
    assert requests.get(expired, timeout=10).status_code == 401

