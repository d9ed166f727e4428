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

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import jwt
from jwt.algorithms import RSAAlgorithm

from broker.domain.errors import Forbidden

log = logging.getLogger(__name__)

DEFAULT_IAM_URL = "https://iam.cloud.ibm.com"


class JwksError(Exception):
    """IAM's key set could not be fetched or read."""


class JwksCache:
    """IAM's public keys by ``kid``, fetched over HTTPS (or HTTP on loopback in tests) and cached."""

    def __init__(self, url: str, *, ttl: float = 3600.0, refetch_interval: float = 10.0, timeout: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.ttl = ttl
        self.refetch_interval = refetch_interval
        self.timeout = timeout
        self.clock = clock
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = threading.Lock()
        self.fetches = 0

    def _fetch(self) -> None:
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                doc = json.loads(response.read(1024 * 1024))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise JwksError(f"cannot fetch IAM keys from {self.url}: {type(exc).__name__}") from None
        keys = {}
        for jwk in doc.get("keys", []) if isinstance(doc, dict) else []:
            if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or not isinstance(jwk.get("kid"), str):
                continue
            if jwk.get("use", "sig") != "sig" or jwk.get("alg", "RS256") != "RS256":
                continue
            try:
                keys[jwk["kid"]] = RSAAlgorithm.from_jwk(jwk)
            except (jwt.InvalidKeyError, ValueError, KeyError, TypeError):
                log.warning("IAM key set: skipping an unreadable key (kid %s)", jwk.get("kid"))
        self.fetches += 1
        self._keys, self._fetched_at = keys, self.clock()
        log.info("IAM key set fetched from %s: %d key(s)", self.url, len(keys))

    def key(self, kid: str) -> Any | None:
        with self._lock:
            now = self.clock()
            stale = self._fetched_at is None or now - self._fetched_at > self.ttl
            # An unknown kid: IAM may have rotated its keys. Fetch again, but never more than once per
            # refetch_interval (also after a failure), so tokens with made-up kids cannot make us hammer IAM.
            unknown = kid not in self._keys
            if (stale or unknown) and (self._attempted_at is None
                                       or now - self._attempted_at >= self.refetch_interval):
                self._attempted_at = now
                try:
                    self._fetch()
                except JwksError:
                    if not self._keys:
                        raise
                    log.warning("IAM key set: refresh from %s failed; still using the keys fetched before",
                                self.url)
            elif not self._keys and self._fetched_at is None:
                raise JwksError(f"IAM keys from {self.url} are unavailable (retrying shortly)")
            return self._keys.get(kid)


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
