"""IBM Cloud endpoints per service and region, each overridable.

PowerVS and Key Protect are regional (``https://<region>.power-iaas.cloud.ibm.com``,
``https://<region>.kms.cloud.ibm.com``); the platform services are global. ``base_url`` sends every
service to one host (the fake IBM Cloud): each service keeps its real path below it, so no code path
differs between the fake and IBM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULTS: dict[str, str] = {
    "iam": "https://iam.cloud.ibm.com",
    "powervs": "https://{region}.power-iaas.cloud.ibm.com",
    "kms": "https://{region}.kms.cloud.ibm.com",
    "iam_identity": "https://iam.cloud.ibm.com",
    "iam_policy": "https://iam.cloud.ibm.com",
    "resource_controller": "https://resource-controller.cloud.ibm.com",
    "global_catalog": "https://globalcatalog.cloud.ibm.com/api/v1",
    "dra": "https://power-dra.cloud.ibm.com",
    "metering": "https://billing.cloud.ibm.com",
}
SERVICES = tuple(DEFAULTS)

# The part of a default URL that is a path, kept when only a base URL is given.
_PATHS = {"global_catalog": "/api/v1"}


@dataclass(frozen=True)
class Endpoints:
    base_url: str | None = None
    overrides: Mapping[str, str] = field(default_factory=dict)

    def url(self, service: str, region: str | None = None) -> str:
        if service not in DEFAULTS:
            raise KeyError(f"unknown IBM Cloud service {service!r}")
        if service in self.overrides:
            template = self.overrides[service]
        elif self.base_url:
            template = self.base_url.rstrip("/") + _PATHS.get(service, "")
        else:
            template = DEFAULTS[service]
        if "{region}" in template:
            if not region:
                raise ValueError(f"the {service} endpoint needs a region")
            template = template.replace("{region}", region)
        return template.rstrip("/")
