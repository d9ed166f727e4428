"""The ibmcloud backend's one error boundary: every IBM API and transport error maps to a domain error."""

from __future__ import annotations

import email.utils
import inspect
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from ibm_cloud_sdk_core import ApiException, BaseService, DetailedResponse
from ibm_cloud_sdk_core.authenticators import NoAuthAuthenticator

from broker.domain.errors import PermanentBackendError, TransientBackendError
from broker.orchestrators.ibmcloud import errors
from broker.orchestrators.ibmcloud.errors import (
    EXCEPTION_RULES,
    call,
    collecting,
    retry_after_seconds,
    to_domain,
)


def _requests_exception_classes() -> list[type[BaseException]]:
    return [cls for _, cls in inspect.getmembers(requests.exceptions, inspect.isclass)
            if issubclass(cls, requests.exceptions.RequestException)]


def test_every_requests_exception_class_is_listed_explicitly() -> None:
    # A new exception class in a requests upgrade must get its own decision here, not an inherited one.
    unlisted = [c.__name__ for c in _requests_exception_classes() if c not in EXCEPTION_RULES]
    assert not unlisted, f"add these to errors.EXCEPTION_RULES: {unlisted}"


@pytest.mark.parametrize("cls", _requests_exception_classes(), ids=lambda c: c.__name__)
def test_every_transport_error_becomes_a_domain_error(cls: type[BaseException]) -> None:
    exc = cls("boom", "{", 0) if issubclass(cls, ValueError) and cls.__name__ == "JSONDecodeError" else cls("boom")
    mapped = to_domain(exc, "PowerVS GET /volumes")
    assert isinstance(mapped, TransientBackendError | PermanentBackendError)
    assert "PowerVS GET /volumes" in mapped.description


# What each status means for a retry, written down independently of errors.STATUS_RULES: an expired or
# revoked IAM token (401, after one refresh), a request timeout (408), a locked resource (423), too early
# (425), throttling (429) and every 5xx are worth retrying; every other 4xx will fail the same way again.
TRANSIENT_4XX = {401, 408, 423, 425, 429}


def expected_transient(status: int) -> bool:
    return status >= 500 or status in TRANSIENT_4XX


class _StatusHandler(BaseHTTPRequestHandler):
    """``GET /status/<code>[?retry_after=<value>]``: answers that status with an IBM-style error body, the
    platform's transaction id and, when asked, a ``Retry-After`` header."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        status = int(url.path.rsplit("/", 1)[-1])
        query = parse_qs(url.query)
        body = json.dumps({"errors": [{"code": f"code_{status}", "message": f"answer {status}"}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Global-Transaction-Id", f"txn-{status}")
        if "retry_after" in query:
            self.send_header("Retry-After", query["retry_after"][0])
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def status_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    # polls for shutdown every 10 ms, not socketserver's 0.5 s, which the teardown would wait out
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _get(service: BaseService, path: str) -> DetailedResponse:
    return service.send(service.prepare_request(method="GET", url=path))


def _service(url: str) -> BaseService:
    return BaseService(service_url=url, authenticator=NoAuthAuthenticator())


@pytest.mark.parametrize("status", range(400, 600))
def test_every_http_error_status_from_a_real_server_maps_as_documented(status_server: str, status: int) -> None:
    """A real HTTP answer of each status, through ibm-cloud-sdk-core and the real ``errors.call``: transient
    or permanent as the table above says, with the server's Retry-After and transaction id."""
    service = _service(status_server)
    hint = status % 10 + 1
    with collecting() as calls, pytest.raises((TransientBackendError, PermanentBackendError)) as raised:
        call("PowerVS GET /status", lambda: _get(service, f"/status/{status}?retry_after={hint}"))
    mapped = raised.value
    assert isinstance(mapped, TransientBackendError) is expected_transient(status), mapped.description
    assert mapped.description.startswith(f"PowerVS GET /status: {status} ")
    assert f"code_{status}: answer {status}" in mapped.description and "txn-" + str(status) in mapped.description
    if isinstance(mapped, TransientBackendError):
        assert mapped.retry_after == float(hint)
    assert calls == [{"call": "PowerVS GET /status", "status": status, "transaction_id": f"txn-{status}"}]


@pytest.mark.parametrize("status", [429, 503])
def test_a_transient_answer_without_retry_after_carries_no_hint(status_server: str, status: int) -> None:
    with pytest.raises(TransientBackendError) as raised:
        call("GET", lambda: _get(_service(status_server), f"/status/{status}"))
    assert raised.value.retry_after is None


def test_retry_after_as_an_http_date_from_a_real_server(status_server: str) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    with pytest.raises(TransientBackendError) as raised:
        call("GET", lambda: _get(_service(status_server), f"/status/503?retry_after={quote(when)}"))
    assert raised.value.retry_after is not None and 25 <= raised.value.retry_after <= 31


def test_an_allowed_status_from_a_real_server_is_an_answer(status_server: str) -> None:
    with collecting() as calls:
        assert call("GET", lambda: _get(_service(status_server), "/status/404"), allow=(404,)) is None
    assert calls[0]["status"] == 404 and calls[0]["transaction_id"] == "txn-404"


def test_nothing_listening_is_transient_through_the_sdk() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransientBackendError) as raised:
        call("PowerVS GET /volumes", lambda: _get(_service(f"http://127.0.0.1:{port}"), "/volumes"))
    assert raised.value.description.startswith("PowerVS GET /volumes: connection failed")


@pytest.mark.parametrize(("exc", "transient"), [
    (requests.exceptions.ConnectTimeout(), True), (requests.exceptions.ReadTimeout(), True),
    (requests.exceptions.ConnectionError(), True), (ConnectionResetError(), True), (TimeoutError(), True),
    (requests.exceptions.SSLError(), False), (requests.exceptions.InvalidURL(), False),
    (ValueError("bad argument"), False)])
def test_transport_errors(exc: BaseException, transient: bool) -> None:
    assert isinstance(to_domain(exc, "x"), TransientBackendError) is transient


def test_an_exception_outside_the_tables_is_not_swallowed() -> None:
    with pytest.raises(TypeError, match="no error rule"):
        to_domain(KeyError("a bug"), "x")


def _response(status: int, headers: dict[str, str], body: bytes = b"{}") -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp.headers.update({"Content-Type": "application/json", **headers})
    resp._content = body
    return resp


def test_throttling_carries_retry_after_and_the_transaction_id() -> None:
    resp = _response(429, {"Retry-After": "7", "X-Global-Transaction-Id": "txn-429"},
                     b'{"errors": [{"code": "rate_limited", "message": "slow down"}]}')
    mapped = to_domain(ApiException(429, http_response=resp), "IAM POST /v1/policies")
    assert isinstance(mapped, TransientBackendError)
    assert mapped.retry_after == 7.0
    assert "txn-429" in mapped.description and "rate_limited" in mapped.description


def test_key_protect_error_body_is_read() -> None:
    body = (b'{"metadata": {"collectionType": "application/vnd.ibm.kms.error+json", "collectionTotal": 1},'
            b'"resources": [{"errorMsg": "Conflict: ring holds keys", "reasons": [{"code": "KEY_RING_KEYS_NOT_DELETED",'
            b'"status": 409}]}]}')
    mapped = to_domain(ApiException(409, http_response=_response(409, {"Correlation-Id": "c-1"}, body)), "Key Protect")
    assert isinstance(mapped, PermanentBackendError)
    assert "KEY_RING_KEYS_NOT_DELETED" in mapped.description and "c-1" in mapped.description


def test_retry_after_http_date_and_garbage() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_call_records_transaction_ids_and_allows_answers() -> None:
    ok = DetailedResponse(response={}, headers={"X-Global-Transaction-Id": "txn-ok"}, status_code=200)
    with collecting() as calls:
        assert call("GET a", lambda: ok) is ok

        def missing() -> DetailedResponse:
            raise ApiException(404, http_response=_response(404, {"X-Global-Transaction-Id": "txn-404"}))
        assert call("GET b", missing, allow=(404,)) is None
    assert [c["transaction_id"] for c in calls] == ["txn-ok", "txn-404"]


def test_call_refreshes_the_token_once_on_401() -> None:
    class Manager:
        def __init__(self) -> None:
            import threading

            self.lock = threading.Lock()
            self.access_token, self.expire_time, self.refresh_time = "old", 9e9, 9e9

    class Auth:
        token_manager = Manager()

    attempts = []

    def flaky() -> DetailedResponse:
        attempts.append(Auth.token_manager.access_token)
        if len(attempts) == 1:
            raise ApiException(401, http_response=_response(401, {}))
        return DetailedResponse(response={}, headers={}, status_code=200)

    assert call("GET c", flaky, authenticator=Auth()) is not None
    assert attempts == ["old", None]  # the cached token was dropped before the retry


def test_the_tables_cover_what_call_catches() -> None:
    assert set(errors._CAUGHT) == set(EXCEPTION_RULES)
