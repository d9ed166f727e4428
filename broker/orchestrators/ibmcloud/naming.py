"""Deterministic names: every resource the broker makes in IBM Cloud is named from its instance (and
binding), so a repeated action finds what an earlier attempt made instead of making a second one."""

from __future__ import annotations

import hashlib
from typing import Any


def short(value: str, n: int = 12) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:n]


class Names:
    def __init__(self, instance_id: str) -> None:
        self.tag = f"drb-{short(instance_id)}"

    @property
    def group(self) -> str:
        return self.tag

    def aux_volume(self, volume_id: str) -> str:
        return f"{self.tag}-aux-{volume_id}"

    @property
    def aux_prefix(self) -> str:
        return f"{self.tag}-aux-"

    @property
    def root_key(self) -> str:
        return f"{self.tag}-root"

    @property
    def dra_instance(self) -> str:
        return f"{self.tag}-dra"

    @property
    def rehearsal(self) -> str:
        # The base name of the rehearsal clones: 20 characters, as PowerVS cuts the name of a clone of several
        # volumes to its first 20 (VolumesCloneAsyncRequest.name), so the clones carry it whole.
        return f"{self.tag}-tst"

    @property
    def rehearsal_prefix(self) -> str:
        # PowerVS names clones "clone-<name>-<5 random digits>" (one volume) or "clone-<name[:20]>-<digits>-<n>"
        return f"clone-{self.rehearsal}-"

    @property
    def rehearsal_prefixes(self) -> tuple[str, ...]:
        """Every prefix a rehearsal clone of this instance may carry: today's, and the cut form of the earlier
        21-character base name ("<tag>-test" became "<tag>-tes" on clones of several volumes)."""
        return (self.rehearsal_prefix, f"clone-{self.tag}-tes")

    def rehearsal_vm(self, server_name: str) -> str:
        # "<tag>-<VM name>_DRTest" (KSYS names its DR-test VMs "<VM>_DRTest"), within PowerVS's 47 characters
        return f"{self.tag}-{server_name[:23]}_DRTest"

    def is_rehearsal_vm(self, server_name: Any) -> bool:
        return str(server_name or "").startswith(f"{self.tag}-") and str(server_name).endswith("_DRTest")

    def binding(self, binding_id: str) -> str:
        return f"{self.tag}-{short(binding_id, 8)}"

    def binding_key(self, binding_id: str) -> str:
        return f"{self.binding(binding_id)}-key"

    def binding_policy(self, binding_id: str, grant: str = "kms-reader") -> str:
        """The description of one of the binding's access policies (``kms-reader``, ``ws-primary``, ...)."""
        return f"{self.binding(binding_id)}-{grant}"

    def binding_policy_prefix(self, binding_id: str) -> str:
        """What every access policy of the binding's description starts with."""
        return f"{self.binding(binding_id)}-"
