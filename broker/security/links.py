"""Signed, expiring dashboard links: ``?exp=<unix time>&sig=<HMAC-SHA256(instance id, exp)>``.

The secret is ``DRBROKER_DASHBOARD_SECRET`` (share it between replicas) or a key generated once beside the
database (mode 0600). A link opens one instance's dashboard until it expires; anything else needs the
broker's own authentication.

The signature is itsdangerous' ``Signer`` (HMAC-SHA256, URL-safe base64 without padding, constant-time
comparison, and a malformed signature is simply "bad", never an exception). ``TimestampSigner``'s
``max_age`` is not used: it is fixed by the verifier, while each link carries the lifetime its issuer chose
(``drbroker dashboard link --ttl``), so the expiry itself is signed and compared here.

Every link's lifetime is capped by ``DRBROKER_DASHBOARD_LINK_MAX_SECONDS`` twice: ``DashboardLinks`` refuses
to sign a longer one, and ``check`` refuses one whose expiry lies further ahead than the cap allows now (so
lowering the cap also ends the longer links already handed out). A correctly signed link past its expiry is
``EXPIRED``, which the dashboard answers with a page that says so; anything else that fails is ``INVALID``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from itsdangerous import Signer

from broker.security.filemodes import check_private, private_dir

if TYPE_CHECKING:
    from broker.config import Settings

KEY_FILE = "dashboard.key"
MAX_SECONDS_VARIABLE = "DRBROKER_DASHBOARD_LINK_MAX_SECONDS"
# Replicas' clocks differ a little: a link one replica signed with the full lifetime must open on the others.
CLOCK_SKEW_SECONDS = 300


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


class LinkCheck(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"  # signed by this broker for this instance, and past its expiry
    INVALID = "invalid"  # malformed, not signed by this broker, for another instance, or longer than the cap


def check(secret: bytes, instance_id: str, exp: str | None, sig: str | None, *, now: float | None = None,
          max_seconds: float | None = None) -> LinkCheck:
    """What a link's ``exp`` and ``sig`` are worth. The signature is checked first: only a link this broker
    signed for this instance can be called expired. Malformed values are ``INVALID`` (``exp=²`` is a digit to
    ``str.isdigit`` but not to ``int``; ``sig=é`` is not base64)."""
    if not exp or not sig or not (exp.isascii() and exp.isdigit()) or len(exp) > 20:
        return LinkCheck.INVALID
    expires = int(exp)
    if not _signer(secret).verify_signature(_message(instance_id, expires), sig.encode("utf-8", "replace")):
        return LinkCheck.INVALID
    at = now if now is not None else time.time()
    if expires < at:
        return LinkCheck.EXPIRED
    if max_seconds is not None and expires > at + max_seconds + CLOCK_SKEW_SECONDS:
        return LinkCheck.INVALID
    return LinkCheck.VALID


def verify(secret: bytes, instance_id: str, exp: str | None, sig: str | None, now: float | None = None) -> bool:
    """True for a link signed for this instance that has not expired; False for anything else."""
    return check(secret, instance_id, exp, sig, now=now) is LinkCheck.VALID


class LinkLifetimeError(ValueError):
    """A link asked to live longer than ``DRBROKER_DASHBOARD_LINK_MAX_SECONDS``."""


@dataclass
class DashboardLinks:
    """Issues and checks the dashboard links of one broker: its secret (read once, when first needed) and the
    longest lifetime it allows."""

    state_dir: Path
    configured_secret: str | None = None
    max_seconds: int = 86400
    _secret: bytes | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_seconds <= 0:
            raise LinkLifetimeError(f"{MAX_SECONDS_VARIABLE}={self.max_seconds}: must be a positive number of "
                                    "seconds")

    @classmethod
    def from_settings(cls, settings: Settings) -> DashboardLinks:
        return cls(state_dir=settings.state_dir, configured_secret=settings.dashboard_secret,
                   max_seconds=int(settings.dashboard_link_max_seconds))

    def secret(self) -> bytes:
        with self._lock:
            if self._secret is None:
                self._secret = load_or_create_secret(self.state_dir, self.configured_secret)
            return self._secret

    def lifetime(self, ttl_seconds: int | None) -> int:
        """The lifetime to sign with: the maximum when none is asked for; more than the maximum is refused."""
        if ttl_seconds is None:
            return self.max_seconds
        if ttl_seconds > self.max_seconds:
            raise LinkLifetimeError(f"--ttl {ttl_seconds}: a dashboard link may live at most {self.max_seconds} s "
                                    f"({MAX_SECONDS_VARIABLE})")
        return ttl_seconds

    def sign(self, page_url: str, instance_id: str, ttl_seconds: int | None = None, now: float | None = None) -> str:
        """``page_url`` (the instance's dashboard page, without a query) as a signed link."""
        return f"{page_url}?{signed_query(self.secret(), instance_id, self.lifetime(ttl_seconds), now)}"

    def url(self, base_url: str, instance_id: str, ttl_seconds: int | None = None) -> str:
        return signed_url(base_url, self.secret(), instance_id, self.lifetime(ttl_seconds))

    def check(self, instance_id: str, exp: str | None, sig: str | None, now: float | None = None) -> LinkCheck:
        return check(self.secret(), instance_id, exp, sig, now=now, max_seconds=self.max_seconds)
