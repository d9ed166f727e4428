"""The report page of the dashboard (``/dashboard/instances/<id>/report``): opened like the dashboard (a signed
link or the broker's own authentication), linked from the dashboard page, refused OSB-style when wrong."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any
from urllib.parse import unquote, urljoin

import pytest

from broker.security.links import load_or_create_secret, signed_query
from tests.conftest import HEADERS, KSYS_PARAMS, KSYS_PLAN, OSB

IID = "dash-rep"
CRN_ID = ("crn:v1:bluemix:public:power-dr:us-south:a%2F0123456789abcdef0123456789abcdef:"
          "9a8b7c6d-1111-2222-3333-444455556666::")


@pytest.fixture
def ready(osb: OSB, worker: Any) -> tuple[OSB, Any]:
    osb.ready(IID, KSYS_PLAN, KSYS_PARAMS)
    return osb, worker


def _signed(rt: Any, iid: str = IID, ttl: int = 600) -> str:
    secret = load_or_create_secret(rt.settings.state_dir, rt.settings.dashboard_secret)
    return signed_query(secret, iid, ttl)


def _get(osb: OSB, url: str, **headers: str) -> Any:
    return osb.client.get(url, headers=headers)


def test_a_signed_link_opens_the_printable_report(ready: tuple[OSB, Any]) -> None:
    osb, rt = ready
    r = _get(osb, f"/dashboard/instances/{IID}/report?days=7&{_signed(rt)}")
    assert r.status_code == 200 and r.mimetype == "text/html", r.get_data(as_text=True)
    page = r.get_data(as_text=True)
    assert f'data-instance="{IID}"' in page and "@media print" in page and "<script" not in page
    (style,) = re.findall(r"<style>(.*?)</style>", page, re.S)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Cache-Control"] == "no-store"
    back = re.search(r'id="dashboard-link" href="([^"]+)"', page)
    assert back is not None
    followed = _get(osb, urljoin(f"/dashboard/instances/{IID}/report", back.group(1).replace("&amp;", "&")))
    assert followed.status_code == 200 and "Disaster recovery:" in followed.get_data(as_text=True)


def test_the_dashboard_links_to_its_report_and_the_link_opens_it(ready: tuple[OSB, Any]) -> None:
    osb, rt = ready
    for iid, raw in ((IID, IID), (CRN_ID.replace("%2F", "/"), CRN_ID)):
        if iid != IID:
            osb.ready(raw, KSYS_PLAN, {**KSYS_PARAMS, "protected_volumes": ["vol-bulk-031"]})
        dash = f"/dashboard/instances/{raw}"
        page = _get(osb, f"{dash}?{_signed(rt, iid)}").get_data(as_text=True)
        href = re.search(r'id="report-link" href="([^"]+)"', page)
        assert href is not None, page[:500]
        url = urljoin(dash, href.group(1).replace("&amp;", "&"))
        assert unquote(url).startswith(f"{unquote(dash)}/report?days=30&exp=")
        r = _get(osb, url)
        assert r.status_code == 200, r.get_data(as_text=True)
        assert f'data-instance="{iid}"' in r.get_data(as_text=True)


def test_without_a_valid_link_the_report_is_refused_like_the_dashboard(ready: tuple[OSB, Any]) -> None:
    osb, rt = ready
    url = f"/dashboard/instances/{IID}/report"
    none = _get(osb, url)
    assert none.status_code == 401 and none.json["error"] == "Unauthorized"
    bad = _get(osb, f"{url}?{_signed(rt).replace('sig=', 'sig=x')}", Accept="application/json")
    assert bad.status_code == 403 and bad.json["error"] == "LinkInvalid" and "WWW-Authenticate" not in bad.headers
    other = _get(osb, f"{url}?{_signed(rt, 'another-instance')}")
    assert other.status_code == 403 and "not valid" in other.get_data(as_text=True)
    expired = _get(osb, f"{url}?{_signed(rt, ttl=-5)}", Accept="application/json")
    assert expired.status_code == 403 and expired.json["error"] == "LinkExpired"
    assert _get(osb, url, Authorization=HEADERS["Authorization"]).status_code == 200


def test_json_and_csv_forms_and_bad_parameters_are_osb_errors_naming_the_field(ready: tuple[OSB, Any]) -> None:
    osb, rt = ready
    base = f"/dashboard/instances/{IID}/report?{_signed(rt)}"
    doc = _get(osb, f"{base}&format=json").json
    assert doc["scope"] == {"kind": "instance", "value": IID}
    csv_text = _get(osb, f"{base}&format=csv&since=2026-01-01").get_data(as_text=True)
    assert csv_text.startswith("instance_id,") and IID in csv_text
    for query, field in (("days=abc", "days"), ("days=-1", "days"), ("since=soon", "since"),
                         ("since=2001-01-01&until=2000-01-01", "since"), ("until=later", "until"),
                         ("format=pdf", "format")):
        r = _get(osb, f"{base}&{query}")
        assert r.status_code == 400, (query, r.get_data(as_text=True))
        assert r.json["error"] == "BadRequest" and r.json["description"].startswith(f"{field}:"), r.json
    missing = _get(osb, "/dashboard/instances/nope/report", Authorization=HEADERS["Authorization"])
    assert missing.status_code == 404 and missing.json["error"] == "NotFound"
