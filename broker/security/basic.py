"""HTTP basic authentication against scrypt hashes, and the generated default credentials.

Passwords are never kept in plaintext: configured ones (``DRBROKER_PASSWORD``, ``DRBROKER_CREDENTIALS_FILE``)
are hashed when the broker starts, files may hold hashes only (``drbroker credentials hash``), and the
generated ``credentials.json`` holds the hash of a password printed once, when it is created.

A hash is ``scrypt$<n>$<r>$<p>$<salt b64>$<key b64>``; checks derive the key from the offered password and
compare with ``hmac.compare_digest``. A successful check is remembered (keyed by an HMAC of the header under
a per-process random key, never the header itself) for a few minutes, so a platform polling
``last_operation`` does not pay one scrypt per request; failures are never remembered.

Failures are counted per client address (``FailureBackoff``): an address that keeps failing is refused, 401
with ``Retry-After`` and without running scrypt, for a delay that grows with each further failure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachetools import TTLCache

from broker.domain.errors import Unauthorized
from broker.security.filemodes import InsecureFileError, check_private, private_dir

CREDENTIALS_FILE = "credentials.json"

# scrypt cost: n=2**14, r=8 is 16 MiB and tens of milliseconds per check; stored with each hash.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_MAXMEM = 256 * 1024 * 1024
_PROCESS_KEY = secrets.token_bytes(32)


class CredentialsError(Exception):
    """A credentials file or hash that cannot be used (the message names the file, never a password)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=_MAXMEM)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(key)}"


@dataclass(frozen=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def parse(cls, encoded: str) -> PasswordHash:
        try:
            scheme, n, r, p, salt, key = encoded.split("$")
            if scheme != "scrypt":
                raise ValueError
            parsed = cls(int(n), int(r), int(p), base64.b64decode(salt, validate=True),
                         base64.b64decode(key, validate=True))
        except (ValueError, binascii.Error):
            raise CredentialsError("not a password hash of the form scrypt$n$r$p$salt$key") from None
        if parsed.n < 2 or parsed.n & (parsed.n - 1) or not parsed.salt or len(parsed.key) < 16:
            raise CredentialsError("not a password hash of the form scrypt$n$r$p$salt$key")
        return parsed

    def derive(self, password: str) -> bytes:
        return hashlib.scrypt(password.encode("utf-8"), salt=self.salt, n=self.n, r=self.r, p=self.p,
                              dklen=len(self.key), maxmem=_MAXMEM)

    def matches(self, password: str) -> bool:
        return hmac.compare_digest(self.derive(password), self.key)


@dataclass(frozen=True)
class BasicCredentials:
    """One username and the hash of its password."""

    username: str
    password_hash: str

    @classmethod
    def from_plaintext(cls, username: str, password: str) -> BasicCredentials:
        return cls(username, _hash_once(username, password))


# Building several runtimes in one process (tests, gunicorn's master and workers) with the same configured
# password reuses its hash instead of paying scrypt again; keyed by an HMAC, so no password is kept here.
_HASHED: dict[bytes, str] = {}
_HASHED_LOCK = threading.Lock()


def _hash_once(username: str, password: str) -> str:
    key = hmac.new(_PROCESS_KEY, f"{username}\0{password}".encode(), hashlib.sha256).digest()
    with _HASHED_LOCK:
        if key not in _HASHED:
            _HASHED[key] = hash_password(password)
        return _HASHED[key]


def _write_new(path: Path, doc: dict[str, Any]) -> bool:
    """Create ``path`` with mode 0600; False when it exists already (another process won)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    return True


def load_or_create_credentials(state_dir: Path) -> tuple[BasicCredentials, str | None]:
    """The generated credentials beside the database, created (mode 0600, password hashed) the first time.

    Returns the credentials and, only when they were created now, the plaintext password (to print once).
    """
    path = state_dir / CREDENTIALS_FILE
    if path.exists():
        try:
            check_private(path)
        except InsecureFileError as exc:
            raise CredentialsError(str(exc)) from None
        (creds,) = read_credentials_file(path)
        return creds, None
    private_dir(state_dir)
    password = secrets.token_urlsafe(24)
    creds = BasicCredentials("broker", hash_password(password))
    # O_EXCL: two processes starting at once must not both write (and print) different passwords.
    if not _write_new(path, {"username": creds.username, "password_hash": creds.password_hash}):
        return load_or_create_credentials(state_dir)
    return creds, password


def read_credentials_file(path: Path) -> list[BasicCredentials]:
    """Credential pairs from a JSON file: one object or a list of them, each ``{"username", "password_hash"}``
    (or ``"password"``, hashed now; kept working for files written before hashes)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"{path}: cannot read it as JSON ({type(exc).__name__})") from None
    entries = doc if isinstance(doc, list) else [doc]
    out = []
    for i, entry in enumerate(entries):
        where = f"{path}: entry {i + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("username"), str) or not entry["username"]:
            raise CredentialsError(f"{where}: needs a non-empty username")
        if isinstance(entry.get("password_hash"), str):
            try:
                PasswordHash.parse(entry["password_hash"])
            except CredentialsError as exc:
                raise CredentialsError(f"{where}: password_hash is {exc}") from None
            out.append(BasicCredentials(entry["username"], entry["password_hash"]))
        elif isinstance(entry.get("password"), str) and entry["password"]:
            out.append(BasicCredentials.from_plaintext(entry["username"], entry["password"]))
        else:
            raise CredentialsError(f"{where}: needs password_hash (or password)")
    if not out:
        raise CredentialsError(f"{path}: holds no credentials")
    return out


_DECOY: list[tuple[str, PasswordHash]] = []


def _decoy() -> tuple[str, PasswordHash]:
    # A username that matches nothing is still checked against a hash of the same cost, so the timing does
    # not tell which usernames exist.
    with _HASHED_LOCK:
        if not _DECOY:
            encoded = hash_password(secrets.token_urlsafe(16))
            _DECOY.append((encoded, PasswordHash.parse(encoded)))
        return _DECOY[0]


# Successful checks, process-wide: HMAC(process key, password hash + password), each remembered for
# _VERIFIED_SECONDS after its last success; at most _VERIFIED_SIZE, the least recently used go first.
# TTLCache is not thread-safe by itself: every access holds _HASHED_LOCK.
_VERIFIED_SIZE = 1024
_VERIFIED_SECONDS = 300.0
_VERIFIED: TTLCache[bytes, bool] = TTLCache(maxsize=_VERIFIED_SIZE, ttl=_VERIFIED_SECONDS, timer=time.monotonic)


class FailureBackoff:
    """Per-client back-off on failed basic authentication, so that wrong passwords cannot buy scrypt CPU.

    A client is ``request.remote_addr`` (behind a reverse proxy that is the proxy's address: all clients behind
    it share one budget). After ``threshold`` failures, each no more than ``window`` seconds after the one before,
    the address is blocked for ``base_delay`` seconds, doubling with every further failure up to ``max_delay``;
    while blocked its attempts are answered 401 with ``Retry-After`` without running scrypt, whatever they
    offer. A success clears the address. At most ``maxsize`` addresses are tracked (TTLCache: the least
    recently used go first; an entry expires ``window + max_delay`` seconds after its last failure).
    """

    def __init__(self, *, threshold: int = 10, window: float = 300.0, base_delay: float = 1.0,
                 max_delay: float = 60.0, maxsize: int = 10_000, clock: Any = time.monotonic) -> None:
        self.threshold, self.window, self.base_delay, self.max_delay = threshold, window, base_delay, max_delay
        self.clock = clock
        self._lock = threading.Lock()
        # address -> [failures, time of the last failure, blocked until]
        self._clients: TTLCache[str, list[float]] = TTLCache(maxsize=maxsize, ttl=window + max_delay, timer=clock)

    def retry_after(self, client: str) -> float:
        """Seconds ``client`` must still wait (0: it may try now)."""
        with self._lock:
            entry = self._clients.get(client)
            return max(0.0, entry[2] - self.clock()) if entry else 0.0

    def failed(self, client: str) -> None:
        now = self.clock()
        with self._lock:
            entry = self._clients.get(client)
            if entry is None or now - entry[1] > self.window:
                entry = [0, now, 0.0]
            entry[0] += 1
            entry[1] = now
            if entry[0] >= self.threshold:
                entry[2] = now + min(self.max_delay, self.base_delay * 2 ** (entry[0] - self.threshold))
            self._clients[client] = entry  # (re)starts its time to live

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)


def _client_address() -> str | None:
    """The calling address of the current request (None outside one, e.g. a direct call in a test)."""
    from flask import has_request_context, request

    return request.remote_addr if has_request_context() else None


def _send_retry_after(seconds: float) -> None:
    from flask import after_this_request

    @after_this_request
    def _header(response: Any) -> Any:
        response.headers["Retry-After"] = str(max(1, math.ceil(seconds)))
        return response


class BasicAuthenticator:
    scheme = "basic"
    challenge = 'Basic realm="drbroker"'

    def __init__(self, *credentials: BasicCredentials, backoff: FailureBackoff | None = None) -> None:
        if not credentials:
            raise ValueError("basic authentication needs at least one credential pair")
        self.backoff = backoff if backoff is not None else FailureBackoff()
        self._entries = [(hashlib.sha256(c.username.encode()).digest(), c.username, c.password_hash,
                          PasswordHash.parse(c.password_hash)) for c in credentials]

    def authenticate(self, authorization: str | None) -> str | None:
        """Return the principal for valid credentials, None when the header is not basic auth."""
        if not authorization or authorization[:6].lower() != "basic ":
            return None
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed basic credentials") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise Unauthorized("malformed basic credentials")
        user_digest = hashlib.sha256(user.encode()).digest()
        # Compare the username with every entry (digests: equal lengths, constant time), then check the
        # password once, against the matching entry's hash or the decoy's.
        (encoded, candidate), name = _decoy(), None
        for digest, username, entry_encoded, entry_hash in self._entries:
            if hmac.compare_digest(user_digest, digest) and name is None:
                encoded, candidate, name = entry_encoded, entry_hash, username
        cache_key = hmac.new(_PROCESS_KEY, f"{encoded}\0{password}".encode(), hashlib.sha256).digest()
        client = _client_address()
        if client is not None:
            wait = self.backoff.retry_after(client)
            if wait > 0:  # refused before any scrypt: a blocked address cannot spend the broker's CPU
                _send_retry_after(wait)
                raise Unauthorized(f"too many failed authentication attempts from this address; "
                                   f"retry after {max(1, math.ceil(wait))} s")
        with _HASHED_LOCK:
            ok = _VERIFIED.get(cache_key, False)  # an expired entry is gone: TTLCache never answers it
        if not ok:
            ok = candidate.matches(password)
        if not ok or name is None:
            if client is not None:
                self.backoff.failed(client)
                wait = self.backoff.retry_after(client)
                if wait > 0:  # this failure starts (or lengthens) the address's block: say for how long
                    _send_retry_after(wait)
            raise Unauthorized("invalid credentials")
        if client is not None:
            self.backoff.succeeded(client)
        with _HASHED_LOCK:
            _VERIFIED[cache_key] = True  # (re)starts its time to live; evicts the least recently used if full
        return f"basic:{name}"
