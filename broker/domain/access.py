"""What a binding is granted in IAM: the mapping of the bind parameters ``purpose`` and ``role`` to IBM roles.

Both backends grant exactly these (the ibmcloud backend as IAM access policies, the simulated one as policy
records of its IAM model), and the credentials list them under ``access``, so a binding's credentials and its
grants mean the same on either.

PowerVS (``power-iaas``) defines the platform roles Viewer, Operator, Editor and Administrator and the service
roles Reader and Manager (IBM Cloud docs, "Managing IAM for Power Virtual Server"). Our ``role``:

- ``Reader`` -> Viewer (platform: view and list the workspace) + Reader (service: view every resource);
- ``Writer`` -> Operator (platform: view the workspace; unlike Editor it cannot create or delete workspaces) +
  Manager (service: act on the resources, e.g. start the standby VMs or change volumes). PowerVS has no
  ``Writer`` service role; IAM refuses a role the service does not define.

``purpose: readonly`` always grants Reader (a ``Writer`` readonly binding is refused). ``kms-dek`` adds Key
Protect's Reader service role on the instance's root key (enough to unwrap the binding's data key; the ``role``
applies to the workspaces, never to the key).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.domain.sites import parse_workspace_crn

PLATFORM_ROLE = "crn:v1:bluemix:public:iam::::role:"
SERVICE_ROLE = "crn:v1:bluemix:public:iam::::serviceRole:"

WORKSPACE_ROLES: dict[str, tuple[str, ...]] = {
    "Reader": (PLATFORM_ROLE + "Viewer", SERVICE_ROLE + "Reader"),
    "Writer": (PLATFORM_ROLE + "Operator", SERVICE_ROLE + "Manager"),
}
KEY_READER = SERVICE_ROLE + "Reader"


@dataclass(frozen=True)
class Grant:
    """One access policy of a binding: its name within the binding, the IAM resource attributes it is scoped to
    (``accountId`` aside) and its role CRNs."""

    name: str
    resource: Mapping[str, str]
    roles: tuple[str, ...] = field(default_factory=tuple)

    def public(self) -> dict[str, Any]:
        return {"resource": dict(self.resource), "roles": list(self.roles)}


def purpose(binding_parameters: Mapping[str, Any]) -> str:
    return str(binding_parameters.get("purpose") or "readonly")


def workspace_roles(binding_parameters: Mapping[str, Any]) -> tuple[str, ...]:
    role = "Reader" if purpose(binding_parameters) == "readonly" else str(binding_parameters.get("role") or "Reader")
    return WORKSPACE_ROLES[role]


def workspace_grants(binding_parameters: Mapping[str, Any], primary_crn: str, secondary_crn: str) -> list[Grant]:
    """One policy per workspace (IAM policies have one resource each): ``serviceName: power-iaas``,
    ``serviceInstance: <workspace guid>``."""
    roles = workspace_roles(binding_parameters)
    out = []
    for site, crn in (("primary", primary_crn), ("secondary", secondary_crn)):
        ref = parse_workspace_crn(crn)
        guid = ref.guid if ref else str(crn).rstrip(":").rsplit(":", 1)[-1]
        out.append(Grant(f"ws-{site}", {"serviceName": "power-iaas", "serviceInstance": guid}, roles))
    return out


def key_grant(kms_instance: str, key_id: str) -> Grant:
    return Grant("kms-reader", {"serviceName": "kms", "serviceInstance": kms_instance, "resourceType": "key",
                                "resource": key_id}, (KEY_READER,))
