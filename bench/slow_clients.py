"""Slow and idle clients against a broker, and whether it still answers the platform.

``Attack`` keeps N connections that send a request line and then one header byte every few seconds (a
"slowloris"), and M connections that send nothing; each one the server closes is opened again at once, so
the pressure lasts as long as the run. Over TLS, the slow clients stall their handshake instead (a TLS
record header, then one byte of it at a time). Meanwhile ``GET /v2/catalog`` with good credentials is
asked every few seconds, on a new connection each time.

``python -m bench.slow_clients`` starts ``drbroker serve`` as ``bench.run`` does (production defaults;
``--env NAME=VALUE`` to change one) and prints the figures: catalog answers and their latency, and how
long the server let each slow and idle connection live. ``--url`` attacks a broker that is already running.
"""

from __future__ import annotations

import argparse
import base64
import os
import selectors
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

SLOW_REQUEST = b"GET /v2/catalog HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
# A TLS handshake record announcing 512 bytes, of which the slow TLS client sends one at a time.
SLOW_HANDSHAKE = b"\x16\x03\x01\x02\x00"


@dataclass
class _Conn:
    kind: str
    sock: socket.socket
    opened: float
    due: float
    received: bytes = b""


@dataclass
class Attack:
    host: str
    port: int
    slow: int = 50
    idle: int = 50
    interval: float = 2.0  # seconds between two bytes of a slow client
    tls: bool = False
    lifetimes: dict[str, list[float]] = field(default_factory=lambda: {"slow": [], "idle": []})
    answers: list[bytes] = field(default_factory=list)  # what the server said to a slow client before closing
    refused: int = 0  # connection attempts that failed
    open_at_stop: int = 0
    _conns: dict[int, _Conn] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Attack:
        self._selector = selectors.DefaultSelector()
        for _ in range(self.slow):
            self._open("slow")
        for _ in range(self.idle):
            self._open("idle")
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.open_at_stop = len(self._conns)
        for conn in list(self._conns.values()):
            self._close(conn, record=False)

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def _open(self, kind: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect((self.host, self.port))
            if kind == "slow":
                sock.sendall(SLOW_HANDSHAKE if self.tls else SLOW_REQUEST)
        except OSError:
            self.refused += 1
            sock.close()
            return
        sock.setblocking(False)
        now = time.monotonic()
        conn = _Conn(kind, sock, now, now + self.interval)
        self._conns[sock.fileno()] = conn
        self._selector.register(sock, selectors.EVENT_READ, conn)

    def _close(self, conn: _Conn, *, record: bool) -> None:
        if self._conns.pop(conn.sock.fileno(), None) is None:
            return
        self._selector.unregister(conn.sock)
        conn.sock.close()
        if record:
            self.lifetimes[conn.kind].append(time.monotonic() - conn.opened)
            if conn.received:
                self.answers.append(conn.received)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                conn: _Conn = key.data
                try:
                    data = conn.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    conn.received += data
                    continue
                self._close(conn, record=True)
                if not self._stop.is_set():
                    self._open(conn.kind)  # at once, as an attacker would
            now = time.monotonic()
            for conn in list(self._conns.values()):
                if conn.kind == "slow" and now >= conn.due:
                    conn.due = now + self.interval
                    try:
                        conn.sock.send(b"\x00" if self.tls else b"a")
                    except OSError:
                        pass  # the read side notices the close


@dataclass
class Probe:
    """``GET /v2/catalog`` with good credentials, each on a new connection: statuses and latencies."""

    statuses: list[int | str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def ask(self, get: Callable[[], int], timeout_label: str = "no answer") -> None:
        t0 = time.monotonic()
        try:
            status: int | str = get()
        except Exception as exc:  # any failure is a missed answer, named in the figures
            status = f"{timeout_label}: {type(exc).__name__}"
        self.statuses.append(status)
        self.latencies.append(time.monotonic() - t0)

    @property
    def answered(self) -> int:
        return sum(1 for s in self.statuses if s == 200)


def summary(probe: Probe, attack: Attack) -> str:
    lat = sorted(probe.latencies)
    lines = [f"catalog: {probe.answered} of {len(probe.statuses)} answered 200; latency median "
             f"{statistics.median(lat) * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms" if lat else "catalog: none asked"]
    for kind, values in attack.lifetimes.items():
        if values:
            lines.append(f"{kind} connections closed by the server: {len(values)}, after {min(values):.1f}-"
                         f"{max(values):.1f} s (median {statistics.median(values):.1f} s)")
        else:
            lines.append(f"{kind} connections closed by the server: none")
    lines.append(f"open at the end: {attack.open_at_stop}; failed connection attempts: {attack.refused}")
    return "\n".join(lines)


def _catalog_getter(url: str, user: str, password: str) -> Callable[[], int]:
    import http.client

    parts = urlsplit(url)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "X-Broker-API-Version": "2.17", "Connection": "close"}

    def get() -> int:
        if parts.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=10,
                                                                           context=ctx)
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            conn.request("GET", "/v2/catalog", headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    return get


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running broker (default: start one)")
    ap.add_argument("--user", default="bench")
    ap.add_argument("--password", default="bench")
    ap.add_argument("--slow", type=int, default=50)
    ap.add_argument("--idle", type=int, default=50)
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between two bytes of a slow client")
    ap.add_argument("--asks", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=45.0, help="how long the attack lasts")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the started broker")
    args = ap.parse_args()
    server = None
    url = args.url
    if url is None:
        import tempfile

        from bench.run import ours

        tmp = tempfile.mkdtemp(prefix="drbench-slow-")
        server = ours("ours", f"sqlite:///{tmp}/state.db")
        server.env.update(dict(e.split("=", 1) for e in args.env))
        server.start()
        url = f"http://127.0.0.1:{server.port}"
    parts = urlsplit(url)
    try:
        attack = Attack(parts.hostname or "127.0.0.1", parts.port or 80, args.slow, args.idle, args.interval,
                        tls=parts.scheme == "https").start()
        time.sleep(min(2.0, args.interval * 1.5))  # every slow client has sent its request line and a byte
        probe = Probe()
        get = _catalog_getter(url, args.user, args.password)
        began = time.monotonic()
        for i in range(args.asks):
            time.sleep(max(0.0, began + i * args.seconds / args.asks - time.monotonic()))
            probe.ask(get)
        time.sleep(max(0.0, began + args.seconds - time.monotonic()))
        attack.stop()
        lasted = time.monotonic() - began  # longer than --seconds when asks wait for their timeout
        print(f"{args.slow} slow clients (a byte every {args.interval:g} s) and {args.idle} idle connections "
              f"for {lasted:.0f} s against {url}, pid {os.getpid()}:")
        print(summary(probe, attack))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
