"""The ibmcloud backend's one error boundary: every IBM API and transport error maps to a domain error."""

from __future__ import annotations

import inspect

import pytest
import requests
from ibm_cloud_sdk_core import ApiException, DetailedResponse

from broker.domain.errors import PermanentBackendError, TransientBackendError
from broker.orchestrators.ibmcloud import errors
from broker.orchestrators.ibmcloud.errors import (
    EXCEPTION_RULES,
    call,
    collecting,
    retry_after_seconds,
    rule_for_status,
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


@pytest.mark.parametrize("status", range(400, 600))
def test_every_http_error_status_maps(status: int) -> None:
    mapped = to_domain(ApiException(status, message="x"), "Key Protect POST /keys")
    assert isinstance(mapped, TransientBackendError | PermanentBackendError)
    assert isinstance(mapped, TransientBackendError) == rule_for_status(status).transient


@pytest.mark.parametrize(("status", "transient"), [
    (400, False), (401, True), (403, False), (404, False), (408, True), (409, False), (422, False), (429, True),
    (500, True), (502, True), (503, True), (504, True), (599, True), (418, False)])
def test_documented_statuses(status: int, transient: bool) -> None:
    assert isinstance(to_domain(ApiException(status), "x"), TransientBackendError) is transient


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
