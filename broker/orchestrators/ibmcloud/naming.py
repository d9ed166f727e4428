"""Deterministic names: every resource the broker makes in IBM Cloud is named from its instance (and
binding), so a repeated action finds what an earlier attempt made instead of making a second one."""

from __future__ import annotations

import hashlib


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
        return f"{self.tag}-test"

    @property
    def rehearsal_prefix(self) -> str:
        # PowerVS names a clone "clone-<base name>-<n>"
        return f"clone-{self.rehearsal}"

    def binding(self, binding_id: str) -> str:
        return f"{self.tag}-{short(binding_id, 8)}"

    def binding_key(self, binding_id: str) -> str:
        return f"{self.binding(binding_id)}-key"

    def binding_policy(self, binding_id: str) -> str:
        return f"{self.binding(binding_id)}-kms-reader"
