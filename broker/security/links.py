"""Signed, expiring dashboard links: ``?exp=<unix time>&sig=<HMAC-SHA256(instance id, exp)>``.

The secret is ``DRBROKER_DASHBOARD_SECRET`` (share it between replicas) or a key generated once beside the
database (mode 0600). A link opens one instance's dashboard until it expires; anything else needs the
broker's own authentication.

The signature is itsdangerous' ``Signer`` (HMAC-SHA256, URL-safe base64 without padding, constant-time
comparison, and a malformed signature is simply "bad", never an exception). ``TimestampSigner``'s
``max_age`` is not used: it is fixed by the verifier, while each link carries the lifetime its issuer chose
(``drbroker dashboard link --ttl``), so the expiry itself is signed and compared here.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path
from urllib.parse import quote, urlencode

from itsdangerous import Signer

from broker.security.filemodes import check_private, private_dir

KEY_FILE = "dashboard.key"


def _read_private(path: Path) -> bytes:
    check_private(path)  # raises InsecureFileError naming the chmod to run
    return path.read_bytes().strip()


def load_or_create_secret(state_dir: Path, configured: str | None = None) -> bytes:
    if configured:
        return configured.encode()
    path = state_dir / KEY_FILE
    if path.exists():
        return _read_private(path)
    private_dir(state_dir)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_private(path)
    value = secrets.token_urlsafe(32).encode()
    with os.fdopen(fd, "wb") as fh:
        fh.write(value)
    return value


def _signer(secret: bytes) -> Signer:
    # key_derivation "none": the HMAC key is the secret itself, so links signed before itsdangerous signed
    # them (the same HMAC-SHA256 over the same message) still open until they expire.
    return Signer(secret, digest_method=hashlib.sha256, key_derivation="none")


def _message(instance_id: str, exp: int) -> bytes:
    return f"{instance_id}\n{exp}".encode("utf-8", "surrogatepass")


def _sig(secret: bytes, instance_id: str, exp: int) -> str:
    return _signer(secret).get_signature(_message(instance_id, exp)).decode("ascii")


def signed_query(secret: bytes, instance_id: str, ttl_seconds: int, now: float | None = None) -> str:
    exp = int((now if now is not None else time.time()) + ttl_seconds)
    return urlencode({"exp": exp, "sig": _sig(secret, instance_id, exp)})


def signed_url(base_url: str, secret: bytes, instance_id: str, ttl_seconds: int) -> str:
    path = f"{base_url.rstrip('/')}/dashboard/instances/{quote(instance_id, safe='')}"
    return f"{path}?{signed_query(secret, instance_id, ttl_seconds)}"


def verify(secret: bytes, instance_id: str, exp: str | None, sig: str | None, now: float | None = None) -> bool:
    """True for a link signed for this instance that has not expired; False for anything else, malformed
    values included (``exp=²`` is a digit to ``str.isdigit`` but not to ``int``; ``sig=é`` is not base64)."""
    if not exp or not sig or not (exp.isascii() and exp.isdigit()) or len(exp) > 20:
        return False
    if int(exp) < (now if now is not None else time.time()):
        return False
    return _signer(secret).verify_signature(_message(instance_id, int(exp)), sig.encode("utf-8", "replace"))
