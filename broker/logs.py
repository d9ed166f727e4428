"""Log formats: text (default) or one JSON object per line (``DRBROKER_LOG_FORMAT=json``), both carrying the
OSB request identity of the request being served, so a platform's request can be followed through the log."""

from __future__ import annotations

import json
import logging
import re
import time

from flask import g, has_request_context

# The identity is the client's header: bound what it can add to every log line, and keep it one printable token.
MAX_LOGGED_IDENTITY = 64
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")


def _request_identity() -> str | None:
    if has_request_context():
        ident = g.get("request_identity")
        if ident:
            return _UNPRINTABLE.sub("?", ident[:MAX_LOGGED_IDENTITY])
    return None


class RequestIdentityFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ident = _request_identity()
        record.request_identity = ident or "-"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        ident = getattr(record, "request_identity", None)
        if ident and ident != "-":
            entry["request_identity"] = ident
        if record.exc_info or record.exc_text:
            # exc_text first: the redaction filter (broker.security.redaction) leaves the scrubbed traceback there.
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s [%(request_identity)s]: %(message)s"


def formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)
