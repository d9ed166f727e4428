"""The redaction filter (defence in depth) and the logging set-up of ``drbroker serve``."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from broker.security import redaction
from broker.security.redaction import MASK, RedactingFilter, redact

JWT = ("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpZCI6ImNybi1jcm46djE6Ymx1ZW1peCJ9."
       "c2lnbmF0dXJlLW9mLXRoZS10b2tlbi12YWx1ZQ")


@pytest.mark.parametrize("line,secret", [
    ("Authorization: Basic cGxhdGZvcm06czNjcmV0LXBhc3M=", "cGxhdGZvcm06czNjcmV0LXBhc3M="),
    ("headers={'Authorization': 'Bearer abc.def.ghi-jkl'}", "abc.def.ghi-jkl"),
    (f"token {JWT} rejected", JWT),
    ('{"ibmcloud_api_key": "AKIA-very-secret-key", "rpo_target_minutes": 15}', "AKIA-very-secret-key"),
    ("{'orchestrator': {'name': 'k', 'password': 'hunter2-orch'}}", "hunter2-orch"),
    ('password=hunter2&user=x', "hunter2"),
    ("apikey: Zm9vYmFyYmF6", "Zm9vYmFyYmF6"),
    ('{"credentials": {"iam": {"apikey": "k-123456"}, "kms": {"wrapped_dek": "d3JhcHBlZA=="}}}', "k-123456"),
    ('{"credentials": {"iam": {"apikey": "k-123456"}, "kms": {"wrapped_dek": "d3JhcHBlZA=="}}}', "d3JhcHBlZA=="),
    ("row ('i-1', 'enc:v1:{\"k\":\"k-1\",\"w\":\"AAAA\",\"n\":\"BBBB\",\"c\":\"CCCC\"}')", "CCCC"),
    ("b'{\"password\": \"in-a-bytes-repr\"}'", "in-a-bytes-repr"),
    ("client_secret = 's3cr3t-value'", "s3cr3t-value"),
])
def test_secrets_are_scrubbed(line: str, secret: str) -> None:
    out = redact(line)
    assert secret not in out and MASK in out, out


def test_ordinary_lines_are_left_alone() -> None:
    for line in ("operation 4f2 (provision i-1) succeeded: provisioned; replication consistent_copying",
                 "step 3/7: enabling replication (43%)", "credentials_issued=True for b-1",
                 "IAM key set fetched from http://127.0.0.1:5/identity/keys: 2 key(s)"):
        assert redact(line) == line


def test_registered_literals_are_scrubbed_anywhere() -> None:
    redaction.register_secret("literal-Secret-Value-42")
    assert redact("the value literal-Secret-Value-42 appeared") == f"the value {MASK} appeared"


@pytest.fixture
def stream_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    logger = logging.getLogger("drbroker.test.redaction")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    redaction.install(logger)
    yield logger, stream
    logger.removeHandler(handler)


def test_the_filter_scrubs_messages_args_and_tracebacks(stream_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = stream_logger
    logger.debug("request headers %s", {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="})
    try:
        raise ValueError("bad value {'password': 'in-a-traceback'}")
    except ValueError:
        logger.exception("failed with %s", JWT)
    out = stream.getvalue()
    for secret in ("dXNlcjpwYXNzd29yZA==", "in-a-traceback", JWT):
        assert secret not in out
    assert "Traceback" in out and "ValueError" in out
    assert all(isinstance(f, RedactingFilter) for f in logger.handlers[0].filters)


_SERVER_LOGGING = r"""
import logging, sys
from flask import Flask
from broker.server import configure_logging, RedactingGunicornLogger
configure_logging("DEBUG")
# openbrokerapi's blueprint dumps every header and the body at DEBUG; run exactly that code.
from openbrokerapi.request_filter import print_request
app = Flask("x")
headers = {"Authorization": "Basic cGxhdGZvcm06b2JhLWxlYWstcGFzcw==", "X-Broker-API-Version": "2.17"}
body = b'{"parameters": {"ibmcloud_api_key": "oba-leak-key"}}'
with app.test_request_context("/v2/catalog", headers=headers, data=body):
    print_request()                                      # pinned to WARNING: nothing
    logging.getLogger("openbrokerapi").setLevel(logging.DEBUG)
    print_request()                                      # let through on purpose: scrubbed
logging.getLogger("sqlalchemy.engine.Engine").info("SELECT 1")   # pinned to WARNING: nothing
logging.getLogger("drbroker").debug("debug is on")
from gunicorn.config import Config
glog = RedactingGunicornLogger(Config())
glog.error("gunicorn says Authorization: Bearer gunicorn-leak-token")
"""


def test_serve_logging_neutralises_openbrokerapi_dump_and_sqlalchemy_echo() -> None:
    out = subprocess.run([sys.executable, "-c", _SERVER_LOGGING], capture_output=True, text=True, timeout=60,
                         check=True)
    logs = out.stdout + out.stderr
    assert "debug is on" in logs  # DEBUG really was on
    assert "--- Header" in logs  # openbrokerapi's dump ran (the second time)...
    for secret in ("cGxhdGZvcm06b2JhLWxlYWstcGFzcw==", "oba-leak-key", "gunicorn-leak-token"):
        assert secret not in logs  # ...without a secret in it
    assert "gunicorn says" in logs
    assert "SELECT 1" not in logs
    assert logs.count("--- Header") == 1


_JSON_LOGGING = r"""
import logging
from broker.server import configure_logging
configure_logging("DEBUG", "json")
try:
    raise RuntimeError("failed with {'password': 'json-traceback-secret'}")
except RuntimeError:
    logging.getLogger("drbroker").exception("request with Authorization: Basic anNvbi1sZWFrLWF1dGg=")
"""


def test_json_logs_are_scrubbed_too_tracebacks_included() -> None:
    out = subprocess.run([sys.executable, "-c", _JSON_LOGGING], capture_output=True, text=True, timeout=60,
                         check=True)
    logs = out.stdout + out.stderr
    assert '"exception"' in logs and "RuntimeError" in logs
    for secret in ("json-traceback-secret", "anNvbi1sZWFrLWF1dGg="):
        assert secret not in logs
