"""IBM Cloud's "bearer-CRN" broker authentication: an IAM access token whose identity is this broker's CRN.

The resource controller sends ``Authorization: Bearer <IAM JWT>``. The token is accepted only when:

- its header says ``alg: RS256`` (``none``, HS256 and every other algorithm are refused before any key is
  looked at, so an RSA public key can never be used as an HMAC secret) and names a ``kid``;
- the signature verifies with that key from IAM's JWKS (``$DRBROKER_IAM_URL/identity/keys``), cached for an
  hour and fetched again, at most every ``refetch_interval`` seconds, when a token names an unknown ``kid``
  (IAM rotated its keys);
- ``iss`` is ``$DRBROKER_IAM_URL/identity``, ``exp`` is in the future and ``iat`` not in the future (both
  with ``leeway`` seconds of clock skew);
- its ``id`` claim is ``"crn-" + DRBROKER_BROKER_CRN``.

No bearer header: not this scheme (the caller answers 401). A bearer header that fails any check: 403.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet

from broker.domain.errors import Forbidden

log = logging.getLogger(__name__)

DEFAULT_IAM_URL = "https://iam.cloud.ibm.com"


class JwksError(Exception):
    """IAM's key set could not be fetched or read."""


def _usable(jwk: PyJWK, kid: str) -> bool:
    # Only IAM's RSA signing keys: a published key of another type or use never verifies a token.
    return (jwk.key_id == kid and jwk.key_type == "RSA" and jwk.public_key_use in ("sig", None)
            and jwk.algorithm_name == "RS256")


class JwksCache:
    """IAM's public keys by ``kid``: PyJWT's ``PyJWKClient`` fetches, parses and caches the key set (for
    ``ttl`` seconds); this class adds what it lacks.

    - Refetches are throttled to one per ``refetch_interval`` seconds, also after a failure (PyJWKClient's
      own ``cooldown_duration``, in recent PyJWT only, counts from successful fetches, so an unreachable IAM
      would be asked on every request); a made-up ``kid`` cannot make us hammer IAM.
    - A token with a known ``kid`` never waits on a refetch: PyJWKClient holds one lock across the network
      call of a forced refresh, so every lookup would queue behind a token naming an unknown ``kid``. Here a
      known key is answered from the cached set without any lock, and, when the set is past its ``ttl``, from
      the last good set while one request refreshes it.
    - The last good set is kept when a refresh fails (older PyJWT also emptied its cache then).
    """

    def __init__(self, url: str, *, ttl: float = 3600.0, refetch_interval: float = 10.0, timeout: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.ttl = ttl
        self.refetch_interval = refetch_interval
        self.timeout = timeout
        self.clock = clock
        self.client = PyJWKClient(url, cache_jwk_set=True, lifespan=ttl, timeout=timeout,
                                  headers={"Accept": "application/json"})
        self._last_good: PyJWKSet | None = None
        self._attempted_at: float | None = None
        self._fetch_lock = threading.Lock()
        self.fetches = 0

    @staticmethod
    def _match(jwk_set: PyJWKSet | None, kid: str) -> Any | None:
        for jwk in jwk_set.keys if jwk_set is not None else ():
            if _usable(jwk, kid):
                return jwk.key
        return None

    def _fresh(self) -> PyJWKSet | None:
        """The key set PyJWKClient caches, while it is younger than ``ttl`` (no network)."""
        cached = self.client.jwk_set_cache.get() if self.client.jwk_set_cache is not None else None
        return cached if isinstance(cached, PyJWKSet) else None  # PyJWT < 2.15 cached the raw JSON

    def _refetch(self) -> None:
        """Fetch the key set again unless one was attempted less than ``refetch_interval`` ago (caller holds
        ``_fetch_lock``)."""
        now = self.clock()
        if self._attempted_at is not None and now - self._attempted_at < self.refetch_interval:
            if self._last_good is None:
                raise JwksError(f"IAM keys from {self.url} are unavailable (retrying shortly)")
            return
        self._attempted_at = now
        try:
            jwk_set = self.client.get_jwk_set(refresh=True)
        except (jwt.PyJWTError, ValueError, OSError) as exc:
            if self._last_good is None:
                raise JwksError(f"cannot fetch IAM keys from {self.url}: {type(exc).__name__}") from None
            log.warning("IAM key set: refresh from %s failed (%s); still using the keys fetched before",
                        self.url, type(exc).__name__)
            return
        self.fetches += 1
        self._last_good = jwk_set
        log.info("IAM key set fetched from %s: %d key(s)", self.url, len(jwk_set.keys))

    def key(self, kid: str) -> Any | None:
        key = self._match(self._fresh(), kid)
        if key is not None:
            return key  # the common case: a known kid, a fresh set, no lock
        known = self._match(self._last_good, kid)
        # A known kid in a set past its ttl: refresh it if no one else is, but never wait for that.
        if not self._fetch_lock.acquire(blocking=known is None):
            return known
        try:
            # An unknown kid (IAM may have rotated its keys), a stale set, or the first request. Another
            # request may have fetched while this one waited for the lock.
            key = self._match(self._fresh(), kid)
            if key is not None:
                return key
            self._refetch()
            return self._match(self._last_good, kid)
        finally:
            self._fetch_lock.release()


class BearerCrnAuthenticator:
    scheme = "bearer-crn"
    challenge = 'Bearer realm="drbroker"'

    def __init__(self, *, iam_url: str, broker_crn: str, jwks: JwksCache | None = None,
                 leeway: float = 30.0) -> None:
        self.iam_url = iam_url.rstrip("/")
        self.issuer = f"{self.iam_url}/identity"
        self.expected_id = f"crn-{broker_crn}"
        self.jwks = jwks or JwksCache(f"{self.iam_url}/identity/keys")
        self.leeway = leeway

    def authenticate(self, authorization: str | None) -> str | None:
        if not authorization or authorization[:7].lower() != "bearer ":
            return None
        token = authorization[7:].strip()
        if not token:
            return None  # no credentials at all: 401
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Forbidden("bearer token: not a JWT") from None
        if header.get("alg") != "RS256":
            raise Forbidden("bearer token: only RS256-signed IAM tokens are accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Forbidden("bearer token: no key id (kid)")
        try:
            key = self.jwks.key(kid)
        except JwksError as exc:
            log.error("%s", exc)
            raise Forbidden("bearer token: IAM's keys are unavailable, the token cannot be verified") from None
        if key is None:
            raise Forbidden("bearer token: signed with a key IAM does not publish")
        try:
            claims = jwt.decode(token, key=key, algorithms=["RS256"], issuer=self.issuer, leeway=self.leeway,
                                options={"require": ["exp", "iat", "iss"], "verify_aud": False})
        except jwt.ExpiredSignatureError:
            raise Forbidden("bearer token: expired") from None
        except jwt.ImmatureSignatureError:
            raise Forbidden("bearer token: issued in the future") from None
        except jwt.InvalidIssuerError:
            raise Forbidden("bearer token: not issued by the configured IAM") from None
        except jwt.PyJWTError:
            raise Forbidden("bearer token: invalid signature or claims") from None
        if claims.get("id") != self.expected_id:
            raise Forbidden("bearer token: its identity is not this broker's CRN")
        return f"bearer-crn:{claims.get('sub') or claims['id']}"[:255]
