"""A thin client of IBM's DR Automation service for PowerVS (``/drautomation/v1``).

IBM's ``ibm-dra-python-sdk`` is a 0.x pre-release whose instance-id semantics are shown only in examples,
so this is ``BaseService`` with the five calls the broker needs, on the SDK's documented paths and
bodies: deploy the orchestrator (``manage_dr``), follow its deployment (``last_operation``), and read the
GRS location pairs and the managed VMs it discovered.
"""

from __future__ import annotations

import json
from typing import Any

from ibm_cloud_sdk_core import BaseService, DetailedResponse
from ibm_cloud_sdk_core.authenticators import Authenticator

from broker.orchestrators.ibmcloud.errors import call


class DrAutomationV1(BaseService):
    DEFAULT_SERVICE_NAME = "dr_automation_service"

    def __init__(self, authenticator: Authenticator, service_url: str, timeout: float = 60.0) -> None:
        super().__init__(service_url=service_url, authenticator=authenticator)
        self.set_http_config({"timeout": timeout})

    def _req(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
             ) -> DetailedResponse:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps({k: v for k, v in body.items() if v is not None})
        return self.send(self.prepare_request(method, path, headers=headers, params=params, data=data))


class DrAutomation:
    def __init__(self, authenticator: Authenticator, url: str, timeout: float = 60.0) -> None:
        self.authenticator = authenticator
        self.api = DrAutomationV1(authenticator, url, timeout)

    def _call(self, what: str, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
              allow: tuple[int, ...] = ()) -> Any:
        resp = call(f"DR Automation {what}", lambda: self.api._req(method, path, body, params), allow=allow,
                    authenticator=self.authenticator)
        return None if resp is None else resp.get_result()

    def manage_dr(self, instance_id: str, body: dict[str, Any], *, standby_redeploy: bool = False) -> dict[str, Any]:
        params = {"accepts_incomplete": "true"}
        if standby_redeploy:
            params["stand_by_redeploy"] = "true"
        return self._call("POST /manage_dr", "POST", f"/drautomation/v1/manage_dr/{instance_id}", body,
                          params) or {}

    def update_apikey(self, instance_id: str, api_key: str) -> dict[str, Any]:
        """``PUT /drautomation/v1/apikey/{instance_id}`` (the SDK's ``update_apikey``; body ``{"api_key"}``): the
        customer API key the orchestrator works with from now on. The key travels only in the body."""
        return self._call("PUT /apikey", "PUT", f"/drautomation/v1/apikey/{instance_id}", {"api_key": api_key}) or {}

    def last_operation(self, instance_id: str) -> dict[str, Any] | None:
        return self._call("GET /last_operation", "GET", f"/drautomation/v1/last_operation/{instance_id}",
                          allow=(404,))

    def grs_location_pairs(self, instance_id: str) -> dict[str, str]:
        result = self._call("GET /dr_grs_location_pairs", "GET",
                            f"/drautomation/v1/dr_grs_location_pairs/{instance_id}") or {}
        return dict(result.get("location_pairs") or {})

    def managed_vms(self, instance_id: str) -> dict[str, dict[str, Any]]:
        result = self._call("GET /dr_managed_vms", "GET", f"/drautomation/v1/dr_managed_vms/{instance_id}") or {}
        return dict(result.get("managed_vm_list") or {})
