"""Key Protect steps: the instance's key ring and root key, wrapping a binding's data key, rotation, deletion.

The root key protects the credentials of the instance's bindings (envelope encryption); these steps are the
only ones that create or remove Key Protect objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.domain.errors import PermanentBackendError
from broker.domain.protocols import StepContext
from broker.orchestrators.ibmcloud.common import IbmSteps
from broker.orchestrators.ibmcloud.naming import Names


class KeySteps(IbmSteps):
    """The Key Protect actions of provisioning, update, binding and deprovisioning."""

    def create_key_ring(self, ctx: StepContext) -> Mapping[str, Any]:
        ring = self._key_ring(ctx)
        created = self.kp.create_key_ring(ring)
        return {"key_ring_id": ring, "key_ring_created": created}

    def create_root_key(self, ctx: StepContext) -> Mapping[str, Any]:
        enc = ctx.parameters.get("encryption") or {}
        names = Names(ctx.instance_id)
        key = self.kp.find_key(names.root_key)
        if key is None:
            key = self.kp.create_root_key(names.root_key, self._key_ring(ctx),
                                          rotation_months=enc.get("rotation_interval_months"),
                                          dual_auth=bool(enc.get("dual_auth_delete")))
        return {"root_key_id": key.get("id"), "root_key_crn": key.get("crn")}

    def wrap_key(self, ctx: StepContext) -> Mapping[str, Any]:
        key = self.kp.find_key(Names(ctx.instance_id).root_key)
        if key is None:
            raise PermanentBackendError("the instance has no root key")
        wrapped = self.kp.wrap(key["id"], [ctx.instance_id, ctx.binding_id or ""])
        # The plaintext data key Key Protect generated is dropped here: only its ciphertext leaves.
        wrapped.pop("plaintext", None)
        return {"wrapped_dek": wrapped.get("ciphertext"),
                "key_version": (wrapped.get("keyVersion") or {}).get("id"), "root_key_id": key["id"],
                "root_key_crn": key.get("crn")}

    def delete_root_key(self, ctx: StepContext) -> Mapping[str, Any]:
        if not self.kp.instance_id:
            return {}
        key = self.kp.find_key(Names(ctx.instance_id).root_key)
        if key is None:
            return {}
        if key.get("dualAuthDelete", {}).get("enabled") and not key.get("deletionAuthorized"):
            # The broker is the first approver; Key Protect wants a second identity's DELETE within 7 days
            # (the fake accepts the broker's own; see README).
            self.kp.set_for_deletion(key["id"])
        self.kp.delete_key(key["id"])
        return {"deleted_key": key["id"]}

    def delete_key_ring(self, ctx: StepContext) -> Mapping[str, Any]:
        if not self.kp.instance_id or not (ctx.parameters.get("encryption") or ctx.plan.features.get("byok")):
            return {}
        if self.kp.find_key(Names(ctx.instance_id).root_key) is not None:
            raise PermanentBackendError("Key Protect: key ring still holds keys (409 KEY_RING_KEYS_NOT_DELETED)")
        ring = self._key_ring(ctx)
        if ring == "default":
            return {}
        self.kp.delete_key_ring(ring)
        return {}

    def apply_rotation(self, ctx: StepContext) -> None:
        """The update's Key Protect part: the root key's rotation interval, when one is asked for."""
        enc = ctx.parameters.get("encryption") or {}
        if enc.get("rotation_interval_months") and self.kp.instance_id:
            key = self.kp.find_key(Names(ctx.instance_id).root_key)
            if key is not None:
                self.kp.set_rotation(key["id"], int(enc["rotation_interval_months"]))
