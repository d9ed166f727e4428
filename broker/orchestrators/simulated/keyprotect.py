"""A simulated Key Protect instance: key rings, root keys with versions, AES-256-GCM wrap/unwrap with AAD,
rotation at the key's policy interval, and dual-authorisation delete.

Like the real service, a root key's material never leaves it: callers get ciphertexts and key version ids.
``wrap`` without plaintext generates a 32-byte data key and returns it once beside its ciphertext; AAD is
not stored, so unwrapping needs the same AAD.

Rotation adds a key version and keeps the old ones: new wraps use the newest, a ciphertext names the
version it was sealed with, so data keys wrapped before a rotation still unwrap. ``due_for_rotation`` says
whether a key's newest version is older than its policy's ``rotation_interval_months`` (a month is
``month_seconds``, 30 days unless the simulation shortens it).

Dual authorisation, as on Key Protect, takes two identities: ``set_for_deletion(key, by=A)`` is the first
approval (valid ``DUAL_AUTH_SECONDS``, seven days), ``approve_deletion(instance, approver=B)`` the second,
refused when B is A; only then does ``delete`` remove the key. Every change to a key is a compare-and-set on
its row, so two processes (a rotation and an approval, two rotations) never overwrite each other.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection

from broker.domain.errors import DeletionRefused, PermanentBackendError
from broker.orchestrators.simulated.cloud import Resource, SimulatedCloud

MONTH_SECONDS = 30 * 86400.0
DUAL_AUTH_SECONDS = 7 * 86400.0  # how long a first approval to delete a dual-authorisation key lasts


@dataclass(frozen=True)
class Wrapped:
    ciphertext: str
    key_version: str
    plaintext: bytes


def _aad(aad: list[str]) -> bytes:
    return "\x1f".join(aad).encode()


def _version(now: float) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "material": base64.b64encode(AESGCM.generate_key(256)).decode(),
            "created": now}


class SimKeyProtect:
    def __init__(self, cloud: SimulatedCloud, *, clock: Callable[[], float] = time.time,
                 month_seconds: float = MONTH_SECONDS) -> None:
        self.cloud = cloud
        self.clock = clock
        self.month_seconds = month_seconds

    def create_root_key(self, instance_id: str, *, key_ring: str, rotation_months: int | None,
                        dual_auth_delete: bool) -> Resource:
        version = _version(self.clock())
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

    def rotate(self, key_id: str, *, now: float | None = None, if_due: bool = False,
               also: Callable[[Connection, str], None] | None = None) -> str | None:
        """Add a key version (the newest is used from now on; the old ones still unwrap). ``if_due``: only when
        the key is due for rotation (``due_for_rotation``); None when it was not (or another process rotated
        it first). ``also(conn, new_version_id)`` runs in the rotation's transaction (its DR event)."""
        for _ in range(5):
            key = self._key(key_id)
            when = self.clock() if now is None else now
            if if_due and not self.due_for_rotation(key, when):
                return None
            version = _version(when)
            hook = None if also is None else (lambda conn, vid=str(version["id"]): also(conn, vid))
            if self.cloud.update_if(key, data={"versions": [*key.data["versions"], version]}, also=hook) is not None:
                return str(version["id"])
            if if_due:
                return None  # changed meanwhile: look again at the next round
        raise PermanentBackendError(f"Key Protect: key {key_id} kept changing; rotate it again (409)")

    def due_for_rotation(self, key: Resource, now: float) -> bool:
        """The key's newest version is at least its policy's interval old (an inactive key never is)."""
        months = key.data.get("rotation_interval_months")
        if key.state != "active" or not months:
            return False
        return now - float(key.data["versions"][-1]["created"]) >= float(months) * self.month_seconds

    def root_keys(self) -> list[Resource]:
        return self.cloud.of_kind("root_key")

    def set_policies(self, instance_id: str, *, rotation_months: int | None = None,
                     dual_auth_delete: bool | None = None) -> Resource | None:
        """Key Protect's ``PUT /keys/{id}/policies``: the rotation interval, and a dual-authorisation policy,
        which can be added but never removed."""
        for _ in range(5):
            key = self.cloud.get("root_key", instance_id)
            if key is None:
                return None
            data: dict[str, Any] = {}
            if rotation_months is not None:
                data["rotation_interval_months"] = int(rotation_months)
            if dual_auth_delete is not None:
                if key.data.get("dual_auth_delete") and not dual_auth_delete:
                    raise PermanentBackendError("Key Protect: a dual authorization policy cannot be removed "
                                                "(409 POLICY_DUAL_AUTH_ERR)")
                data["dual_auth_delete"] = bool(dual_auth_delete)
            if all(key.data.get(k) == v for k, v in data.items()):
                return key
            updated = self.cloud.update_if(key, data=data)
            if updated is not None:
                return updated
        raise PermanentBackendError("Key Protect: the key kept changing; set its policies again (409)")

    # dual-authorisation delete ----------------------------------------------------------------------
    def deletion(self, key: Resource, now: float | None = None) -> dict[str, Any] | None:
        """The pending first approval to delete ``key`` while it lasts: set_by, set_at, expires, approved_by."""
        auth = key.data.get("deletion_auth")
        when = self.clock() if now is None else now
        return dict(auth) if isinstance(auth, Mapping) and float(auth.get("expires", 0)) > when else None

    def set_for_deletion(self, key_id: str, *, by: str) -> dict[str, Any]:
        """The first approval (again, when an earlier one expired); returns the pending authorisation."""
        for _ in range(5):
            key = self._key(key_id)
            now = self.clock()
            current = self.deletion(key, now)
            if current is not None:
                return current
            auth = {"set_by": by, "set_at": now, "expires": now + DUAL_AUTH_SECONDS, "approved_by": None}
            if self.cloud.update_if(key, data={"set_for_deletion": True, "deletion_auth": auth}) is not None:
                return auth
        raise PermanentBackendError(f"Key Protect: key {key_id} kept changing; set it for deletion again (409)")

    def approve_deletion(self, instance_id: str, *, approver: str) -> dict[str, Any]:
        """The second approval of the instance's root key's deletion, by another identity than the first."""
        approver = approver.strip()
        if not approver:
            raise DeletionRefused("an approver is required")
        for _ in range(5):
            key = self.cloud.get("root_key", instance_id)
            if key is None:
                raise DeletionRefused(f"instance {instance_id} has no root key (deleted already, or never made)")
            if not key.data.get("dual_auth_delete"):
                raise DeletionRefused(f"the root key {key.id} of instance {instance_id} has no dual-authorisation "
                                      "policy: its deletion needs no second approver")
            auth = self.deletion(key)
            if auth is None:
                raise DeletionRefused(f"the root key {key.id} of instance {instance_id} is not set for deletion "
                                      "(or its first approval expired): deprovision the instance first")
            if approver == auth["set_by"]:
                raise DeletionRefused(f"{approver} set the root key {key.id} for deletion (the first approval); a "
                                      "second approver must be another identity")
            if auth.get("approved_by"):
                return {**auth, "key_id": key.id}
            auth = {**auth, "approved_by": approver, "approved_at": self.clock()}
            if self.cloud.update_if(key, data={"deletion_auth": auth}) is not None:
                return {**auth, "key_id": key.id}
        raise PermanentBackendError("Key Protect: the key kept changing; approve again (409)")

    def delete(self, instance_id: str) -> dict[str, Any]:
        """Delete the instance's root key; with dual-auth it takes a first approval and a second approver's."""
        key = self.cloud.get("root_key", instance_id)
        if key is None:
            return {}
        if key.data.get("dual_auth_delete"):
            auth = self.deletion(key)
            if auth is None or not auth.get("approved_by") or auth["approved_by"] == auth["set_by"]:
                raise PermanentBackendError("Key Protect: key has a dual authorization policy and lacks a second "
                                            "approval (409 AUTHORIZATIONS_NOT_MET)")
        self.cloud.remove("root_key", instance_id)
        return {"deleted_key": key.id}
