"""The front's own answers (malformed, oversized or too slow requests), as OSB errors in JSON.

waitress answers these before the app sees the request, in plain text naming waitress; here they become
``{"error": ..., "description": ...}`` like every other refusal. A description never repeats bytes of the
request (waitress quotes a malformed header line, which may be an ``Authorization`` header).
"""

from __future__ import annotations

import io
import json
from typing import Any

from waitress.task import ErrorTask, WSGITask
from waitress.utilities import (
    BadRequest,
    Error,
    InternalServerError,
    RequestEntityTooLarge,
    RequestHeaderFieldsTooLarge,
    ServerNotImplemented,
)

from broker.front.settings import MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_TARGET_BYTES


class RequestTimeout(Error):
    code = 408
    reason = "Request Timeout"


class URITooLong(Error):
    code = 414
    reason = "URI Too Long"


# waitress's parse errors that carry no request bytes, and the part of the request each is about.
_BAD_REQUEST_FIELDS = {
    "Content-Length is invalid": "Content-Length: not a whole number of bytes",
    "Chunk not properly terminated": "body: a chunk of the chunked transfer coding is not terminated",
    "Invalid chunk extension": "body: invalid chunk extension in the chunked transfer coding",
    "Invalid chunk size": "body: invalid chunk size in the chunked transfer coding",
    "Bad URI": "request target: not a valid URI",
    "Start line is invalid": "request line: not METHOD TARGET HTTP/VERSION",
    "Malformed HTTP method": "request line: the method is not an upper-case token",
    "Bare CR or LF found in HTTP message": "request line: bare CR or LF",
    "Bare CR or LF found in header line": "headers: bare CR or LF in a header line",
    "Malformed header line": "headers: a continuation line without a header before it",
    "Invalid header": "headers: a line that is not name: value",
    "HTTP message header invalid": "headers: not terminated by CRLF",
}


def osb_error(error: Error) -> tuple[str, bytes]:
    """The status line and JSON body for one of waitress's errors (or ours)."""
    if isinstance(error, RequestTimeout):
        code, description = "RequestTimeout", str(error.body)
    elif isinstance(error, URITooLong):
        code, description = "URITooLong", f"request target: longer than {MAX_TARGET_BYTES} bytes"
    elif isinstance(error, RequestHeaderFieldsTooLarge):
        code, description = "RequestHeaderFieldsTooLarge", \
            f"headers: the request line and headers are larger than {MAX_HEADER_BYTES} bytes"
    elif isinstance(error, RequestEntityTooLarge):
        # The same answer the app gives for a body over its limit.
        code, description = "PayloadTooLarge", f"body: larger than {MAX_BODY_BYTES} bytes"
    elif isinstance(error, BadRequest):
        message = str(error.body).split(' "', 1)[0]
        code, description = "BadRequest", _BAD_REQUEST_FIELDS.get(message, "request: malformed HTTP/1.1")
    elif isinstance(error, ServerNotImplemented):
        code, description = "NotImplemented", "Transfer-Encoding: only chunked is supported"
    elif isinstance(error, InternalServerError):
        code, description = "InternalError", "the broker hit an unexpected error; it has been logged"
    else:
        code, description = error.reason.replace(" ", ""), error.reason
    body = json.dumps({"error": code, "description": description}).encode()
    return f"{error.code} {error.reason}", body


def error_response(error: Error, version: str = "1.1") -> bytes:
    """A whole HTTP response for ``error`` that closes the connection, for writing without a task."""
    status, body = osb_error(error)
    version = version if version in ("1.0", "1.1") else "1.0"
    head = (f"HTTP/{version} {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("latin-1") + body


class OsbErrorTask(ErrorTask):
    """waitress's error task, answering in OSB JSON; the channel lingers after it (see FrontChannel)."""

    def execute(self) -> None:
        status, body = osb_error(self.request.error)
        self.status = status
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.channel.linger_after_close = True
        self.channel.server.front.count(status.split(" ", 1)[0])
        self.write(body)


class OversizedBodyTask(WSGITask):
    """A request whose body is over the limit goes to the app all the same, with its headers and none of its
    body: the app refuses it (413) as it refuses any oversized body, and so records and counts it as a refused
    request (docs/security.md, "Refused requests"). Then the connection is closed."""

    def get_environment(self) -> dict[str, Any]:
        request = self.request
        # What the client announced or, for a chunked body, what it had sent when the front stopped reading.
        request.headers["CONTENT_LENGTH"] = str(max(request.content_length, request.body_bytes_received))
        request.headers["CONNECTION"] = "close"
        environ: dict[str, Any] = super().get_environment()
        environ["wsgi.input"] = io.BytesIO()
        return environ

    def execute(self) -> None:
        self.channel.linger_after_close = True
        super().execute()
        self.set_close_on_finish()


def error_task(channel: Any, request: Any) -> ErrorTask | WSGITask:
    """The task for a request waitress marked as an error (``HTTPChannel.error_task_class``)."""
    if type(request.error) is RequestEntityTooLarge and getattr(request, "command", None):
        return OversizedBodyTask(channel, request)
    return OsbErrorTask(channel, request)
