"""A Key Protect root key as the KEK of the secrets at rest (``DRBROKER_KEK=keyprotect``).

Data keys are wrapped by IBM Key Protect's documented key actions (the root key never leaves Key Protect):

    POST {url}/api/v2/keys/{root key id}/actions/wrap     Content-Type: application/vnd.ibm.kms.key_action_wrap+json
         {"plaintext": <DEK, base64>, "aad": [<sha256 of the record's AAD>]}
      -> {"ciphertext": <WDEK>, "keyVersion": {"id": <version>}}
    POST {url}/api/v2/keys/{root key id}/actions/unwrap   Content-Type: application/vnd.ibm.kms.key_action_unwrap+json
         {"ciphertext": <WDEK>, "aad": [...]}  -> {"plaintext": <DEK, base64>, ...}
    POST {url}/api/v2/keys/{root key id}/actions/rotate   (a new key version; older versions still unwrap)

with ``Authorization: Bearer <IAM token>`` (from ``DRBROKER_KEK_APIKEY`` at ``$DRBROKER_IAM_URL/identity/token``) and
``Bluemix-Instance: <Key Protect instance GUID>``. Key ids stored with each wrapped DEK are
``kp:<root key id>:<key version id>``. ``drbroker keys rotate`` rotates the root key and re-wraps every data
key under the new version (unwrap, then wrap: Key Protect always wraps with the latest version).

Tested against the fake IBM Cloud (``broker/fakecloud``, a real HTTP server on loopback speaking these
shapes), never against IBM Cloud itself.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from typing import Any

import requests
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator

from broker.security.envelope import SecretsError


class KeyProtectKEK:
    name = "keyprotect"

    def __init__(self, *, url: str, instance_id: str, root_key_id: str, apikey: str, iam_url: str,
                 timeout: float = 30.0, session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.instance_id = instance_id
        self.root_key_id = root_key_id
        self.timeout = timeout
        self._auth = IAMAuthenticator(apikey, url=iam_url.rstrip("/"))
        self._session = session or requests.Session()
        self._latest: str | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _aad(aad: bytes) -> list[str]:
        # Key Protect takes AAD as strings of at most 255 characters; a record's AAD may be longer.
        return [hashlib.sha256(aad).hexdigest()]

    def _call(self, key_id: str, action: str, body: dict[str, Any] | None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._auth.token_manager.get_token()}",
                   "Bluemix-Instance": self.instance_id, "Accept": "application/json",
                   "Content-Type": f"application/vnd.ibm.kms.key_action_{action}+json"}
        try:
            response = self._session.post(f"{self.url}/api/v2/keys/{key_id}/actions/{action}", json=body,
                                          headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise SecretsError(f"Key Protect {action} on key {key_id}: {type(exc).__name__}") from None
        if response.status_code >= 300:
            # The status only: an error body could echo what was sent.
            raise SecretsError(f"Key Protect {action} on key {key_id} failed: HTTP {response.status_code}")
        return response.json() if response.content else {}

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
