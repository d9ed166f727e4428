"""Defence in depth for logs: a filter that scrubs secrets from every record before a handler writes it.

The broker never logs request headers, bodies, parameters or credentials in the first place (tests plant
secrets and search the logs for them). This filter is the second line, for what a library or a future
change might log:

- ``Authorization: Basic|Bearer ...`` and bare ``Basic ...``/``Bearer ...`` credentials;
- JSON Web Tokens (``eyJ...``);
- values of keys that name secrets (``password``, ``api_key``/``apikey``, ``token``, ``secret``,
  ``credentials``, ``wrapped_dek``, ``plaintext``, ``private_key``, ...) in JSON, dict reprs and ``k=v``
  text, nested objects included;
- sealed values (``enc:v1:...``) and literal secrets registered at start (configured passwords, key
  material) wherever they appear.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

MASK = "[REDACTED]"

_SENSITIVE_NAMES = (r"(?:password|passwd|pass|pwd|secret|client_secret|api[_-]?key|apikey|ibmcloud_api_key|"
                r"token|access_token|refresh_token|id_token|authorization|credentials|private[_-]?key|"
                r"wrapped_dek|dek|plaintext|ciphertext|key_material|material)")
# "key": <value> / 'key': <value> / key=<value> / key: <value>
_KEY_VALUE = re.compile(r"""(?P<key>["']?\b""" + _SENSITIVE_NAMES + r"""\b["']?)(?P<sep>\s*[:=]\s*)""", re.I)
_AUTH_SCHEME = re.compile(r"\b(?P<scheme>basic|bearer)\s+[A-Za-z0-9+/=._~-]{6,}", re.I)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_SEALED = re.compile(r"enc:v1:\{[^}]*\}?")

_literals: set[str] = set()
_literals_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Scrub this exact string from every log line from now on (configured passwords, key material)."""
    if value and len(value) >= 4:
        with _literals_lock:
            _literals.add(value)


def _value_end(text: str, start: int) -> int:
    """Where the value starting at ``start`` ends: a quoted string, a bracketed structure (nesting
    counted), or a bare word."""
    if start >= len(text):
        return start
    first = text[start]
    if first in "\"'":
        i = start + 1
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == first:
                return i + 1
            i += 1
        return len(text)
    if first in "{[(":
        depth, i, quote = 0, start, None
        while i < len(text):
            ch = text[i]
            if quote:
                if ch == "\\":
                    i += 1
                elif ch == quote:
                    quote = None
            elif ch in "\"'":
                quote = ch
            elif ch in "{[(":
                depth += 1
            elif ch in "}])":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return len(text)
    match = re.compile(r"[^\s,;&}\])]*").match(text, start)
    return match.end() if match else start


def write_only_values(parameters: Any, schema: Any) -> set[str]:
    """The values in ``parameters`` that ``schema`` marks ``writeOnly`` (an instance's own secrets), as text:
    passed to ``redact`` so that an error echoing them (an IBM body repeating the request) keeps none."""
    found: set[str] = set()

    def leaves(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                leaves(v)
        elif isinstance(value, list):
            for v in value:
                leaves(v)
        elif isinstance(value, str | int | float) and not isinstance(value, bool) and len(str(value)) >= 4:
            found.add(str(value))

    def walk(node: Any, value: Any) -> None:
        if not isinstance(node, dict) or value is None:
            return
        if node.get("writeOnly"):
            leaves(value)
            return
        if isinstance(value, dict):
            for name, sub in (node.get("properties") or {}).items():
                if name in value:
                    walk(sub, value[name])
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            for item in value:  # webhooks[].secret
                walk(node["items"], item)

    walk(schema or {}, parameters)
    return found


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the secrets this module recognises, and without each of ``secrets`` (literal values
    known to the caller, such as an instance's writeOnly parameters)."""
    if not text:
        return text
    with _literals_lock:
        literals = sorted(_literals | {s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
    for literal in literals:
        if literal in text:
            text = text.replace(literal, MASK)
    text = _SEALED.sub(MASK, text)
    text = _JWT.sub(MASK, text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group('scheme')} {MASK}", text)
    out, pos = [], 0
    for match in _KEY_VALUE.finditer(text):
        if match.start() < pos:
            continue
        value_start = match.end()
        value_end = _value_end(text, value_start)
        if value_end == value_start:
            continue
        out.append(text[pos:value_start])
        out.append(f'"{MASK}"' if text[value_start] in "\"'{[(" else MASK)
        pos = value_end
    out.append(text[pos:])
    return "".join(out)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and its traceback text) with ``redact``; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not hide the record
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def install(*loggers: logging.Logger) -> None:
    """Put the filter on every handler of these loggers (default: the root logger)."""
    for logger in loggers or (logging.getLogger(),):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(_FILTER)
