"""Signed, expiring dashboard links: ``?exp=<unix time>&sig=<HMAC-SHA256(instance id, exp)>``.

The secret is ``DRBROKER_DASHBOARD_SECRET`` (share it between replicas) or a key generated once beside the
database (mode 0600). A link opens one instance's dashboard until it expires; anything else needs the
broker's own authentication.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from urllib.parse import quote, urlencode

KEY_FILE = "dashboard.key"


def load_or_create_secret(state_dir: Path, configured: str | None = None) -> bytes:
    if configured:
        return configured.encode()
    path = state_dir / KEY_FILE
    if path.exists():
        return path.read_bytes().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    value = secrets.token_urlsafe(32).encode()
    with os.fdopen(fd, "wb") as fh:
        fh.write(value)
    return value


def _sig(secret: bytes, instance_id: str, exp: int) -> str:
    mac = hmac.new(secret, f"{instance_id}\n{exp}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def signed_query(secret: bytes, instance_id: str, ttl_seconds: int, now: float | None = None) -> str:
    exp = int((now if now is not None else time.time()) + ttl_seconds)
    return urlencode({"exp": exp, "sig": _sig(secret, instance_id, exp)})


def signed_url(base_url: str, secret: bytes, instance_id: str, ttl_seconds: int) -> str:
    path = f"{base_url.rstrip('/')}/dashboard/instances/{quote(instance_id, safe='')}"
    return f"{path}?{signed_query(secret, instance_id, ttl_seconds)}"


def verify(secret: bytes, instance_id: str, exp: str | None, sig: str | None, now: float | None = None) -> bool:
    if not exp or not sig or not exp.isdigit():
        return False
    if int(exp) < (now if now is not None else time.time()):
        return False
    return hmac.compare_digest(_sig(secret, instance_id, int(exp)), sig)
