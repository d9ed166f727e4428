"""The one error boundary between IBM Cloud's APIs and the broker's domain errors.

Every request the ibmcloud backend sends goes through ``call``. It maps what can go wrong to
``TransientBackendError`` (retried by the workflow engine, honouring ``Retry-After``) or
``PermanentBackendError`` (the operation fails and compensates), using two tables:

    STATUS_RULES      HTTP status of an ``ApiException`` -> rule (unlisted: 5xx transient, 4xx permanent)
    EXCEPTION_RULES   transport and client exception classes -> rule (looked up along the MRO)

``tests/orchestrators/test_ibmcloud_errors.py`` fails if a ``requests`` exception class is not listed
explicitly, so a new class in a library upgrade forces a decision here.

``call`` also captures IBM's transaction id of every response (``X-Global-Transaction-Id`` and the
service-specific ids) into the action's collector, so they reach the operation's step record.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
import urllib3.exceptions
from ibm_cloud_sdk_core import ApiException, DetailedResponse

from broker.domain.errors import BackendError, PermanentBackendError, TransientBackendError
from broker.security.redaction import redact

log = logging.getLogger(__name__)

T = TypeVar("T")

# Response headers that carry IBM's id for a request, in order of preference: the platform's global
# transaction id (set by IBM Cloud's edge on every API, read by ibm-cloud-sdk-core), the platform APIs'
# echoed Transaction-Id, Key Protect's Correlation-Id, and the request ids some services add.
TRANSACTION_HEADERS = ("X-Global-Transaction-Id", "Transaction-Id", "X-Correlation-Id", "Correlation-Id",
                       "X-Request-Id")


@dataclass(frozen=True)
class Rule:
    transient: bool
    why: str
    refresh_token: bool = False


def _t(why: str, **kw: Any) -> Rule:
    return Rule(True, why, **kw)


def _p(why: str) -> Rule:
    return Rule(False, why)


STATUS_RULES: dict[int, Rule] = {
    400: _p("bad request"),
    401: _t("IAM token expired or revoked (refreshed; retried)", refresh_token=True),
    403: _p("forbidden: the broker's identity lacks a role on this resource"),
    404: _p("not found"),
    405: _p("method not allowed"),
    408: _t("request timeout"),
    409: _p("conflict with the resource's state"),
    410: _p("gone"),
    412: _p("precondition failed"),
    413: _p("request too large"),
    415: _p("unsupported media type"),
    422: _p("unprocessable"),
    423: _t("resource locked by another operation"),
    425: _t("too early"),
    429: _t("throttled"),
    500: _t("internal server error"),
    502: _t("bad gateway"),
    503: _t("service unavailable"),
    504: _t("gateway timeout"),
}
DEFAULT_5XX = _t("server error")
DEFAULT_4XX = _p("client error")

_rx = requests.exceptions
EXCEPTION_RULES: dict[type[BaseException], Rule] = {
    # requests: every class it defines, listed explicitly (the test checks none is missing)
    _rx.RequestException: _t("request failed"),
    _rx.ConnectionError: _t("connection failed"),
    _rx.ConnectTimeout: _t("connect timeout"),
    _rx.ReadTimeout: _t("read timeout"),
    _rx.Timeout: _t("timeout"),
    _rx.ProxyError: _t("proxy error"),
    _rx.SSLError: _p("TLS error: check the endpoint and its certificate"),
    _rx.ChunkedEncodingError: _t("connection broken mid-body"),
    _rx.ContentDecodingError: _t("response body could not be decoded"),
    _rx.RetryError: _t("retries exhausted in the transport"),
    _rx.TooManyRedirects: _p("too many redirects"),
    _rx.HTTPError: _p("HTTP error"),
    _rx.URLRequired: _p("no URL"),
    _rx.MissingSchema: _p("endpoint URL has no scheme"),
    _rx.InvalidSchema: _p("endpoint URL has an unsupported scheme"),
    _rx.InvalidURL: _p("invalid endpoint URL"),
    _rx.InvalidProxyURL: _p("invalid proxy URL"),
    _rx.InvalidHeader: _p("invalid header"),
    _rx.InvalidJSONError: _p("request body is not JSON-serialisable"),
    _rx.JSONDecodeError: _t("response is not JSON (e.g. a proxy's error page)"),
    _rx.StreamConsumedError: _p("response stream consumed twice"),
    _rx.UnrewindableBodyError: _p("request body cannot be rewound"),
    # below requests: the socket and urllib3 errors it does not wrap
    urllib3.exceptions.HTTPError: _t("transport error"),
    ConnectionError: _t("connection reset or refused"),
    TimeoutError: _t("socket timeout"),
    # the SDK's own argument checks: a broker bug, not worth retrying
    ValueError: _p("the broker built an invalid request"),
}

_CAUGHT: tuple[type[BaseException], ...] = tuple(EXCEPTION_RULES)


def rule_for_status(status: int) -> Rule:
    return STATUS_RULES.get(status) or (DEFAULT_5XX if status >= 500 else DEFAULT_4XX)


def rule_for_exception(exc: BaseException) -> Rule | None:
    for cls in type(exc).__mro__:
        if cls in EXCEPTION_RULES:
            return EXCEPTION_RULES[cls]
    return None


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def transaction_id(headers: Any) -> str | None:
    if not headers:
        return None
    for name in TRANSACTION_HEADERS:
        value = headers.get(name)
        if value:
            return str(value)
    return None


def _error_detail(exc: ApiException) -> str:
    """The most useful words of an IBM error body (the services use four shapes)."""
    resp = exc.http_response
    if resp is None:
        return str(exc.message or "")
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or "")[:300]
    if isinstance(body, dict):
        if isinstance(body.get("errors"), list) and body["errors"]:  # platform APIs
            e = body["errors"][0]
            return f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
        if isinstance(body.get("resources"), list) and body["resources"]:  # Key Protect
            r = body["resources"][0]
            reasons = r.get("reasons") or [{}]
            return f"{reasons[0].get('code', '')}: {r.get('errorMsg', '')}".strip(": ")
        if "errorMessage" in body:  # IAM token endpoint
            return f"{body.get('errorCode', '')}: {body['errorMessage']}".strip(": ")
        for key in ("description", "message", "error"):  # PowerVS, DR Automation
            if body.get(key):
                return str(body[key])
    return json.dumps(body)[:300]


def to_domain(exc: BaseException, what: str) -> BackendError:
    """Map one exception to a domain error (the table lookup; no side effects)."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, ApiException):
        rule = rule_for_status(exc.status_code)
        headers = exc.http_response.headers if exc.http_response is not None else {}
        tid = transaction_id(headers) or exc.global_transaction_id
        # IBM's words may echo the request (passwords, API keys): redacted here, and again by the engine with
        # the instance's own writeOnly values before the text reaches an operation or a log.
        text = f"{what}: {exc.status_code} {rule.why}: {redact(_error_detail(exc))}"
        if tid:
            text += f" (IBM transaction {tid})"
        if rule.transient:
            return TransientBackendError(text, retry_after=retry_after_seconds(headers.get("Retry-After")))
        return PermanentBackendError(text)
    rule = rule_for_exception(exc)
    if rule is None:
        raise TypeError(f"no error rule for {type(exc).__name__}") from exc
    text = f"{what}: {rule.why} ({type(exc).__name__}: {redact(str(exc))[:200]})"
    return TransientBackendError(text) if rule.transient else PermanentBackendError(text)


# transaction ids -----------------------------------------------------------------------------------
_collector: ContextVar[list[dict[str, Any]] | None] = ContextVar("ibm_transactions", default=None)


@contextlib.contextmanager
def collecting() -> Iterator[list[dict[str, Any]]]:
    """Collect the transaction id of every IBM call made inside the block."""
    calls: list[dict[str, Any]] = []
    token = _collector.set(calls)
    try:
        yield calls
    finally:
        _collector.reset(token)


def _record(what: str, status: int | None, tid: str | None) -> None:
    calls = _collector.get()
    if calls is not None:
        calls.append({"call": what, "status": status, "transaction_id": tid})


def call(what: str, fn: Callable[[], DetailedResponse], *, allow: tuple[int, ...] = (),
         authenticator: Any = None) -> DetailedResponse | None:
    """Run one IBM API call through the boundary.

    ``allow``: statuses that are an answer rather than an error for this call (e.g. 404 when looking for
    something that may be gone); ``None`` is returned for them. A 401 refreshes the IAM token and retries
    once at once (an expired or revoked token); anything else is mapped by the tables.
    """
    for attempt in (1, 2):
        try:
            response = fn()
        except ApiException as exc:
            headers = exc.http_response.headers if exc.http_response is not None else {}
            _record(what, exc.status_code, transaction_id(headers) or exc.global_transaction_id)
            if exc.status_code in allow:
                return None
            if exc.status_code == 401 and attempt == 1 and _refresh(authenticator):
                log.info("%s: 401, IAM token refreshed; retrying once", what)
                continue
            raise to_domain(exc, what) from exc
        except _CAUGHT as exc:
            _record(what, None, None)
            raise to_domain(exc, what) from exc
        _record(what, response.get_status_code(), transaction_id(response.get_headers()))
        return response
    raise AssertionError("unreachable")  # pragma: no cover


def _refresh(authenticator: Any) -> bool:
    """Forget the cached IAM token so the next request fetches a new one."""
    manager = getattr(authenticator, "token_manager", None)
    if manager is None:
        return False
    # A trusted-profile token manager holds the broker's own token manager as its delegate: both go.
    for m in (manager, getattr(manager, "iam_delegate", None)):
        if m is not None:
            with m.lock:
                m.access_token = None
                m.expire_time = 0
                m.refresh_time = 0
    return True
