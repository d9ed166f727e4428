"""COS fixtures: a real S3-compatible server (moto in server mode) on loopback, one bucket per test with
object lock enabled, and a TCP proxy in front of it that can stall an upload so that a kill lands mid-upload."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import broker_factory, client_for, free_port  # noqa: F401  (the real-process fixtures)

ACCESS_KEY, SECRET_KEY = "drbroker-test-access-key", "drbroker-test-secret-key-0123456789"


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``moto_server`` process on a free loopback port, killed by its pid at the end of the session."""
    server = Path(sys.executable).with_name("moto_server")
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    for _ in range(3):
        port = free_port()
        log = log_path.open("ab")
        proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                requests.get(f"{url}/moto-api/", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        if proc.poll() is None:
            break
        log.close()
    else:
        raise AssertionError(f"moto_server did not start:\n{log_path.read_text()[-3000:]}")
    yield url
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    log.close()


def s3(url: str) -> Any:
    import ibm_boto3
    from ibm_botocore.client import Config

    return ibm_boto3.client("s3", endpoint_url=url, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                            region_name="us-east-1", config=Config(signature_version="s3v4"))


def cos_env(url: str, bucket: str, **extra: str) -> dict[str, str]:
    return {"DRBROKER_COS_ENDPOINT": url, "DRBROKER_COS_BUCKET": bucket, "DRBROKER_COS_PREFIX": "drb",
            "DRBROKER_COS_ACCESS_KEY_ID": ACCESS_KEY, "DRBROKER_COS_SECRET_ACCESS_KEY": SECRET_KEY,
            "DRBROKER_COS_RETENTION_DAYS": "1", **extra}


@pytest.fixture
def bucket(moto_url: str) -> str:
    """A new bucket with object lock enabled (so also versioned: a second PUT of a key is a second version)."""
    name = f"dr-{uuid.uuid4().hex[:12]}"
    s3(moto_url).create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def versions(url: str, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every version of every object under ``prefix`` (a duplicate PUT shows here even when keys are equal)."""
    out: list[dict[str, Any]] = []
    args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = s3(url).list_object_versions(**args)
        out += page.get("Versions") or []
        if not page.get("IsTruncated"):
            return out
        args.update(KeyMarker=page["NextKeyMarker"], VersionIdMarker=page["NextVersionIdMarker"])


def read_lines(url: str, bucket: str, key: str, version: str | None = None) -> list[dict[str, Any]]:
    import json

    args = {"Bucket": bucket, "Key": key, **({"VersionId": version} if version else {})}
    body = s3(url).get_object(**args)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines()]


class StallingProxy:
    """A loopback TCP proxy in front of moto. ``stall(mode, match)`` makes the next request whose head contains
    ``match`` stall: ``"request"`` forwards its head but none of its body (the upload never completes),
    ``"response"`` forwards the whole request but holds the answer (the object is stored, the client never
    hears). ``stalled`` is set when that happens."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(50)
        self.port = self.sock.getsockname()[1]
        self.mode: str | None = None
        self.match = b""
        self.stalled = threading.Event()
        self._closed = False
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stall(self, mode: str | None, match: bytes = b"") -> None:
        self.mode, self.match = mode, match
        self.stalled.clear()

    def close(self) -> None:
        self._closed = True
        for s in [self.sock, *self._conns]:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self._conns += [client, upstream]
            hold = threading.Event()  # set: stop forwarding the answer on this connection
            threading.Thread(target=self._up, args=(client, upstream, hold), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, hold), daemon=True).start()

    def _up(self, src: socket.socket, dst: socket.socket, hold: threading.Event) -> None:
        # Follows the requests on the connection (head, then Content-Length bytes of body) to find the one
        # to stall.
        buffer, remaining = b"", 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                buffer += data
                while buffer:
                    if remaining > 0:
                        chunk, buffer = buffer[:remaining], buffer[remaining:]
                        dst.sendall(chunk)
                        remaining -= len(chunk)
                        continue
                    head_end = buffer.find(b"\r\n\r\n")
                    if head_end < 0:
                        break
                    head, buffer = buffer[:head_end + 4], buffer[head_end + 4:]
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            remaining = int(line.split(b":", 1)[1])
                    if self.mode and not self.stalled.is_set() and self.match in head:
                        if self.mode == "request":
                            dst.sendall(head)  # the head, never the body
                            self.stalled.set()
                            while src.recv(65536):  # swallow the body until the client dies
                                pass
                            return
                        hold.set()  # "response": the server gets everything, the client nothing back
                    dst.sendall(head)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _down(self, src: socket.socket, dst: socket.socket, hold: threading.Event) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if hold.is_set():
                    if b" 200 OK" in data:  # the server answered the held request: it has stored the object
                        self.stalled.set()
                    continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def proxy(moto_url: str) -> Iterator[StallingProxy]:
    p = StallingProxy(int(moto_url.rsplit(":", 1)[1]))
    yield p
    p.close()
