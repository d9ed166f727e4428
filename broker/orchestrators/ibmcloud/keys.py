"""Key Protect steps: the instance's key ring and root key, wrapping a binding's data key, rotation, deletion.

The root key protects the credentials of the instance's bindings (envelope encryption); these steps are the
only ones that create or remove Key Protect objects.

A root key with a dual-authorisation policy (``encryption.dual_auth_delete``) needs two identities to be
deleted, and the broker is only one: ``delete_root_key`` sets the key for deletion (the first approval, valid
seven days) and then waits (``AwaitingApproval``) for a second approver, another identity with the Manager
role on the Key Protect instance, to delete it. The deprovision stays in progress meanwhile and says who must
do what by when; each retry looks again, sets the key for deletion again if the approval expired, and tries
its own DELETE when someone else gave the first approval (then the broker is the second approver). Once the
key is gone, the step is done and ``delete_key_ring`` removes the ring.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from broker.domain.errors import AwaitingApproval, PermanentBackendError
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
            return {}  # never made, deleted earlier, or deleted by the second approver
        dual = key.get("dualAuthDelete") or {}
        if not dual.get("enabled"):
            self.kp.delete_key(key["id"])
            return {"deleted_key": key["id"]}
        if not _authorised(dual):
            # The broker gives the first approval (again, when an earlier one expired).
            self.kp.set_for_deletion(key["id"])
            dual = (self.kp.key_metadata(key["id"]) or {}).get("dualAuthDelete") or {}
        elif self.kp.delete_key(key["id"]):
            # Someone else gave the first approval: the broker's DELETE was the second.
            return {"deleted_key": key["id"]}
        until = dual.get("authExpiration") or "the authorisation expires (7 days)"
        raise AwaitingApproval(
            f"Key Protect root key {key['id']} has a dual-authorisation delete policy; the broker set it for "
            f"deletion (first approval) and a second approver must delete it: another user with the Manager "
            f"role on Key Protect instance {self.kp.instance_id} runs `ibmcloud kp key delete {key['id']} -i "
            f"{self.kp.instance_id}` before {until}. The deprovision continues once the key is gone (checked "
            f"every {self.config.approval_poll_seconds:g} s; an expired approval is given again).",
            retry_after=self.config.approval_poll_seconds)

    def delete_key_ring(self, ctx: StepContext) -> Mapping[str, Any]:
        """Delete the instance's key ring, only when the broker created it: the ring of its own name, one a step
        recorded making, or one whose ``createdBy`` is the broker's identity (which also covers a create whose
        answer was lost). A ring the customer named and made stays, with the deleted key in it."""
        if not self.kp.instance_id or not (ctx.parameters.get("encryption") or ctx.plan.features.get("byok")):
            return {}
        if self.kp.find_key(Names(ctx.instance_id).root_key) is not None:
            raise PermanentBackendError("Key Protect: key ring still holds keys (409 KEY_RING_KEYS_NOT_DELETED)")
        ring = self._key_ring(ctx)
        if ring == "default":
            return {}
        if ring != Names(ctx.instance_id).tag and not self._made_ring(ctx.instance_id, ring):
            found = self.kp.key_ring(ring)
            if found is None:
                return {}
            mine = self.kp.identity()
            if not mine or found.get("createdBy") != mine:
                return {"key_ring_kept": ring}  # the customer's ring
        self.kp.delete_key_ring(ring)
        return {}

    def _made_ring(self, instance_id: str, ring: str) -> bool:
        """Whether a step of this instance recorded creating ``ring`` (``create_key_ring``'s outputs)."""
        if self.store is None:
            return False
        with self.store.read() as tx:
            for op in tx.list_operations(instance_id=instance_id, limit=1000):
                for rec in tx.steps(op.id):
                    if rec.outputs.get("key_ring_id") == ring and rec.outputs.get("key_ring_created"):
                        return True
        return False

    def apply_encryption(self, ctx: StepContext) -> None:
        """The update's Key Protect part: the root key's rotation interval, and a dual-authorisation policy when
        one is asked for (the service refused what Key Protect cannot do: removing that policy, moving the key
        to another ring). A plan change to byok makes the key later, with these parameters."""
        enc = ctx.parameters.get("encryption") or {}
        if not enc or not self.kp.instance_id:
            return
        key = self.kp.find_key(Names(ctx.instance_id).root_key)
        if key is None:
            return
        if enc.get("rotation_interval_months"):
            self.kp.set_rotation(key["id"], int(enc["rotation_interval_months"]))
        if enc.get("dual_auth_delete") and not (key.get("dualAuthDelete") or {}).get("enabled"):
            self.kp.set_dual_auth_delete(key["id"])


def _authorised(dual: Mapping[str, Any]) -> bool:
    """Whether a first approval to delete the key is pending and not expired (``DualAuthKeyMetadata``)."""
    if not dual.get("keySetForDeletion"):
        return False
    expires = dual.get("authExpiration")
    if not expires:
        return True
    try:
        return datetime.fromisoformat(str(expires).replace("Z", "+00:00")).timestamp() > time.time()
    except ValueError:
        return True
