"""Fixtures for the security tests: an IAM stand-in serving a JWKS over real loopback HTTP, token minting,
and real ``drbroker serve`` processes (HTTP or HTTPS)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.e2e.conftest import base_env, drbroker_command, free_port

BROKER_CRN = ("crn:v1:bluemix:public:resource-controller::a/0123456789abcdef0123456789abcdef::resource-broker:"
              "1f4a9711-e359-4e00-8ad3-c8bfd38446b3")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class FakeIam:
    """IAM's ``/identity/keys`` on 127.0.0.1 (a real ``http.server`` in a thread), with keys it can rotate."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: list[str] = []
        self.requests = 0
        self.delay = 0.0  # seconds each key set request takes (a slow IAM)
        iam = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/identity/keys":
                    self.send_error(404)
                    return
                iam.requests += 1
                time.sleep(iam.delay)
                jwks = []
                for kid in iam.published:
                    jwk = json.loads(RSAAlgorithm.to_jwk(iam.keys[kid].public_key()))
                    jwks.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
                body = json.dumps({"keys": jwks}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add_key(self, kid: str, *, publish: bool = True) -> rsa.RSAPrivateKey:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if publish:
            self.published.append(kid)
        return self.keys[kid]

    def rotate(self, new_kid: str) -> None:
        """IAM publishes a new key and stops publishing the old ones."""
        self.add_key(new_kid, publish=False)
        self.published = [new_kid]

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {"iam_id": f"crn-{BROKER_CRN}", "id": f"crn-{BROKER_CRN}", "realmid": "crn",
                "sub": f"crn-{BROKER_CRN}", "sub_type": "CRN", "iss": f"{self.url}/identity",
                "iat": now, "exp": now + 3600, "grant_type": "urn:ibm:params:oauth:grant-type:cr-token"}
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def token(self, kid: str | None = None, **claims: Any) -> str:
        kid = kid or self.published[0]
        return jwt.encode(self.claims(**claims), self.keys[kid], algorithm="RS256", headers={"kid": kid})

    def public_pem(self, kid: str) -> bytes:
        return self.keys[kid].public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)

    @staticmethod
    def unsigned(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None = None) -> str:
        """A token built by hand: ``alg: none`` (no signature) or HMAC-SHA256 with ``secret``."""
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        if secret is None:
            return signing_input + "."
        return signing_input + "." + b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def iam() -> Iterator[FakeIam]:
    server = FakeIam()
    server.add_key("iam-key-1")
    yield server
    server.close()


class Server:
    """One real ``drbroker serve`` process group (HTTP or HTTPS)."""

    def __init__(self, env: dict[str, str], cwd: Path, log_path: Path, args: list[str], scheme: str,
                 verify: Any) -> None:
        self.env, self.cwd, self.log_path, self.args = env, cwd, log_path, args
        self.scheme, self.verify = scheme, verify
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> Server:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*drbroker_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
                env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if requests.get(f"{self.url}/healthz", timeout=2, verify=self.verify).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"drbroker serve did not become healthy:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve(db_path, *args, verify=..., **DRBROKER_settings)`` starts a real broker; all are stopped at the end."""
    started: list[Server] = []

    def start(db_path: Path, *args: str, scheme: str = "http", verify: Any = True, **overrides: str) -> Server:
        env = base_env(db_path)
        env.update({k: str(v) for k, v in overrides.items()})
        server = Server(env, tmp_path, tmp_path / f"server-{len(started) + 1}.log", list(args), scheme, verify)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
