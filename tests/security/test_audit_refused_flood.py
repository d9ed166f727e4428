"""A flood of refused requests through a real ``drbroker serve``: 500 unauthenticated worst-case PUTs (and 500
with bad JSON) add at most a stated number of bytes to audit_events, are counted in /metrics and logged one line
each. Run with ``-s`` to see the figures. Only the standard library and the test helpers are imported, so that
the same file measures a broker without the bound."""

from __future__ import annotations

import base64
import json
import math
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import PASSWORD, USER
from tests.security.conftest import Server

# The stated bound (broker.api.audit_refusals, broker.security.audit): per 60-second window and process, each
# client gets PER_CLIENT records of its own, and one summary counts the rest; every record is at most
# RECORD_BYTES bytes (its canonical JSON, MAC included).
RECORD_BYTES = 2048
SUPPRESSED_ACTION = "refused_requests_suppressed"


FLOOD = 500
PER_CLIENT = 10  # DRBROKER_AUDIT_REFUSED_PER_CLIENT's default
# Planted in what the flood sends: the body (never read for a refused request, so in neither the trail nor the
# log), the originating identity and the path (recorded, cut; never logged).
BODY = "body-value-7f3a"
IDENTITY = "identity-value-51c9"
PATH = "path-value-0b2e"


def worst_case_refused(i: int, *, bad_json: bool = False) -> tuple[str, dict[str, str], bytes]:
    """A PUT without credentials carrying as much as a client can put in the fields the audit records: a
    255-character id, a 7 KB originating identity, a 255-character request identity, long body ids and 100
    long parameter names."""
    identity = {f"{IDENTITY}-{n:03d}": "v" * 40 for n in range(75)}  # ~7.6 KB in base64: under 8 KiB a field
    headers = {"X-Broker-API-Version": "2.17", "Content-Type": "application/json",
               "X-Broker-API-Originating-Identity": "ibmcloud " + base64.b64encode(json.dumps(identity).encode())
               .decode(),
               "X-Broker-API-Request-Identity": "r" * 255}
    if bad_json:
        body = b'{"service_id": "' + BODY.encode() + b'", "parameters": {' + b"x" * 20000
    else:
        params = {f"{BODY}-{n:03d}-" + "p" * 40: {"nested-" + "q" * 50: 1} for n in range(100)}
        body = json.dumps({"service_id": BODY + "s" * 200, "plan_id": BODY + "p" * 200,
                           "context": {"platform": BODY + "x" * 64}, "parameters": params}).encode()
    path = f"/v2/service_instances/{PATH}-{i:05d}-" + "i" * 200 + "?accepts_incomplete=true"
    return path, headers, body


def audit_bytes(db: Path) -> dict[str, int]:
    """What audit_events holds: rows, the bytes of every column's value, and the pages of the table and its
    indexes (SQLite's dbstat)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(audit_events)")]
        values = " + ".join(f"COALESCE(length(CAST({c} AS BLOB)), 0)" for c in columns)
        rows, payload = conn.execute(f"SELECT COUNT(*), COALESCE(SUM({values}), 0) FROM audit_events").fetchone()
        pages = conn.execute("SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name LIKE '%audit_events%'"
                             ).fetchone()[0]
        return {"rows": rows, "payload": payload, "pages": pages}
    finally:
        conn.close()


def audit_rows(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM audit_events ORDER BY id")]
    finally:
        conn.close()


JSON_COLUMNS = ("detail", "originating_identity")


def record_bytes(row: dict[str, Any]) -> int:
    """The size the bound is stated in: the record's canonical JSON (sorted keys, no spaces, ASCII), its MAC
    included."""
    return len(json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode())


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            got = line[len(name):].rsplit(" ", 1)
            found = ",".join(sorted(got[0].strip("{}").split(","))) if got[0] else ""
            if found == want:
                return float(got[1])
    return 0.0


def flood(server: Server, *, bad_json: bool) -> float:
    started = time.monotonic()
    with requests.Session() as session:
        for i in range(FLOOD):
            path, headers, body = worst_case_refused(i, bad_json=bad_json)
            r = session.put(server.url + path, data=body, headers=headers, timeout=30)
            assert r.status_code == 401, (r.status_code, r.text)
    return time.monotonic() - started


@pytest.mark.parametrize("bad_json", [False, True], ids=["worst-case-body", "bad-json"])
def test_a_flood_of_unauthenticated_puts_adds_a_bounded_number_of_bytes(
        serve: Callable[..., Server], tmp_path: Path, bad_json: bool) -> None:
    db = tmp_path / "state.db"
    server = serve(db)
    before = audit_bytes(db)
    seconds = flood(server, bad_json=bad_json)
    scraped = requests.get(server.url + "/metrics", auth=(USER, PASSWORD), timeout=30).text
    server.stop()  # the window's summary is written at exit at the latest
    after = audit_bytes(db)
    added = {k: after[k] - before[k] for k in after}
    print(f"\n{FLOOD} unauthenticated PUTs ({'bad JSON' if bad_json else 'worst-case body'}) in {seconds:.1f}s: "
          f"audit_events +{added['rows']} rows, +{added['payload']} bytes of values, +{added['pages']} bytes of "
          "pages (table and indexes)")

    # The bound: per 60-second window, PER_CLIENT records of one client plus one summary, each <= 2 KiB.
    windows = math.ceil(seconds / 60) + 1
    rows = audit_rows(db)
    summaries = [r for r in rows if r["action"] == SUPPRESSED_ACTION]
    own = [r for r in rows if r["action"] != SUPPRESSED_ACTION]
    assert len(own) <= PER_CLIENT * windows and 1 <= len(summaries) <= windows, (len(own), len(summaries))
    assert len(own) + sum(json.loads(r["detail"])["suppressed"] for r in summaries) == FLOOD
    assert added["payload"] <= (PER_CLIENT + 1) * windows * RECORD_BYTES, added
    for r in rows:
        assert record_bytes(r) <= RECORD_BYTES
        assert all(len(v) <= 200 for k, v in r.items() if isinstance(v, str) and k not in JSON_COLUMNS), r
        assert BODY not in json.dumps(r) and r["principal"] is None
    assert own[0]["status"] == 401 and own[0]["outcome"] == "Unauthorized"
    assert PATH in json.loads(own[0]["detail"])["path"]  # what was asked is still there, cut
    assert json.loads(summaries[0]["detail"])["by_status"] == {"401": FLOOD - len(own)}

    # Counted in /metrics (bounded labels: the route, never the path) ...
    route = "/v2/service_instances/<instance_id>"
    assert metric(scraped, "drbroker_refused_requests_total", method="PUT", route=route, status="401") == FLOOD
    assert metric(scraped, "drbroker_audit_refused_suppressed_total") == FLOOD - len(own)
    assert PATH not in scraped
    # ... and logged, one line each: method, route, status, error code, address; no path, body or identity.
    log = server.log()
    lines = [line for line in log.splitlines() if "refused PUT" in line]
    assert len(lines) == FLOOD
    assert lines[0].endswith(f"refused PUT {route} -> 401 Unauthorized from 127.0.0.1")
    assert not any(planted in log for planted in (BODY, IDENTITY, PATH))
