"""Webhook signatures, after the Standard Webhooks specification (standardwebhooks.com), and their check.

Each delivery carries three headers:

- ``webhook-id``: the DR event's id (the same on every retry, so a receiver can drop a duplicate);
- ``webhook-timestamp``: the Unix time of this attempt, in seconds;
- ``webhook-signature``: ``v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``.

The key is the subscription's ``secret`` as UTF-8 bytes; a secret of the form ``whsec_<base64>`` (what
Standard Webhooks libraries generate) is base64-decoded instead, so those libraries verify our deliveries.
``verify`` is the receiver's side: customers may copy it (it needs only the standard library).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, MutableMapping

TOLERANCE_SECONDS = 300


class VerificationError(Exception):
    """The delivery must be refused: bad or missing signature, stale timestamp, or a replay."""


def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode()


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def sign(secret: str, msg_id: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The three headers of one delivery attempt."""
    timestamp = int(time.time() if now is None else now)
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, msg_id, timestamp, body)}


def verify(headers: Mapping[str, str], body: bytes, secret: str, *, tolerance: float = TOLERANCE_SECONDS,
           seen: MutableMapping[str, float] | None = None, now: float | None = None) -> str:
    """Check one delivery; return its ``webhook-id`` or raise ``VerificationError``.

    ``headers`` may be any mapping (lookups are case-insensitive). ``seen`` remembers the ids accepted within
    the window (id -> timestamp): an id seen before is a replay and is refused; entries older than the window
    are dropped, since their timestamps would be refused as stale anyway.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, sigs = (lower.get("webhook-id"), lower.get("webhook-timestamp"),
                           lower.get("webhook-signature"))
    if not msg_id or not stamp or not sigs:
        raise VerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise VerificationError("webhook-timestamp is not a Unix time") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise VerificationError(f"webhook-timestamp is more than {tolerance:g} s from now")
    expected = signature(secret, msg_id, timestamp, body)
    # the header may hold several space-separated signatures (during a secret rotation)
    if not any(hmac.compare_digest(expected, candidate) for candidate in sigs.split()):
        raise VerificationError("no valid signature")
    if seen is not None:
        for old in [k for k, at in seen.items() if at < current - 2 * tolerance]:
            del seen[old]
        if msg_id in seen:
            raise VerificationError(f"webhook-id {msg_id} was delivered before (replay)")
        seen[msg_id] = timestamp
    return msg_id
