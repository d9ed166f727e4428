"""Key Protect through IBM's ``keyprotect`` package (``IbmKeyProtectApiV2``): key rings, root keys with a
rotation and dual-authorisation policy, wrap with AAD, rotation policy updates, deletion.

Bodies are the documented JSON collections (``metadata`` + ``resources``) sent as bytes; the package sets
the ``Bluemix-Instance``, ``X-Kms-Key-Ring`` and vendor content-type headers.
"""

from __future__ import annotations

import json
from typing import Any

from ibm_cloud_sdk_core.authenticators import Authenticator
from keyprotect import IbmKeyProtectApiV2

from broker.domain.errors import PermanentBackendError
from broker.orchestrators.ibmcloud.errors import call

KEY_TYPE = "application/vnd.ibm.kms.key+json"
POLICY_TYPE = "application/vnd.ibm.kms.policy+json"


def _collection(kind: str, resource: dict[str, Any]) -> bytes:
    return json.dumps({"metadata": {"collectionType": kind, "collectionTotal": 1},
                       "resources": [{"type": kind, **resource}]}).encode()


class KeyProtect:
    def __init__(self, authenticator: Authenticator, url: str, instance_id: str | None,
                 timeout: float = 60.0) -> None:
        self.authenticator = authenticator
        self.instance_id = instance_id
        self.url = url
        self.api = IbmKeyProtectApiV2(authenticator=authenticator)
        self.api.set_service_url(url)
        self.api.set_http_config({"timeout": timeout})

    def _instance(self) -> str:
        if not self.instance_id:
            raise PermanentBackendError("Key Protect: DRBROKER_IBMCLOUD_KMS_INSTANCE_ID is not set (byok plans need "
                                        "a Key Protect instance)")
        return self.instance_id

    def _call(self, what: str, fn: Any, allow: tuple[int, ...] = ()) -> Any:
        resp = call(f"Key Protect {what}", fn, allow=allow, authenticator=self.authenticator)
        return None if resp is None else resp.get_result()

    def key_crn(self, region: str, account: str, key_id: str) -> str:
        return f"crn:v1:bluemix:public:kms:{region}:a/{account}:{self.instance_id}:key:{key_id}"

    # key rings --------------------------------------------------------------------------------------
    def create_key_ring(self, ring: str) -> bool:
        """Create the ring; False when it already exists (409 is an answer here)."""
        inst = self._instance()
        resp = call(f"Key Protect POST /key_rings/{ring}", lambda: self.api.create_key_ring(ring, inst),
                    allow=(409,), authenticator=self.authenticator)
        return resp is not None

    def key_ring_exists(self, ring: str) -> bool:
        inst = self._instance()
        rings = self._call("GET /key_rings", lambda: self.api.list_key_rings(inst)) or {}
        return any(r.get("id") == ring for r in rings.get("resources") or [])

    def delete_key_ring(self, ring: str) -> None:
        inst = self._instance()
        self._call(f"DELETE /key_rings/{ring}", lambda: self.api.delete_key_ring(ring, inst, force=True),
                   allow=(404,))

    # keys -------------------------------------------------------------------------------------------
    def find_key(self, name: str) -> dict[str, Any] | None:
        inst = self._instance()
        keys = self._call("GET /keys", lambda: self.api.get_keys(inst, limit=5000)) or {}
        return next((k for k in keys.get("resources") or [] if k.get("name") == name and k.get("state") != 5),
                    None)

    def create_root_key(self, name: str, ring: str, *, rotation_months: int | None,
                        dual_auth: bool) -> dict[str, Any]:
        inst = self._instance()
        resource: dict[str, Any] = {"name": name, "description": "powervs-dr-broker instance root key",
                                    "extractable": False}
        if rotation_months:
            resource["rotation"] = {"enabled": True, "interval_month": rotation_months}
        resource["dualAuthDelete"] = {"enabled": bool(dual_auth)}
        body = _collection(KEY_TYPE, resource)
        result = self._call("POST /keys_with_policy_overrides", lambda: self.api.create_key_with_policies_overrides(
            inst, body, prefer="return=representation", x_kms_key_ring=ring))
        return (result.get("resources") or [{}])[0]

    def set_rotation(self, key_id: str, months: int) -> None:
        inst = self._instance()
        body = {"metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
                "resources": [{"type": POLICY_TYPE, "rotation": {"enabled": True, "interval_month": months}}]}
        self._call(f"PUT /keys/{key_id}/policies",
                   lambda: self.api.put_policy(key_id, inst, body, policy="rotation"))

    def wrap(self, key_id: str, aad: list[str]) -> dict[str, Any]:
        """Wrap a data key Key Protect generates; the caller must drop ``plaintext`` at once."""
        inst = self._instance()
        body = json.dumps({"aad": aad}).encode()
        return self._call(f"POST /keys/{key_id}/actions/wrap",
                          lambda: self.api.wrap_key(key_id, inst, key_action_wrap_body=body)) or {}

    def unwrap(self, key_id: str, ciphertext: str, aad: list[str]) -> dict[str, Any]:
        inst = self._instance()
        body = json.dumps({"ciphertext": ciphertext, "aad": aad}).encode()
        return self._call(f"POST /keys/{key_id}/actions/unwrap",
                          lambda: self.api.unwrap_key(key_id, inst, body)) or {}

    def rotate(self, key_id: str) -> None:
        inst = self._instance()
        self._call(f"POST /keys/{key_id}/actions/rotate", lambda: self.api.rotate_key(key_id, inst))

    def set_for_deletion(self, key_id: str) -> None:
        inst = self._instance()
        self._call(f"POST /keys/{key_id}/actions/setKeyForDeletion",
                   lambda: self.api.set_key_for_deletion(key_id, inst))

    def delete_key(self, key_id: str) -> None:
        inst = self._instance()
        self._call(f"DELETE /keys/{key_id}", lambda: self.api.delete_key(key_id, inst), allow=(404, 410))
