"""The resource controller and global catalog (ibm-platform-services): finding the DR Automation plan and
creating, reading and deleting its service instance.

A resource instance is ``active``, ``inactive``, ``failed``, ``provisioning``, ``pre_provisioning``,
``pending_reclamation`` or ``removed`` (the SDK's enum also lists ``pending_removal``). A deleted instance
waits in ``pending_reclamation`` (reclamation) until it is reclaimed; to the broker that, ``removed`` and
``pending_removal`` are all gone: never reused by a re-provision, and the end of a removal.
"""

from __future__ import annotations

from typing import Any

from ibm_cloud_sdk_core.authenticators import Authenticator
from ibm_platform_services import GlobalCatalogV1, ResourceControllerV2
from ibm_platform_services.resource_controller_v2 import ResourceInstancesPager

from broker.domain.errors import PermanentBackendError
from broker.orchestrators.ibmcloud.errors import call
from broker.orchestrators.ibmcloud.iam import _Through

DRA_SERVICE = "power-dr-automation"
DRA_PLAN = "power-virtual-server-dr-automation"
GONE_STATES = frozenset({"pending_reclamation", "removed", "pending_removal"})


def is_gone(instance: dict[str, Any] | None) -> bool:
    """A resource instance that no longer exists for the broker (absent, deleted or being reclaimed)."""
    return instance is None or instance.get("state") in GONE_STATES


class Resources:
    def __init__(self, authenticator: Authenticator, rc_url: str, gc_url: str, timeout: float = 60.0) -> None:
        self.authenticator = authenticator
        self.rc = ResourceControllerV2(authenticator=authenticator)
        self.rc.set_service_url(rc_url)
        self.rc.set_http_config({"timeout": timeout})
        self.gc = GlobalCatalogV1(authenticator=authenticator)
        self.gc.set_service_url(gc_url)
        self.gc.set_http_config({"timeout": timeout})
        self._plan_id: str | None = None

    def _call(self, what: str, fn: Any, allow: tuple[int, ...] = ()) -> Any:
        resp = call(what, fn, allow=allow, authenticator=self.authenticator)
        return None if resp is None else resp.get_result()

    def dra_plan_id(self) -> str:
        """The DR Automation plan's catalog id (looked up once: it does not change)."""
        if self._plan_id:
            return self._plan_id
        found = self._call("Global catalog GET / (service)", lambda: self.gc.list_catalog_entries(
            q=f"name:{DRA_SERVICE}", account="global", complete=True)) or {}
        services = [r for r in found.get("resources") or [] if r.get("name") == DRA_SERVICE]
        if not services:
            raise PermanentBackendError(f"Global catalog: service {DRA_SERVICE} not found")
        sid = services[0]["id"]
        children = self._call("Global catalog GET /{id}/* (plans)", lambda: self.gc.get_child_objects(
            sid, "*", complete=True)) or {}
        plan = next((c for c in children.get("resources") or [] if c.get("name") == DRA_PLAN), None)
        if plan is None:
            raise PermanentBackendError(f"Global catalog: plan {DRA_PLAN} of {DRA_SERVICE} not found")
        self._plan_id = plan["id"]
        return self._plan_id

    def find_instance(self, name: str) -> dict[str, Any] | None:
        """The live instance of this name (every page read; a deleted or reclaiming one is not live)."""
        pager = ResourceInstancesPager(client=_Through(self.rc, "Resource controller GET /v2/resource_instances",
                                                       self.authenticator), name=name, limit=100)
        live = [r for r in pager.get_all() if r.get("name") == name and not is_gone(r)]
        return live[0] if live else None

    def create_instance(self, name: str, resource_group: str, plan_id: str, tags: list[str]) -> dict[str, Any]:
        return self._call("Resource controller POST /v2/resource_instances", lambda: self.rc.create_resource_instance(
            name, "global", resource_group, plan_id, tags=tags))

    def get_instance(self, guid: str) -> dict[str, Any] | None:
        return self._call(f"Resource controller GET /v2/resource_instances/{guid}",
                          lambda: self.rc.get_resource_instance(guid), allow=(404,))

    def delete_instance(self, guid: str) -> None:
        self._call(f"Resource controller DELETE /v2/resource_instances/{guid}",
                   lambda: self.rc.delete_resource_instance(guid, recursive=False), allow=(404, 410))
