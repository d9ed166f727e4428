"""The resource controller and global catalog (ibm-platform-services): finding the DR Automation plan and
creating, reading and deleting its service instance."""

from __future__ import annotations

from typing import Any

from ibm_cloud_sdk_core.authenticators import Authenticator
from ibm_platform_services import GlobalCatalogV1, ResourceControllerV2

from broker.domain.errors import PermanentBackendError
from broker.orchestrators.ibmcloud.errors import call

DRA_SERVICE = "power-dr-automation"
DRA_PLAN = "power-virtual-server-dr-automation"


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
        result = self._call("Resource controller GET /v2/resource_instances", lambda: self.rc.list_resource_instances(
            name=name)) or {}
        live = [r for r in result.get("resources") or [] if r.get("state") not in ("removed", "pending_removal")]
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
