"""A thin PowerVS (power-iaas) client: IBM ships no Python SDK, so this is ``BaseService`` plus the paths
of IBM's API definition (the ``PathPattern``s of IBM-Cloud/power-go-client).

Every request carries the IAM bearer token (the authenticator) and the ``CRN`` header naming the
workspace, as IBM's own clients send it. One client serves one regional endpoint; ``PowerVS`` picks the
client from the workspace CRN's zone.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from ibm_cloud_sdk_core import ApiException, BaseService, DetailedResponse
from ibm_cloud_sdk_core.authenticators import Authenticator
from tenacity import RetryCallState, Retrying, retry_if_exception

from broker.domain.errors import PermanentBackendError
from broker.domain.sites import WorkspaceRef, parse_workspace_crn
from broker.orchestrators.ibmcloud.endpoints import Endpoints
from broker.orchestrators.ibmcloud.errors import _record, call, retry_after_seconds, transaction_id

THROTTLE_DEFAULT_WAIT = 1.0  # seconds to wait after a 429 that names no Retry-After


class PowerVSV1(BaseService):
    DEFAULT_SERVICE_NAME = "power_iaas"

    def __init__(self, authenticator: Authenticator, service_url: str, timeout: float = 60.0) -> None:
        super().__init__(service_url=service_url, authenticator=authenticator)
        self.set_http_config({"timeout": timeout})

    def request(self, method: str, path: str, crn: str, body: Any = None,
                params: dict[str, Any] | None = None) -> DetailedResponse:
        headers = {"CRN": crn, "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        req = self.prepare_request(method, path, headers=headers, params=params, data=data)
        return self.send(req)


class PowerVS:
    """The calls the DR workflows make, per workspace (each through the error boundary)."""

    def __init__(self, authenticator: Authenticator, endpoints: Endpoints, timeout: float = 60.0) -> None:
        self.authenticator = authenticator
        self.endpoints = endpoints
        self.timeout = timeout
        self._clients: dict[str, PowerVSV1] = {}
        self._lock = threading.Lock()

    def _client(self, ws: WorkspaceRef) -> PowerVSV1:
        url = self.endpoints.url("powervs", ws.region or ws.zone)
        with self._lock:
            if url not in self._clients:
                self._clients[url] = PowerVSV1(self.authenticator, url, self.timeout)
            return self._clients[url]

    @staticmethod
    def workspace(crn: str) -> WorkspaceRef:
        ws = parse_workspace_crn(crn)
        if ws is None:
            raise PermanentBackendError(f"not a PowerVS workspace CRN: {crn}")
        return ws

    def _do(self, method: str, crn: str, sub: str, body: Any = None, *, params: dict[str, Any] | None = None,
            allow: tuple[int, ...] = (), version: str = "v1", patience: float = 0.0) -> Any:
        """One request through the error boundary. ``patience``: for how many seconds a 429 (which IBM's
        definitions give the replication reads) is waited out, Retry-After by Retry-After, before it
        becomes the caller's ``TransientBackendError``."""
        ws = self.workspace(crn)
        path = f"/pcloud/{version}/cloud-instances/{ws.guid}{sub}"
        what = f"PowerVS {method} {path.split(ws.guid, 1)[1] or '/'} ({ws.zone})"
        deadline = time.monotonic() + patience

        def throttled(exc: BaseException) -> bool:
            return isinstance(exc, ApiException) and exc.status_code == 429 and time.monotonic() < deadline

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            headers = (exc.http_response.headers if isinstance(exc, ApiException) and exc.http_response is not None
                       else {})
            _record(what, 429, transaction_id(headers) or getattr(exc, "global_transaction_id", None))
            pause = retry_after_seconds(headers.get("Retry-After")) or THROTTLE_DEFAULT_WAIT
            return max(0.0, min(pause, deadline - time.monotonic()))

        def send() -> DetailedResponse:
            # A 429 is waited out here, Retry-After by Retry-After, for at most ``patience`` seconds; then
            # (or for any other error) the error boundary ``call`` decides.
            retrying = Retrying(retry=retry_if_exception(throttled), wait=wait, reraise=True)
            return retrying(self._client(ws).request, method, path, crn, body, params)
        resp = call(what, send, allow=allow, authenticator=self.authenticator)
        return None if resp is None else resp.get_result()

    # workspace -------------------------------------------------------------------------------------
    def get_workspace(self, crn: str) -> dict[str, Any] | None:
        return self._do("GET", crn, "", allow=(404,))

    def dr_locations(self, crn: str) -> dict[str, Any]:
        return self._do("GET", crn, "/locations/disaster-recovery")

    def storage_pools(self, crn: str) -> list[dict[str, Any]]:
        result = self._do("GET", crn, "/storage-capacity/storage-pools") or {}
        return list(result.get("storagePoolsCapacity") or [])

    # volumes ----------------------------------------------------------------------------------------
    def list_volumes(self, crn: str) -> list[dict[str, Any]]:
        return list((self._do("GET", crn, "/volumes") or {}).get("volumes") or [])

    def get_volume(self, crn: str, volume_id: str) -> dict[str, Any] | None:
        return self._do("GET", crn, f"/volumes/{volume_id}", allow=(404,))

    def volume_action(self, crn: str, volume_id: str, body: dict[str, Any]) -> None:
        self._do("POST", crn, f"/volumes/{volume_id}/action", body)

    def delete_volume(self, crn: str, volume_id: str) -> None:
        """Delete a volume (asynchronously: it shows state ``deleting`` until it is gone).

        404 (unknown) and 410 (its deletion is already under way, e.g. a retry after a lost answer) both
        mean there is nothing left to ask for.
        """
        self._do("DELETE", crn, f"/volumes/{volume_id}", allow=(404, 410))

    def onboard(self, crn: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._do("POST", crn, "/volumes/onboarding", body)

    def list_onboardings(self, crn: str) -> list[dict[str, Any]]:
        # VolumeOnboardings: the tasks (VolumeOnboardingCommon: id, description, status) under "onboardings"
        return list((self._do("GET", crn, "/volumes/onboarding") or {}).get("onboardings") or [])

    def get_onboarding(self, crn: str, onboarding_id: str) -> dict[str, Any]:
        return self._do("GET", crn, f"/volumes/onboarding/{onboarding_id}")

    def clone_volumes(self, crn: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._do("POST", crn, "/volumes/clone", body, version="v2")

    def get_clone_task(self, crn: str, task_id: str) -> dict[str, Any]:
        return self._do("GET", crn, f"/volumes/clone-tasks/{task_id}", version="v2")

    # volume groups ----------------------------------------------------------------------------------
    def list_volume_groups(self, crn: str) -> list[dict[str, Any]]:
        return list((self._do("GET", crn, "/volume-groups") or {}).get("volumeGroups") or [])

    def find_volume_group(self, crn: str, name: str) -> dict[str, Any] | None:
        return next((g for g in self.list_volume_groups(crn) if g.get("name") == name), None)

    def get_volume_group(self, crn: str, group_id: str) -> dict[str, Any] | None:
        """``VolumeGroup``: status and replication status, but no members (see ``get_volume_group_details``)."""
        return self._do("GET", crn, f"/volume-groups/{group_id}", allow=(404,))

    def get_volume_group_details(self, crn: str, group_id: str) -> dict[str, Any] | None:
        """``VolumeGroupDetails``: the group with its ``volumeIDs`` (the only read that lists them)."""
        return self._do("GET", crn, f"/volume-groups/{group_id}/details", allow=(404,))

    def create_volume_group(self, crn: str, name: str, volume_ids: list[str]) -> dict[str, Any]:
        """``VolumeGroupCreateResponse``; a 206 (partial) has the same shape plus ``statusDetail``: the group
        exists without some of the volumes, so the caller checks the members once the group is available."""
        return self._do("POST", crn, "/volume-groups", {"name": name, "volumeIDs": volume_ids})

    def update_volume_group(self, crn: str, group_id: str, *, add: list[str] | None = None,
                            remove: list[str] | None = None) -> None:
        body: dict[str, Any] = {}
        if add:
            body["addVolumes"] = add
        if remove:
            body["removeVolumes"] = remove
        self._do("PUT", crn, f"/volume-groups/{group_id}", body)

    def delete_volume_group(self, crn: str, group_id: str) -> None:
        self._do("DELETE", crn, f"/volume-groups/{group_id}", allow=(404,))

    def volume_group_action(self, crn: str, group_id: str, body: dict[str, Any]) -> None:
        self._do("POST", crn, f"/volume-groups/{group_id}/action", body)

    def storage_details(self, crn: str, group_id: str, *, patience: float = 0.0) -> dict[str, Any]:
        """``VolumeGroupStorageDetails``; may answer 429 (waited out for ``patience`` seconds)."""
        return self._do("GET", crn, f"/volume-groups/{group_id}/storage-details", patience=patience)

    def remote_copy_relationships(self, crn: str, group_id: str, *, patience: float = 0.0) -> list[dict[str, Any]]:
        """The group's ``RemoteCopyRelationship``s; may answer 429 (waited out for ``patience`` seconds)."""
        result = self._do("GET", crn, f"/volume-groups/{group_id}/remote-copy-relationships",
                          patience=patience) or {}
        return list(result.get("remoteCopyRelationships") or [])

    # VMs and jobs -----------------------------------------------------------------------------------
    def list_pvm_instances(self, crn: str) -> list[dict[str, Any]]:
        return list((self._do("GET", crn, "/pvm-instances") or {}).get("pvmInstances") or [])

    def get_pvm_instance(self, crn: str, pvm_id: str) -> dict[str, Any] | None:
        return self._do("GET", crn, f"/pvm-instances/{pvm_id}", allow=(404,))

    def pvm_action(self, crn: str, pvm_id: str, action: str) -> None:
        self._do("POST", crn, f"/pvm-instances/{pvm_id}/action", {"action": action})

    def create_pvm_instance(self, crn: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        """``POST .../pvm-instances`` (``PVMInstanceCreate``); the answer is a ``PVMInstanceList``."""
        return list(self._do("POST", crn, "/pvm-instances", body) or [])

    def delete_pvm_instance(self, crn: str, pvm_id: str) -> None:
        """Delete a VM (asynchronous); 404 (unknown) and 410 (already being deleted) leave nothing to ask for."""
        self._do("DELETE", crn, f"/pvm-instances/{pvm_id}", allow=(404, 410))

    def get_job(self, crn: str, job_id: str) -> dict[str, Any]:
        return self._do("GET", crn, f"/jobs/{job_id}")
