"""Key Protect through IBM's ``keyprotect`` package (``IbmKeyProtectApiV2``): key rings, root keys with a
rotation and dual-authorisation policy, wrap with AAD, rotation policy updates, deletion.

Bodies are the documented JSON collections (``metadata`` + ``resources``) sent as bytes, with the field names
of IBM's keyprotect-go-client structs (``rotation.interval_month``, ``dualAuthDelete.enabled``); the package
sets the ``Bluemix-Instance``, ``X-Kms-Key-Ring`` and vendor content-type headers.

Lists are paged as Key Protect pages them: ``GET /keys`` answers at most ``limit`` keys (IBM's default 200,
at most 5000) from ``offset``, sorted by id, and a page shorter than ``limit`` is the last;
``GET /key_rings`` likewise, with ``totalCount``. Every lookup reads every page it needs.

Deleting a key with a dual-authorisation policy takes two identities: ``set_for_deletion`` is the first
approval (seven days), ``delete_key`` by *another* identity the second; Key Protect refuses the first
approver's own DELETE with ``409 AUTHORIZATIONS_NOT_MET``, which ``delete_key`` reports as ``False``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import Authenticator
from keyprotect import IbmKeyProtectApiV2

from broker.domain.errors import PermanentBackendError
from broker.orchestrators.ibmcloud.errors import call

KEY_TYPE = "application/vnd.ibm.kms.key+json"
POLICY_TYPE = "application/vnd.ibm.kms.policy+json"
PAGE = 5000  # Key Protect's largest page of keys or key rings: the fewest round trips
NOT_AUTHORIZED = "AUTHORIZATIONS_NOT_MET"  # 409 reason: a dual-authorisation delete lacks its second approver


def _reason(exc: BaseException | None) -> str | None:
    """The first reason code of a Key Protect error answer."""
    if not isinstance(exc, ApiException) or exc.http_response is None:
        return None
    try:
        body = exc.http_response.json()
        return str(body["resources"][0]["reasons"][0]["code"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


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
        return self.key_ring(ring) is not None

    def key_ring(self, ring: str) -> dict[str, Any] | None:
        """The ring's record (``KeyRing``: ``id``, ``creationDate``, ``createdBy``), reading page after page of
        ``GET /key_rings``; None when there is no such ring."""
        inst = self._instance()
        offset = 0
        while True:
            page = self._call("GET /key_rings", lambda offset=offset: self.api.list_key_rings(
                inst, limit=PAGE, offset=offset, total_count=True)) or {}
            rings = page.get("resources") or []
            found = next((r for r in rings if r.get("id") == ring), None)
            if found is not None:
                return dict(found)
            offset += len(rings)
            total = (page.get("metadata") or {}).get("totalCount")
            if not rings or len(rings) < PAGE or (total is not None and offset >= int(total)):
                return None

    def identity(self) -> str | None:
        """The broker's own IAM id (the ``iam_id`` claim of the access token it calls with), which Key Protect
        records as a ring's ``createdBy``; None when the token cannot be read. The token is only read, not
        verified: it is the one IAM gave the broker."""
        manager = getattr(self.authenticator, "token_manager", None)
        try:
            token = str(manager.get_token()) if manager is not None else ""
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except Exception:  # any failure to read it means "unknown": a ring of another name is then kept
            return None
        iam_id = claims.get("iam_id") if isinstance(claims, dict) else None
        return str(iam_id) if iam_id else None

    def delete_key_ring(self, ring: str) -> None:
        inst = self._instance()
        self._call(f"DELETE /key_rings/{ring}", lambda: self.api.delete_key_ring(ring, inst, force=True),
                   allow=(404,))

    # keys -------------------------------------------------------------------------------------------
    def find_key(self, name: str) -> dict[str, Any] | None:
        """The first key named ``name`` that is not destroyed, reading page after page of ``GET /keys``."""
        inst = self._instance()
        offset = 0
        while True:
            page = self._call("GET /keys", lambda offset=offset: self.api.get_keys(
                inst, limit=PAGE, offset=offset)) or {}
            keys = page.get("resources") or []
            found = next((k for k in keys if k.get("name") == name and k.get("state") != 5), None)
            if found is not None or len(keys) < PAGE:
                return found
            offset += len(keys)

    def key_metadata(self, key_id: str) -> dict[str, Any] | None:
        """The key's metadata (``GET /keys/{id}/metadata``): state, ``dualAuthDelete``; None when it is gone."""
        inst = self._instance()
        result = self._call(f"GET /keys/{key_id}/metadata", lambda: self.api.get_key_metadata(key_id, inst),
                            allow=(404, 410))
        return ((result or {}).get("resources") or [None])[0]

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

    def set_dual_auth_delete(self, key_id: str) -> None:
        """Give the key a dual-authorisation delete policy (``PUT /keys/{id}/policies?policy=dualAuthDelete``,
        keyprotect-go-client ``SetDualAuthDeletePolicy``). Key Protect never lets it be removed again."""
        inst = self._instance()
        body = {"metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
                "resources": [{"type": POLICY_TYPE, "dualAuthDelete": {"enabled": True}}]}
        self._call(f"PUT /keys/{key_id}/policies",
                   lambda: self.api.put_policy(key_id, inst, body, policy="dualAuthDelete"))

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

    def delete_key(self, key_id: str) -> bool:
        """Delete the key: True once it is deleted (or was already gone); False when Key Protect refuses it
        with 409 AUTHORIZATIONS_NOT_MET (a dual-authorisation key not set for deletion, or set for deletion by
        this same identity: another one must delete it)."""
        inst = self._instance()
        try:
            self._call(f"DELETE /keys/{key_id}", lambda: self.api.delete_key(key_id, inst), allow=(404, 410))
        except PermanentBackendError as exc:
            if _reason(exc.__cause__) == NOT_AUTHORIZED:
                return False
            raise
        return True
