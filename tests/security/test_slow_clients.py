"""Slow and idle clients against a real ``drbroker serve``: they cannot take the broker away from the platform.

Each request is read whole before a request thread takes it, the headers must arrive within
``DRBROKER_HTTP_HEADER_TIMEOUT`` and the body within ``DRBROKER_HTTP_BODY_TIMEOUT`` (total times, not
silences), and whatever the front refuses on its own is answered in OSB JSON. The attackers
(``bench.slow_clients.Attack``) reopen every connection the server closes, so the pressure lasts the whole
test. Run with ``-s`` for the figures.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.slow_clients import Attack, Probe
from tests.conftest import GRS_PARAMS, GRS_PLAN, PASSWORD, SERVICE_ID, USER, auth_header
from tests.e2e.conftest import base_env, query
from tests.security.test_file_modes import run_cli
from tests.security.test_hard_edges import _cert

HEADER_TIMEOUT = 3.0
BODY_TIMEOUT = 3.0
# A deadline is checked twice a second; a connection is closed within this much after it.
LATE = 1.5
FRONT = {"DRBROKER_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "DRBROKER_HTTP_BODY_TIMEOUT": str(BODY_TIMEOUT)}
CATALOG_HEADERS = {"X-Broker-API-Version": "2.17", "Connection": "close"}
PROVISION = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "organization_guid": "o", "space_guid": "s",
             "parameters": GRS_PARAMS}


def catalog(url: str, verify: Any = True) -> int:
    return requests.get(f"{url}/v2/catalog", auth=(USER, PASSWORD), headers=CATALOG_HEADERS, timeout=5,
                        verify=verify).status_code


def ask_while_attacked(attack: Attack, get: Any, asks: int, spacing: float) -> Probe:
    """``asks`` catalog requests ``spacing`` s apart, once every attacker has connected and started."""
    deadline = time.monotonic() + 10
    while attack.open_connections < attack.slow + attack.idle:
        assert time.monotonic() < deadline, f"only {attack.open_connections} attackers connected"
        time.sleep(0.05)
    time.sleep(attack.interval * 1.5)  # every slow client has sent its request line and at least one byte
    probe = Probe()
    for _ in range(asks):
        probe.ask(get)
        time.sleep(spacing)
    return probe


def figures(probe: Probe, attack: Attack) -> str:
    lat = sorted(probe.latencies)
    return (f"{probe.answered}/{len(probe.statuses)} answered, latency median {statistics.median(lat) * 1000:.0f} ms "
            f"max {lat[-1] * 1000:.0f} ms; slow closed {len(attack.lifetimes['slow'])}x "
            f"{sorted(attack.lifetimes['slow'])[:1]}..; idle closed {len(attack.lifetimes['idle'])}x")


def assert_cut_at_the_header_deadline(lifetimes: list[float], kind: str) -> None:
    assert lifetimes, f"no {kind} connection was ever closed by the server"
    assert min(lifetimes) >= HEADER_TIMEOUT - 0.2, (kind, sorted(lifetimes)[:5])
    assert max(lifetimes) <= HEADER_TIMEOUT + LATE, (kind, sorted(lifetimes)[-5:])


def response(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body)


def assert_osb_json(raw: bytes, status: int, error: str, mentions: str) -> None:
    code, headers, body = response(raw)
    assert code == status, raw[:300]
    assert headers["content-type"] == "application/json", headers
    assert body["error"] == error and mentions in body["description"], body


def exchange(port: int, data: bytes, timeout: float = 15) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --- slow and idle clients ---------------------------------------------------------------------------

def test_slow_and_idle_clients_do_not_keep_the_platform_out(tmp_path: Path, serve: Any) -> None:
    server = serve(tmp_path / "state.db", **FRONT)
    attack = Attack("127.0.0.1", server.port, slow=50, idle=50, interval=1.0).start()
    try:
        probe = ask_while_attacked(attack, lambda: catalog(server.url), asks=15, spacing=0.5)
    finally:
        attack.stop()
    print("\nHTTP:", figures(probe, attack))
    assert probe.statuses == [200] * 15, probe.statuses
    assert max(probe.latencies) < 5, probe.latencies
    # Every slow and idle connection lived until the header deadline, and not much longer.
    assert_cut_at_the_header_deadline(attack.lifetimes["slow"], "slow")
    assert_cut_at_the_header_deadline(attack.lifetimes["idle"], "idle")
    assert len(attack.lifetimes["slow"]) >= 100 and len(attack.lifetimes["idle"]) >= 100, attack.lifetimes
    # A client that had begun a request was told why, in OSB JSON.
    assert attack.answers, "no slow client got an answer"
    for raw in attack.answers:
        assert_osb_json(raw, 408, "RequestTimeout", f"headers: not complete within {HEADER_TIMEOUT:g} s")
    assert "Traceback" not in server.log()


def test_slow_tls_handshakes_do_not_keep_the_platform_out(tmp_path: Path, serve: Any) -> None:
    cert, key = _cert(tmp_path)
    server = serve(tmp_path / "state.db", "--certfile", str(cert), "--keyfile", str(key), scheme="https",
                   verify=str(cert), **FRONT)
    attack = Attack("127.0.0.1", server.port, slow=30, idle=30, interval=1.0, tls=True).start()
    try:
        probe = ask_while_attacked(attack, lambda: catalog(server.url, verify=str(cert)), asks=10, spacing=0.5)
    finally:
        attack.stop()
    print("\nHTTPS:", figures(probe, attack))
    assert probe.statuses == [200] * 10, probe.statuses
    assert max(probe.latencies) < 5, probe.latencies
    assert_cut_at_the_header_deadline(attack.lifetimes["slow"], "slow TLS handshake")
    assert_cut_at_the_header_deadline(attack.lifetimes["idle"], "idle TLS")
    assert "Traceback" not in server.log()


def test_https_carries_large_bodies_both_ways_on_kept_alive_connections(tmp_path: Path, serve: Any) -> None:
    """TLS on the event loop moves many records each way: a body just under 1 MiB in, and answers out."""
    cert, key = _cert(tmp_path)
    server = serve(tmp_path / "state.db", "--certfile", str(cert), "--keyfile", str(key), scheme="https",
                   verify=str(cert))
    with requests.Session() as session:
        session.auth = (USER, PASSWORD)
        session.headers["X-Broker-API-Version"] = "2.17"
        tls = {"verify": str(cert), "timeout": 30}  # per request: REQUESTS_CA_BUNDLE would override session.verify
        body = json.dumps({**PROVISION, "parameters": {**GRS_PARAMS, "pad": ""}})
        body = body.replace('"pad": ""', '"pad": "' + "x" * (1024 * 1024 - len(body) - 1) + '"')
        for _ in range(3):  # the same connection each time
            r = session.put(f"{server.url}/v2/service_instances/bulk?accepts_incomplete=true", data=body,
                            headers={"Content-Type": "application/json"}, **tls)
            assert r.status_code == 400 and "pad" in r.json()["description"], r.text[:300]
            doc = session.get(f"{server.url}/openapi.json", **tls)
            assert doc.status_code == 200 and doc.json()["paths"], doc.text[:300]
            assert session.get(f"{server.url}/v2/catalog", **tls).json()["services"]
    assert len(doc.content) > 16 * 1024  # more than one TLS record
    assert "Traceback" not in server.log()


def test_a_client_that_drips_after_its_tls_handshake_is_cut_at_the_header_deadline(tmp_path: Path,
                                                                                   serve: Any) -> None:
    cert, key = _cert(tmp_path)
    server = serve(tmp_path / "state.db", "--certfile", str(cert), "--keyfile", str(key), scheme="https",
                   verify=str(cert), **FRONT)
    ctx = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw_sock, \
            ctx.wrap_socket(raw_sock, server_hostname="127.0.0.1") as tls:
        began = time.monotonic()
        tls.sendall(b"GET /v2/catalog HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        received = b""
        while time.monotonic() - began < HEADER_TIMEOUT + LATE + 2:
            try:
                tls.sendall(b"a")
                tls.settimeout(0.5)
                chunk = tls.recv(65536)
            except TimeoutError:
                continue
            except (ssl.SSLError, OSError):
                break
            if not chunk:
                break
            received += chunk
        lived = time.monotonic() - began
    assert HEADER_TIMEOUT - 0.2 <= lived <= HEADER_TIMEOUT + LATE + 0.5, lived
    assert_osb_json(received, 408, "RequestTimeout", "headers")


def test_a_body_that_trickles_past_the_body_deadline_is_cut(tmp_path: Path, serve: Any) -> None:
    server = serve(tmp_path / "state.db", **FRONT)
    body = json.dumps(PROVISION).encode()
    head = (f"PUT /v2/service_instances/trickle?accepts_incomplete=true HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {auth_header()}\r\n"
            f"X-Broker-API-Version: 2.17\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        began = time.monotonic()
        sock.settimeout(0.25)
        received = b""
        for byte in body:  # one byte every 0.25 s: never silent for long, but far too slow in total
            try:
                sock.sendall(bytes([byte]))
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            received += chunk
        lived = time.monotonic() - began
    assert BODY_TIMEOUT - 0.2 <= lived <= BODY_TIMEOUT + LATE + 0.5, lived
    assert_osb_json(received, 408, "RequestTimeout", f"body: not complete within {BODY_TIMEOUT:g} s")
    r = requests.get(f"{server.url}/v2/service_instances/trickle", auth=(USER, PASSWORD),
                     headers={"X-Broker-API-Version": "2.17"}, timeout=10)
    assert r.status_code == 404, r.text  # the half-sent provision never reached the broker
    assert "Traceback" not in server.log()


def test_the_connection_cap_gives_way_to_the_platform(tmp_path: Path, serve: Any) -> None:
    """At the cap, idle keep-alive connections make room at once; half-read requests only at their deadline."""
    server = serve(tmp_path / "state.db", DRBROKER_HTTP_CONNECTION_LIMIT="20", **FRONT)
    # 20 keep-alive connections, each after one request: idle, and holding the whole cap.
    keepalive = []
    for _ in range(20):
        session = requests.Session()
        assert session.get(f"{server.url}/healthz", timeout=5).status_code == 200
        keepalive.append(session)
    began = time.monotonic()
    assert catalog(server.url) == 200
    assert time.monotonic() - began < 2  # an idle connection was dropped to make room, nothing waited
    # 20 slow clients hold the cap now: the platform waits, but only until the header deadline.
    attack = Attack("127.0.0.1", server.port, slow=20, idle=0, interval=0.5).start()
    try:
        time.sleep(1.0)
        began = time.monotonic()
        assert catalog(server.url) == 200
        waited = time.monotonic() - began
    finally:
        attack.stop()
        for session in keepalive:
            session.close()
    assert waited <= HEADER_TIMEOUT + LATE, waited
    assert "DRBROKER_HTTP_CONNECTION_LIMIT" in server.log()


def test_sigterm_is_not_held_up_by_slow_or_idle_clients(tmp_path: Path, serve: Any) -> None:
    server = serve(tmp_path / "state.db")  # production deadlines: 10 s for headers
    keepalive = [requests.Session() for _ in range(10)]
    for session in keepalive:
        assert session.get(f"{server.url}/healthz", timeout=5).status_code == 200
    attack = Attack("127.0.0.1", server.port, slow=20, idle=20, interval=1.0).start()
    try:
        time.sleep(2.0)
        assert server.proc is not None
        began = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)
        rc = server.proc.wait(timeout=40)
        took = time.monotonic() - began
    finally:
        attack.stop()
        for session in keepalive:
            session.close()
    assert rc == 0, server.log()[-3000:]
    # Idle connections are closed at once; the half-read requests of the slow clients are not waited for
    # beyond their deadline (10 s), far from the 30 s graceful timeout.
    assert took < 12, took


# --- what the front answers itself, in OSB JSON ------------------------------------------------------

@pytest.mark.parametrize("length", [4000, 6000])
def test_a_long_instance_id_gets_the_apps_400(tmp_path: Path, serve: Any, length: int) -> None:
    server = serve(tmp_path / "state.db")
    r = requests.put(f"{server.url}/v2/service_instances/{'i' * length}?accepts_incomplete=true", json=PROVISION,
                     auth=(USER, PASSWORD), headers={"X-Broker-API-Version": "2.17"}, timeout=10)
    assert r.status_code == 400, r.text[:300]
    assert r.headers["Content-Type"] == "application/json"
    assert "instance_id" in r.json()["description"], r.json()


def test_front_refusals_are_osb_json_without_tracebacks(tmp_path: Path, serve: Any) -> None:
    server = serve(tmp_path / "state.db")
    auth = f"Authorization: {auth_header()}\r\n"
    # A request target over 8 KiB: 414.
    target = "/v2/service_instances/" + "t" * 10 * 1024
    assert_osb_json(exchange(server.port, f"GET {target} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()),
                    414, "URITooLong", "request target")
    # 100 KiB of headers: 431, although the client is still sending when the answer is written.
    r = requests.get(f"{server.url}/v2/catalog", auth=(USER, PASSWORD), timeout=10,
                     headers={"X-Broker-API-Version": "2.17", "X-Pad": "p" * 100 * 1024})
    assert r.status_code == 431 and r.headers["Content-Type"] == "application/json", r.text[:300]
    assert r.json()["error"] == "RequestHeaderFieldsTooLarge" and "headers" in r.json()["description"]
    # A header line that is not ``name: value``, whose text is not repeated back: 400.
    raw = exchange(server.port, f"GET /v2/catalog HTTP/1.1\r\nHost: x\r\n{auth}Bearer s3cret-in-a-bad-line\r\n\r\n"
                   .encode())
    assert_osb_json(raw, 400, "BadRequest", "headers")
    assert b"s3cret" not in raw
    # A malformed chunked body: 400 naming the body.
    raw = exchange(server.port, f"PUT /v2/service_instances/c?accepts_incomplete=true HTTP/1.1\r\nHost: x\r\n{auth}"
                   "Transfer-Encoding: chunked\r\n\r\nzz\r\n".encode())
    assert_osb_json(raw, 400, "BadRequest", "body")
    # A Content-Length over 1 MiB: the body is not read, and the app refuses the request as its own (413),
    # so that it is audited and counted like any refused request.
    r = requests.put(f"{server.url}/v2/service_instances/big?accepts_incomplete=true", data=b"x" * (2 * 1024 * 1024),
                     headers={"X-Broker-API-Version": "2.17", "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge", r.text[:300]
    assert r.headers["Connection"] == "close"
    refused = query(tmp_path / "state.db", "SELECT status, outcome FROM audit_events WHERE status = 413")
    assert refused == [{"status": 413, "outcome": "PayloadTooLarge"}], refused
    # The broker still answers, and logged no traceback for any of it.
    assert catalog(server.url) == 200
    assert "Traceback" not in server.log(), server.log()[-3000:]


@pytest.mark.parametrize("name,value", [("DRBROKER_HTTP_HEADER_TIMEOUT", "soon"),
                                        ("DRBROKER_HTTP_BODY_TIMEOUT", "0"),
                                        ("DRBROKER_HTTP_CONNECTION_LIMIT", "2.5"),
                                        ("DRBROKER_HTTP_THREADS", "-1")])
def test_a_bad_front_setting_stops_start_up_naming_it(tmp_path: Path, name: str, value: str) -> None:
    env = base_env(tmp_path / "state.db", **{name: value})
    result = run_cli(tmp_path, env, "serve", "--host", "127.0.0.1", "--port", "0", timeout=30)
    assert result.returncode != 0
    assert name in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_certificate_and_key_that_do_not_match_stop_start_up_in_one_line(tmp_path: Path) -> None:
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
    cert, _ = _cert(tmp_path / "one")
    _, other_key = _cert(tmp_path / "two")
    result = run_cli(tmp_path, base_env(tmp_path / "state.db"), "serve", "--host", "127.0.0.1", "--port", "0",
                     "--certfile", str(cert), "--keyfile", str(other_key), timeout=30)
    assert result.returncode != 0
    assert "--certfile/--keyfile" in result.stderr and "Traceback" not in result.stderr, result.stderr
