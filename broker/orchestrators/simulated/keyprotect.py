"""A simulated Key Protect instance: key rings, root keys with versions, AES-256-GCM wrap/unwrap with AAD,
rotation, and dual-authorisation delete.

Like the real service, a root key's material never leaves it: callers get ciphertexts and key version ids.
``wrap`` without plaintext generates a 32-byte data key and returns it once beside its ciphertext; AAD is
not stored, so unwrapping needs the same AAD.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.domain.errors import PermanentBackendError
from broker.orchestrators.simulated.cloud import Resource, SimulatedCloud


@dataclass(frozen=True)
class Wrapped:
    ciphertext: str
    key_version: str
    plaintext: bytes


def _aad(aad: list[str]) -> bytes:
    return "\x1f".join(aad).encode()


class SimKeyProtect:
    def __init__(self, cloud: SimulatedCloud) -> None:
        self.cloud = cloud

    def create_root_key(self, instance_id: str, *, key_ring: str, rotation_months: int | None,
                        dual_auth_delete: bool) -> Resource:
        version = {"id": str(uuid.uuid4()), "material": base64.b64encode(AESGCM.generate_key(256)).decode(),
                   "created": time.time()}
        return self.cloud.ensure("root_key", instance_id, None, "active", {
            "key_ring": key_ring, "extractable": False, "versions": [version],
            "rotation_interval_months": rotation_months, "dual_auth_delete": dual_auth_delete,
            "set_for_deletion": False}, )

    def _key(self, key_id: str) -> Resource:
        key = self.cloud.by_id(key_id)
        if key is None or key.kind != "root_key":
            raise PermanentBackendError(f"Key Protect: key {key_id} not found (404)")
        if key.state != "active":
            raise PermanentBackendError(f"Key Protect: key {key_id} is {key.state} (409 KEY_ACTION_INVALID_STATE)")
        return key

    def wrap(self, key_id: str, aad: list[str], plaintext: bytes | None = None) -> Wrapped:
        key = self._key(key_id)
        version = key.data["versions"][-1]
        dek = plaintext if plaintext is not None else os.urandom(32)
        nonce = os.urandom(12)
        sealed = AESGCM(base64.b64decode(version["material"])).encrypt(nonce, dek, _aad(aad))
        blob = uuid.UUID(version["id"]).bytes + nonce + sealed
        return Wrapped(ciphertext=base64.b64encode(blob).decode(), key_version=version["id"], plaintext=dek)

    def unwrap(self, key_id: str, ciphertext: str, aad: list[str]) -> bytes:
        key = self._key(key_id)
        try:
            blob = base64.b64decode(ciphertext, validate=True)
        except ValueError:
            raise PermanentBackendError("Key Protect: ciphertext is not base64 (400)") from None
        version_id, nonce, sealed = str(uuid.UUID(bytes=blob[:16])), blob[16:28], blob[28:]
        version = next((v for v in key.data["versions"] if v["id"] == version_id), None)
        if version is None:
            raise PermanentBackendError("Key Protect: unknown key version (422)")
        try:
            return AESGCM(base64.b64decode(version["material"])).decrypt(nonce, sealed, _aad(aad))
        except InvalidTag:
            raise PermanentBackendError("Key Protect: unwrap failed: wrong AAD or ciphertext (422)") from None

    def rotate(self, key_id: str) -> str:
        key = self._key(key_id)
        version = {"id": str(uuid.uuid4()), "material": base64.b64encode(AESGCM.generate_key(256)).decode(),
                   "created": time.time()}
        self.cloud.update(key, data={"versions": [*key.data["versions"], version]})
        return version["id"]

    def set_for_deletion(self, key_id: str) -> None:
        key = self._key(key_id)
        self.cloud.update(key, data={"set_for_deletion": True})

    def delete(self, instance_id: str) -> dict[str, Any]:
        """Delete the instance's root key; with dual-auth it must have been set for deletion first."""
        key = self.cloud.get("root_key", instance_id)
        if key is None:
            return {}
        if key.data.get("dual_auth_delete") and not key.data.get("set_for_deletion"):
            raise PermanentBackendError("Key Protect: key has a dual authorization policy and was not set for "
                                        "deletion (409 PREV_KEY_DEL_AUTH_REQ)")
        self.cloud.remove("root_key", instance_id)
        return {"deleted_key": key.id}
