"""A Key Protect root key as the KEK of the secrets at rest (``DRBROKER_KEK=keyprotect``).

Data keys are wrapped by IBM Key Protect's documented key actions (the root key never leaves Key Protect):

    POST {url}/api/v2/keys/{root key id}/actions/wrap     Content-Type: application/vnd.ibm.kms.key_action_wrap+json
         {"plaintext": <DEK, base64>, "aad": [<sha256 of the record's AAD>]}
      -> {"ciphertext": <WDEK>, "keyVersion": {"id": <version>}}
    POST {url}/api/v2/keys/{root key id}/actions/unwrap   Content-Type: application/vnd.ibm.kms.key_action_unwrap+json
         {"ciphertext": <WDEK>, "aad": [...]}  -> {"plaintext": <DEK, base64>, ...}
    POST {url}/api/v2/keys/{root key id}/actions/rotate   (a new key version; older versions still unwrap)

sent by IBM's ``keyprotect`` SDK (``IbmKeyProtectApiV2``) with ``Authorization: Bearer <IAM token>`` (from
``DRBROKER_KEK_APIKEY`` at ``$DRBROKER_IAM_URL/identity/token``, through ibm-cloud-sdk-core's ``IAMAuthenticator``)
and ``Bluemix-Instance: <Key Protect instance GUID>``. Transient failures (a connection error or timeout, 408,
425, 429, any 5xx, and a 401 after the token is refreshed) are retried with tenacity, honouring
``Retry-After``; any other 4xx fails at once. Key ids stored with each wrapped DEK are
``kp:<root key id>:<key version id>``. ``drbroker keys rotate`` rotates the root key and re-wraps every data
key under the new version (unwrap, then wrap: Key Protect always wraps with the latest version).

Tested against the fake IBM Cloud (``broker/fakecloud``, a real HTTP server on loopback speaking these
shapes), never against IBM Cloud itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from typing import Any

import requests
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from keyprotect import IbmKeyProtectApiV2
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from broker.security.envelope import SecretsError

log = logging.getLogger(__name__)

# Not broker/orchestrators/ibmcloud/errors.py's ``call``: security is an outer ring beside the orchestrators
# (dependencies point inward, to the domain), and that boundary maps to the backend's domain errors, not to
# SecretsError. The rule is the same: these statuses and the transport errors are worth another attempt.
TRANSIENT_STATUSES = frozenset({401, 408, 425, 429})
TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status_code in TRANSIENT_STATUSES or exc.status_code >= 500
    return isinstance(exc, TRANSPORT_ERRORS)


def _retry_after(exc: BaseException | None) -> float | None:
    response = getattr(exc, "http_response", None)
    try:
        return max(0.0, float(response.headers["Retry-After"])) if response is not None else None
    except (KeyError, TypeError, ValueError):  # absent, or an HTTP date: the backoff decides
        return None


class KeyProtectKEK:
    name = "keyprotect"

    def __init__(self, *, url: str, instance_id: str, root_key_id: str, apikey: str, iam_url: str,
                 timeout: float = 30.0, session: requests.Session | None = None, attempts: int = 4,
                 backoff: float = 0.25, max_wait: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.instance_id = instance_id
        self.root_key_id = root_key_id
        self.timeout = timeout
        self._auth = IAMAuthenticator(apikey, url=iam_url.rstrip("/"))
        self.api = IbmKeyProtectApiV2(authenticator=self._auth)
        self.api.set_service_url(self.url)
        self.api.set_http_config({"timeout": timeout})
        if session is not None:
            self.api.set_http_client(session)
        self.attempts = attempts
        self.max_wait = max_wait
        self._backoff = wait_exponential(multiplier=backoff, max=max_wait)
        self._latest: str | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _aad(aad: bytes) -> list[str]:
        # Key Protect takes AAD as strings of at most 255 characters; a record's AAD may be longer.
        return [hashlib.sha256(aad).hexdigest()]

    def _wait(self, state: RetryCallState) -> float:
        after = _retry_after(state.outcome.exception() if state.outcome else None)
        return min(after, self.max_wait) if after is not None else self._backoff(state)

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ApiException) and exc.status_code == 401:
            # An expired or revoked IAM token: forget it, so the next attempt fetches a new one.
            manager = self._auth.token_manager
            with manager.lock:
                manager.access_token, manager.expire_time, manager.refresh_time = None, 0, 0
        log.info("Key Protect: attempt %d failed (%s); retrying", state.attempt_number,
                 f"HTTP {exc.status_code}" if isinstance(exc, ApiException) else type(exc).__name__)

    def _call(self, key_id: str, action: str, body: dict[str, Any] | None) -> dict[str, Any]:
        send = {"wrap": lambda data: self.api.wrap_key(key_id, self.instance_id, key_action_wrap_body=data),
                "unwrap": lambda data: self.api.unwrap_key(key_id, self.instance_id, data),
                "rotate": lambda data: self.api.rotate_key(key_id, self.instance_id, key_action_rotate_body=data)}
        data = json.dumps(body).encode() if body is not None else None
        retrying = Retrying(stop=stop_after_attempt(self.attempts), wait=self._wait,
                            retry=retry_if_exception(_transient), before_sleep=self._before_sleep, reraise=True)
        try:
            response = retrying(send[action], data)
        except ApiException as exc:
            # The status only: an error body could echo what was sent.
            raise SecretsError(f"Key Protect {action} on key {key_id} failed: HTTP {exc.status_code}") from None
        except (requests.RequestException, ValueError) as exc:
            raise SecretsError(f"Key Protect {action} on key {key_id}: {type(exc).__name__}") from None
        result = response.get_result()
        return result if isinstance(result, dict) else {}

    def _kek_id(self, version: str) -> str:
        return f"kp:{self.root_key_id}:{version}"

    def wrap(self, dek: bytes, aad: bytes) -> tuple[str, bytes]:
        out = self._call(self.root_key_id, "wrap", {"plaintext": base64.b64encode(dek).decode(),
                                                    "aad": self._aad(aad)})
        version = (out.get("keyVersion") or {}).get("id") or "unversioned"
        with self._lock:
            self._latest = version
        return self._kek_id(version), str(out["ciphertext"]).encode("ascii")

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        scheme, _, rest = kek_id.partition(":")
        key_id = rest.partition(":")[0]
        if scheme != "kp" or not key_id:
            raise SecretsError(f"key {kek_id} is not a Key Protect key")
        out = self._call(key_id, "unwrap", {"ciphertext": wrapped.decode("ascii"), "aad": self._aad(aad)})
        return base64.b64decode(out["plaintext"])

    def active_id(self) -> str:
        with self._lock:
            latest = self._latest
        if latest is None:
            # Key Protect wraps with the latest version: a throw-away wrap tells which one that is.
            self.wrap(b"\0" * 32, b"drbroker-probe")
            latest = self._latest
        return self._kek_id(str(latest))

    def is_current(self, kek_id: str) -> bool:
        return kek_id == self.active_id()

    def begin_rotation(self) -> str:
        self._call(self.root_key_id, "rotate", {})
        with self._lock:
            self._latest = None
        return self.active_id()

    def finish_rotation(self) -> list[str]:
        # Key Protect keeps every version of the root key; nothing to retire here.
        return []
