"""The fake IBM Cloud's state: one in-memory account behind one lock, with a clock that moves asynchronous
resources through their documented states.

Progressions are scheduled events: an action schedules the next state ``n`` steps of ``step_seconds`` ahead,
and every request first applies the events that are due (``tick``). So a volume group is ``creating`` for
a step, its relationship ``inconsistent_copying`` for two, then ``consistent_copying``; an onboarding
task is ``InProgress`` for two steps, a clone task ``running``, a DR Automation deployment walks
``DRA_DEPLOY_STEPS`` (35: IBM's deployment takes about 35 minutes), a standby re-deployment ``DRA_REDEPLOY_STEPS``.
``fail_next`` makes the next job of a kind end in failure.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.domain.sites import GRS_PAIRS, ZONE_REGION, partner_zones
from broker.orchestrators.simulated.seed import DEMO_ACCOUNT, demo_rows

DEMO_KMS_INSTANCE_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "drbroker-fake:kms"))
DRA_SERVICE_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "drbroker-fake:power-dr-automation"))
DRA_PLAN_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "drbroker-fake:power-virtual-server-dr-automation"))
CYCLE_PERIOD_SECONDS = 300
DRA_DEPLOY_STEPS = 35     # IBM: deploying the orchestrator takes about 35 minutes
DRA_REDEPLOY_STEPS = 20   # adding or removing the standby orchestrator


class FakeError(Exception):
    """An API error; the app renders it in the calling service's documented error shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}Z"


def _uuid() -> str:
    return str(uuid.uuid4())


@dataclass
class Fault:
    id: int
    status: int = 503
    count: int = 1
    service: str | None = None
    method: str | None = None
    path: str | None = None
    retry_after: float | None = None
    delay: float = 0.0
    hits: int = 0
    # A lost answer: the request takes effect, then the answer is lost (``drop``: the connection is closed
    # without one; otherwise ``status`` replaces the real answer), as when a load balancer times out.
    after: bool = False
    drop: bool = False
    # ``echo``: the error message repeats the request's body, as some IBM APIs do
    # when they refuse a field, so tests can check the broker keeps what it echoes out of its records.
    echo: bool = False

    def matches(self, service: str, method: str, path: str, after: bool = False) -> bool:
        import re

        return (self.count > 0 and self.after == after and (self.service is None or self.service == service)
                and (self.method is None or self.method.upper() == method)
                and (self.path is None or re.search(self.path, path) is not None))


@dataclass
class FakeState:
    step_seconds: float = 1.0
    token_ttl: int = 3600
    # Key Protect's dual-authorisation period: a key set for deletion may be deleted by another identity for
    # seven days (shorter only for tests, through ``/_fake/config``)
    kms_dual_auth_seconds: float = 7 * 24 * 3600.0
    lock: threading.RLock = field(default_factory=threading.RLock)
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def __post_init__(self) -> None:
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.faults: list[Fault] = []
        self._fault_ids = itertools.count(1)
        self.fail_next: dict[str, int] = {}
        self.revoked_before = 0.0  # tokens issued before this instant are refused (token expiry fault)
        self.requests: list[dict[str, Any]] = []
        # PowerVS
        self.workspaces: dict[str, dict[str, Any]] = {}
        self.volumes: dict[str, dict[str, dict[str, Any]]] = {}
        self.pools: dict[str, list[dict[str, Any]]] = {}
        self.vms: dict[str, dict[str, dict[str, Any]]] = {}
        self.groups: dict[str, dict[str, dict[str, Any]]] = {}
        self.relations: dict[str, dict[str, Any]] = {}
        # (zone, partner zone) pairs whose replication site PowerVS reports as not active (``isActive`` false,
        # which IBM's Go encoder omits)
        self.inactive_sites: set[tuple[str, str]] = set()
        self.onboardings: dict[str, dict[str, dict[str, Any]]] = {}
        self.clone_tasks: dict[str, dict[str, dict[str, Any]]] = {}
        self.jobs: dict[str, dict[str, dict[str, Any]]] = {}
        # Key Protect
        self.kms: dict[str, dict[str, Any]] = {DEMO_KMS_INSTANCE_ID: {"rings": {}, "keys": {}}}
        # IAM, resource controller, DR Automation, metering
        self.service_ids: dict[str, dict[str, Any]] = {}
        self.api_keys: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.policy_accounts: dict[str, str] = {}  # policy id -> its account (IAM's Policy model has no account)
        self.resource_instances: dict[str, dict[str, Any]] = {}
        self.deployments: dict[str, dict[str, Any]] = {}
        self.usage: dict[tuple[str, str, int, int], dict[str, Any]] = {}
        self._seed()
        self._seed_volumes = {g: set(vols) for g, vols in self.volumes.items()}

    # clock ----------------------------------------------------------------------------------------
    def schedule(self, steps: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._events, (time.time() + steps * self.step_seconds, next(self._seq), fn))

    def tick(self) -> None:
        now = time.time()
        while self._events and self._events[0][0] <= now:
            _, _, fn = heapq.heappop(self._events)
            fn()

    def take_failure(self, kind: str) -> bool:
        if self.fail_next.get(kind, 0) > 0:
            self.fail_next[kind] -= 1
            return True
        return False

    # seed -----------------------------------------------------------------------------------------
    def _seed(self) -> None:
        for kind, _natural, state, data in demo_rows():
            if kind == "workspace":
                guid = data["crn"].rstrip(":").rsplit(":", 1)[-1]
                self.workspaces[guid] = {"guid": guid, "crn": data["crn"], "zone": data["zone"],
                                         "account": data["account"], "name": data["name"]}
                for table in (self.volumes, self.pools, self.vms, self.groups, self.onboardings,
                              self.clone_tasks, self.jobs):
                    table[guid] = {} if table is not self.pools else []  # type: ignore[assignment]
            else:
                guid = data["workspace_crn"].rstrip(":").rsplit(":", 1)[-1]
                if kind == "storage_pool":
                    self.pools[guid].append({"poolName": data["pool"], "storageType": data["pool"].split("-")[0],
                                             "replicationEnabled": data["replication_enabled"],
                                             "availableCapacity": 20000, "totalCapacity": 40000,
                                             "maxAllocationSize": 20000, "storageHost": "fake-flashsystem"})
                elif kind == "volume":
                    vid = data["volume_id"]
                    self.volumes[guid][vid] = self._new_volume(guid, vid, vid, data["pool"], data["size_gb"])
                elif kind == "pvm_instance":
                    self.vms[guid][data["vm_id"]] = {"pvmInstanceID": data["vm_id"], "serverName": data["vm_id"],
                                                     "status": state, "processors": 1, "memory": 8,
                                                     "osType": "aix", "owner": None}

    def _new_volume(self, guid: str, vid: str, name: str, pool: str, size: float) -> dict[str, Any]:
        now = time.time()
        return {"volumeID": vid, "name": name, "size": size, "state": "available", "diskType": pool.split("-")[0],
                "volumePool": pool, "bootable": False, "shareable": False, "replicationEnabled": False,
                "replicationStatus": "disabled", "groupID": None, "consistencyGroupName": None,
                "auxVolumeName": None, "auxiliary": False, "masterVolumeName": None, "primaryRole": None,
                "replicationType": None, "replicationSites": [], "pvmInstanceIDs": [],
                "creationDate": iso(now), "lastUpdateDate": iso(now),
                "wwn": "6005076810" + uuid.uuid5(uuid.NAMESPACE_URL, f"{guid}/{vid}").hex[:22].upper(),
                "crn": f"{self.workspaces[guid]['crn'].rstrip(':')}:volume:{vid}"}

    def snapshot(self) -> dict[str, Any]:
        """What exists beyond the seeded account (for demos and tests): groups, onboarded and cloned
        volumes, keys, IAM artefacts, DR Automation instances and deployments, usage records."""
        seeded = {(g, v) for g, vols in self._seed_volumes.items() for v in vols}
        return {
            "volume_groups": [{"workspace": self.workspaces[g]["zone"], **{k: grp[k] for k in (
                "id", "name", "status", "consistencyGroupName", "auxiliary", "volumeIDs")},
                "state": self.relations.get(grp["consistencyGroupName"], {}).get("state")}
                for g, grps in self.groups.items() for grp in grps.values() if not grp.get("deleted")],
            "volumes": [{"workspace": self.workspaces[g]["zone"], "volumeID": v["volumeID"], "name": v["name"],
                         "replicationEnabled": v["replicationEnabled"], "groupID": v["groupID"]}
                        for g, vols in self.volumes.items() for v in vols.values()
                        if (g, v["volumeID"]) not in seeded or v["replicationEnabled"] or v["groupID"]],
            "vms": [{"workspace": self.workspaces[g]["zone"], "id": vm["pvmInstanceID"], "name": vm["serverName"],
                     "status": vm["status"]} for g, vms in self.vms.items() for vm in vms.values()
                    if vm.get("owner") is not None or vm["status"] != "ACTIVE"],
            "key_rings": [r for kp in self.kms.values() for r in kp["rings"].values()],
            "keys": [{k: key[k] for k in ("id", "name", "state", "keyRingID")} for kp in self.kms.values()
                     for key in kp["keys"].values()],
            "service_ids": [{"id": s["id"], "name": s["name"]} for s in self.service_ids.values()],
            "api_keys": [{"id": k["id"], "name": k["name"], "iam_id": k["iam_id"]} for k in self.api_keys.values()],
            "policies": [{"id": p["id"], "description": p["description"]} for p in self.policies.values()],
            "resource_instances": [{"guid": r["guid"], "name": r["name"], "state": r["state"]}
                                   for r in self.resource_instances.values()],
            "deployments": [{"instance": guid, "status": d.get("status"), "managed": sorted(d["managed"])}
                            for guid, d in self.deployments.items()],
            "usage_records": len(self.usage),
        }

    # lookups --------------------------------------------------------------------------------------
    def workspace(self, guid: str, crn_header: str | None) -> dict[str, Any]:
        ws = self.workspaces.get(guid)
        if ws is None:
            raise FakeError(404, "not found", f"cloud instance {guid} not found")
        if not crn_header:
            raise FakeError(400, "bad request", "the CRN header (the workspace CRN) is required")
        if crn_header != ws["crn"]:
            raise FakeError(403, "forbidden", f"CRN header {crn_header} does not name cloud instance {guid}")
        return ws

    def volume(self, guid: str, vid: str) -> dict[str, Any]:
        vol = self.volumes[guid].get(vid)
        if vol is None:
            raise FakeError(404, "not found", f"volume {vid} not found")
        return vol

    def group(self, guid: str, gid: str) -> dict[str, Any]:
        g = self.groups[guid].get(gid)
        if g is None or g.get("deleted"):
            raise FakeError(404, "not found", f"volume group {gid} not found")
        return g

    def pool_capable(self, guid: str, pool: str) -> bool:
        return any(p["poolName"] == pool and p["replicationEnabled"] for p in self.pools[guid])

    # PowerVS: volumes -----------------------------------------------------------------------------
    def volume_action(self, guid: str, vid: str, body: dict[str, Any]) -> None:
        vol = self.volume(guid, vid)
        if "replicationEnabled" not in body and "targetStorageTier" not in body:
            raise FakeError(400, "bad request", "one of replicationEnabled, targetStorageTier is required")
        if "replicationEnabled" in body:
            enable = body["replicationEnabled"]
            if not isinstance(enable, bool):
                raise FakeError(400, "bad request", "replicationEnabled must be a boolean")
            if enable and not self.pool_capable(guid, vol["volumePool"]):
                raise FakeError(400, "bad request", f"storage pool {vol['volumePool']} of volume {vid} is not "
                                                    "replication-enabled")
            if not enable and vol["groupID"]:
                raise FakeError(400, "bad request", f"volume {vid} is part of volume group {vol['groupID']}; "
                                                    "remove it from the group first")
            zone = self.workspaces[guid]["zone"]

            def apply() -> None:
                vol["replicationEnabled"] = enable
                vol["replicationStatus"] = "enabled" if enable else "disabled"
                vol["auxVolumeName"] = f"aux_{vid}_{secrets.token_hex(2)}" if enable else None
                vol["primaryRole"] = "master" if enable else None
                vol["replicationType"] = "global" if enable else None
                vol["replicationSites"] = partner_zones(zone) if enable else []
                vol["lastUpdateDate"] = iso(time.time())
            self.schedule(1, apply)

    def delete_volume(self, guid: str, vid: str) -> None:
        """DELETE .../volumes/{id}: 404 for an unknown volume, 410 (gone) for one already being deleted."""
        vol = self.volume(guid, vid)
        if vol["state"] == "deleting":
            raise FakeError(410, "gone", f"volume {vid} is already being deleted")
        if vol["groupID"]:
            raise FakeError(400, "bad request", f"volume {vid} is part of volume group {vol['groupID']}")
        if vol["pvmInstanceIDs"]:
            raise FakeError(400, "bad request", f"volume {vid} is attached to {', '.join(vol['pvmInstanceIDs'])}")
        vol["state"] = "deleting"
        self.schedule(1, lambda: self.volumes[guid].pop(vid, None))

    # PowerVS: volume groups -----------------------------------------------------------------------
    def _check_groupable(self, guid: str, vids: list[str], group_id: str | None) -> str:
        if not isinstance(vids, list) or not vids or not all(isinstance(v, str) for v in vids):
            raise FakeError(400, "bad request", "volumeIDs must be a non-empty list of volume ids")
        pools = set()
        for vid in vids:
            vol = self.volume(guid, vid)
            if not vol["replicationEnabled"]:
                raise FakeError(400, "bad request", f"volume {vid} is not replication-enabled")
            if vol["groupID"] and vol["groupID"] != group_id:
                raise FakeError(409, "conflict", f"volume {vid} already belongs to volume group {vol['groupID']}")
            pools.add(vol["volumePool"])
        if len(pools) > 1:
            raise FakeError(400, "bad request", "all volumes of a volume group must be in one storage pool")
        return pools.pop()

    def create_group(self, guid: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create a volume group; returns it and whether the create was partial (IBM answers 206 with a
        ``statusDetail``: the group exists, but some of the volumes asked for are not in it)."""
        name, vids = body.get("name"), body.get("volumeIDs")
        if not name and not body.get("consistencyGroupName"):
            raise FakeError(400, "bad request", "name or consistencyGroupName is required")
        pool = self._check_groupable(guid, vids, None)  # type: ignore[arg-type]
        if any(g["name"] == name and not g.get("deleted") for g in self.groups[guid].values()):
            raise FakeError(409, "conflict", f"a volume group named {name} already exists")
        gid = _uuid()
        cg = body.get("consistencyGroupName") or f"rccg-{secrets.token_hex(2)}-{secrets.token_hex(2)}"
        members = list(vids)  # type: ignore[arg-type]
        partial = len(members) > 1 and self.take_failure("volume_group_partial")
        if partial:
            left_out = members[1:]
            members = members[:1]
        group = {"id": gid, "name": name or cg, "status": "creating", "consistencyGroupName": cg,
                 "replicationStatus": "enabled", "auxiliary": False, "storagePool": pool, "volumeIDs": members,
                 "replicationSites": partner_zones(self.workspaces[guid]["zone"]), "statusDescription": {"errors": []}}
        if partial:
            group["statusDetail"] = f"volumes {', '.join(left_out)} could not be added to the volume group"
            group["statusDescription"] = {"errors": [{"key": "VOLUME_GROUP_ADD_VOLUMES_FAILED", "message":
                                                      "injected failure: volumes not added", "volIDs": left_out}]}
        self.groups[guid][gid] = group
        self.relations[cg] = {"state": "inconsistent_copying", "primaryRole": "master", "since": None, "freeze": None,
                              "cycle": CYCLE_PERIOD_SECONDS, "master": guid, "progress": 0}
        for vid in members:
            self.volumes[guid][vid].update(groupID=gid, consistencyGroupName=cg)
        if self.take_failure("volume_group"):
            self.schedule(1, lambda: group.update(status="error", statusDescription={"errors": [
                {"key": "VOLUME_GROUP_CREATE_FAILED", "message": "injected failure: storage error"}]}))
            return group, partial
        self.schedule(1, lambda: group.update(status="available"))
        self._copy(cg, "master", steps=2)
        return group, partial

    def _copy(self, cg: str, role: str, steps: float = 2) -> None:
        rel = self.relations[cg]
        rel.update(state="inconsistent_copying", primaryRole=role, since=None, progress=10)
        token = object()
        rel["token"] = token

        def consistent() -> None:
            if rel.get("token") is token and rel["state"] == "inconsistent_copying":
                rel.update(state="consistent_copying", since=time.time(), progress=100)
        self.schedule(steps, consistent)

    def freeze_time(self, rel: dict[str, Any]) -> float | None:
        if rel["state"] == "consistent_copying" and rel["since"]:
            now = time.time()
            return rel["since"] + ((now - rel["since"]) // rel["cycle"]) * rel["cycle"]
        return rel.get("freeze")

    @staticmethod
    def _settled(group: dict[str, Any], what: str) -> None:
        # PowerVS runs one change of a volume group at a time: another while it is creating, updating or
        # deleting is refused.
        if group["status"] not in ("available", "error"):
            raise FakeError(409 if what == "update" else 400, "bad request",
                            f"volume group {group['id']} is {group['status']}; cannot {what} it now")

    def update_group(self, guid: str, gid: str, body: dict[str, Any]) -> None:
        """``PUT``: asynchronous. The group is ``updating`` and its membership changes when the update
        finishes (a step later); only then is a removed volume out of the group."""
        group = self.group(guid, gid)
        self._settled(group, "update")
        add, remove = body.get("addVolumes") or [], body.get("removeVolumes") or []
        if not add and not remove:
            raise FakeError(400, "bad request", "addVolumes or removeVolumes is required")
        if add:
            pool = self._check_groupable(guid, add, gid)
            if pool != group["storagePool"]:
                raise FakeError(400, "bad request", "all volumes of a volume group must be in one storage pool")
        for vid in remove:
            if vid not in group["volumeIDs"]:
                raise FakeError(400, "bad request", f"volume {vid} is not in volume group {gid}")
        group["status"] = "updating"

        def finish() -> None:
            for vid in add:
                self.volumes[guid][vid].update(groupID=gid, consistencyGroupName=group["consistencyGroupName"])
                if vid not in group["volumeIDs"]:
                    group["volumeIDs"].append(vid)
            for vid in remove:
                if vid in group["volumeIDs"]:
                    group["volumeIDs"].remove(vid)
                vol = self.volumes[guid].get(vid)
                if vol is not None:
                    vol.update(groupID=None, consistencyGroupName=None)
            group["status"] = "available"
        self.schedule(1, finish)

    def delete_group(self, guid: str, gid: str) -> None:
        """``DELETE``: asynchronous (``deleting``, gone a step later); only an empty, settled group."""
        group = self.group(guid, gid)
        self._settled(group, "delete")
        if group["volumeIDs"]:
            raise FakeError(400, "bad request", f"volume group {gid} still has {len(group['volumeIDs'])} volumes")
        group["status"] = "deleting"
        self.schedule(1, lambda: group.update(deleted=True))

    def disconnect(self, cg: str) -> None:
        """A site is lost: the consistency group's link is broken (``inconsistent_disconnected``)."""
        rel = self.relations[cg]
        rel.update(state="inconsistent_disconnected", disconnected=True, token=None, since=None,
                   freeze=self.freeze_time(rel) or rel.get("freeze"))

    def group_action(self, guid: str, gid: str, body: dict[str, Any]) -> None:
        """Start, stop or reset a volume group's replication. The group acted on shows its new
        ``replicationStatus`` at once; its partner in the other workspace follows a step later (IBM: "after
        sometime, the associated volume group ... is updated"). Starting with ``source: aux`` (failback's
        resync from the auxiliary volumes) is an action on the auxiliary volume group, at the secondary; on
        the primary's group PowerVS refuses it."""
        group = self.group(guid, gid)
        keys = [k for k in ("start", "stop", "reset") if k in body]
        if len(keys) != 1:
            raise FakeError(400, "bad request", "exactly one of start, stop, reset is required")
        rel = self.relations[group["consistencyGroupName"]]
        peers = [g for ws in self.groups.values() for g in ws.values()
                 if g["consistencyGroupName"] == group["consistencyGroupName"] and not g.get("deleted")
                 and g is not group]

        def follow(status: str) -> None:
            group["replicationStatus"] = status
            for g in peers:
                self.schedule(1, lambda g=g: g.update(replicationStatus=status))
        if keys[0] == "stop":
            access = (body["stop"] or {}).get("access")
            if not isinstance(access, bool):
                raise FakeError(400, "bad request", "stop.access must be a boolean")
            if group["replicationStatus"] != "enabled":
                raise FakeError(400, "bad request", f"volume group {gid} replication is not enabled; cannot stop")
            idle = "idling_disconnected" if rel.get("disconnected") else "idling"
            rel.update(freeze=self.freeze_time(rel) or time.time(), since=None, token=None,
                       state=idle if access else "consistent_stopped")
            follow("disabled")
        elif keys[0] == "start":
            source = (body["start"] or {}).get("source")
            if source not in ("master", "aux"):
                raise FakeError(400, "bad request", "start.source must be master or aux")
            if source == "aux" and not group["auxiliary"]:
                raise FakeError(400, "bad request", f"volume group {gid} holds the primary volumes: start it with "
                                                    "source aux from its auxiliary volume group")
            if group["replicationStatus"] == "enabled":
                raise FakeError(400, "bad request", f"volume group {gid} replication is already enabled")
            follow("enabled")
            rel.pop("disconnected", None)
            self._copy(group["consistencyGroupName"], source, steps=2)
        else:
            if group["status"] != "error":
                raise FakeError(400, "bad request", f"volume group {gid} is not in error")
            group["status"] = "available"

    # PowerVS: onboarding and clones ---------------------------------------------------------------
    def onboard(self, guid: str, body: dict[str, Any]) -> dict[str, Any]:
        entries = body.get("Volumes")  # VolumeOnboardingCreate spells it with a capital V
        if not isinstance(entries, list) or not entries:
            raise FakeError(400, "bad request", "Volumes is required")
        plan: list[tuple[str, dict[str, Any], str]] = []
        here = self.workspaces[guid]
        for entry in entries:
            src_crn = entry.get("sourceCRN")
            src = next((w for w in self.workspaces.values() if w["crn"] == src_crn), None)
            if src is None:
                raise FakeError(400, "bad request", f"sourceCRN {src_crn} is not a workspace")
            if src["account"] != here["account"] or frozenset((src["zone"], here["zone"])) not in GRS_PAIRS:
                raise FakeError(400, "bad request", f"{src['zone']} does not replicate to {here['zone']}")
            for aux in entry.get("auxiliaryVolumes") or []:
                name = aux.get("auxVolumeName")
                master = next((v for v in self.volumes[src["guid"]].values() if v["auxVolumeName"] == name and name),
                              None)
                if master is None:
                    raise FakeError(400, "bad request", f"auxiliary volume {name} not found at the source")
                plan.append((src["guid"], master, aux.get("name") or name))
        oid = _uuid()
        task = {"id": oid, "description": body.get("description"), "status": "InProgress", "progress": 0,
                "inputVolumes": [m["volumeID"] for _, m, _ in plan], "creationTimestamp": iso(time.time()),
                "results": {"onboardedVolumes": [], "volumeOnboardingFailures": []}}
        self.onboardings[guid][oid] = task
        failing = self.take_failure("onboarding")

        def finish() -> None:
            if failing:
                task.update(status="Failure", progress=100, results={"onboardedVolumes": [], "volumeOnboardingFailures":
                            [{"failureMessage": "injected failure: auxiliary volume not found on the storage",
                              "volumes": task["inputVolumes"]}]})
                return
            done = []
            for src_guid, master, name in plan:
                cg = master["consistencyGroupName"]
                vid = _uuid()
                vol = self._new_volume(guid, vid, name, master["volumePool"], master["size"])
                vol.update(auxiliary=True, replicationEnabled=True, replicationStatus="enabled", primaryRole="master",
                           masterVolumeName=master["name"], replicationType="global",
                           auxVolumeName=master["auxVolumeName"], consistencyGroupName=cg)
                if cg:
                    aux_group = next((g for g in self.groups[guid].values()
                                      if g["consistencyGroupName"] == cg and not g.get("deleted")), None)
                    if aux_group is None:
                        # IBM: at the secondary the volume group's name is its consistencyGroupName
                        aux_group = {"id": _uuid(), "name": cg, "status": "available",
                                     "consistencyGroupName": cg, "auxiliary": True, "volumeIDs": [],
                                     "replicationStatus": self.groups[src_guid][master["groupID"]]["replicationStatus"],
                                     "storagePool": master["volumePool"], "replicationSites": [],
                                     "statusDescription": {"errors": []}}
                        self.groups[guid][aux_group["id"]] = aux_group
                    aux_group["volumeIDs"].append(vid)
                    vol["groupID"] = aux_group["id"]
                self.volumes[guid][vid] = vol
                done.append(vid)
            task.update(status="Success", progress=100, results={"onboardedVolumes": done,
                                                                 "volumeOnboardingFailures": []})
        self.schedule(0.5, lambda: task.update(progress=50))
        self.schedule(2, finish)
        return task

    def clone(self, guid: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /pcloud/v2/.../volumes/clone, as VolumesCloneAsyncRequest documents it: the clones are named
        ``clone-<name>-<5 random digits>`` (one volume) or ``clone-<name[:20]>-<digits>-<n>`` (several: the name
        is cut to 20 characters); a clone is replicated like its source unless ``targetReplicationEnabled`` is
        false. The clone volumes exist (``creating``) from the start of the task, so a client that lost the
        answer finds them in the volume list; a failed task leaves them in ``error``."""
        name, vids = body.get("name"), body.get("volumeIDs")
        if not name or not isinstance(vids, list) or not vids:
            raise FakeError(400, "bad request", "name and volumeIDs are required")
        target_replication = body.get("targetReplicationEnabled")
        sources = [self.volume(guid, v) for v in vids]
        base = name[:20] if len(sources) > 1 else name
        digits = f"{secrets.randbelow(100000):05d}"
        zone = self.workspaces[guid]["zone"]
        tid = _uuid()
        cloned: list[dict[str, Any]] = []
        for i, src in enumerate(sources, 1):
            vid = _uuid()
            vol = self._new_volume(guid, vid, f"clone-{base}-{digits}" + (f"-{i}" if len(sources) > 1 else ""),
                                   src["volumePool"], src["size"])
            replicated = src["replicationEnabled"] if target_replication is None else bool(target_replication)
            vol["state"] = "creating"
            if replicated:
                vol.update(replicationEnabled=True, replicationStatus="enabled", replicationType="global",
                           primaryRole="master", replicationSites=partner_zones(zone))
            self.volumes[guid][vid] = vol
            cloned.append({"sourceVolumeID": src["volumeID"], "clonedVolumeID": vid})
        task: dict[str, Any] = {"status": "running", "percentComplete": 0, "clonedVolumes": []}
        self.clone_tasks[guid][tid] = task
        failing = self.take_failure("clone")

        def finish() -> None:
            for c in cloned:
                vol = self.volumes[guid].get(c["clonedVolumeID"])
                if vol is not None and vol["state"] == "creating":
                    vol.update(state="error" if failing else "available", lastUpdateDate=iso(time.time()))
            if failing:
                task.update(status="failed", percentComplete=100, failedReason="injected failure: flash copy failed")
                return
            task.update(status="completed", percentComplete=100, clonedVolumes=cloned)
        self.schedule(1, lambda: task.update(percentComplete=50) if task["status"] == "running" else None)
        self.schedule(2, finish)
        return {"cloneTaskID": tid, "href": f"/pcloud/v2/cloud-instances/{guid}/volumes/clone-tasks/{tid}"}

    # PowerVS: VMs ---------------------------------------------------------------------------------
    def vm_action(self, guid: str, vm_id: str, action: str | None) -> None:
        vm = self.vms[guid].get(vm_id)
        if vm is None:
            raise FakeError(404, "not found", f"pvm-instance {vm_id} not found")
        targets = {"start": "ACTIVE", "stop": "SHUTOFF", "immediate-shutdown": "SHUTOFF", "soft-reboot": "ACTIVE",
                   "hard-reboot": "ACTIVE", "reset-state": "ACTIVE"}
        if action not in targets:
            raise FakeError(400, "bad request", f"action must be one of {', '.join(targets)}")
        target = targets[action]
        if vm["status"] == target and action in ("start", "stop", "immediate-shutdown"):
            return
        vm["status"] = "BUILD" if target == "ACTIVE" else "SHUTOFF" if action == "immediate-shutdown" else "ACTIVE"
        self.schedule(1, lambda: vm.update(status=target))

    BOOT_STEPS = 2  # a created VM is BUILD for this many steps, then ACTIVE

    def create_vms(self, guid: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        """POST .../pvm-instances (``PVMInstanceCreate``; the middleware has checked its required fields): the
        VM is BUILD, attaches its ``volumeIDs`` (which must be available, or shareable) and is ACTIVE after
        ``BOOT_STEPS``. A serverName already in the workspace is refused (409)."""
        name = body["serverName"]
        if any(v["serverName"] == name for v in self.vms[guid].values()):
            raise FakeError(409, "conflict", f"a pvm-instance named {name} already exists")
        vids = body.get("volumeIDs") or []
        for vid in vids:
            vol = self.volume(guid, vid)
            if vol["state"] not in ("available", "in-use") or (vol["pvmInstanceIDs"] and not vol["shareable"]):
                raise FakeError(400, "bad request", f"volume {vid} is {vol['state']} and cannot be attached")
        vid = _uuid()
        vm = {"pvmInstanceID": vid, "serverName": name, "status": "BUILD", "processors": body["processors"],
              "memory": body["memory"], "procType": body["procType"], "imageID": body["imageID"], "osType": "aix",
              "volumeIDs": list(vids), "networkIDs": list(body.get("networkIDs") or []), "owner": "api"}
        for v in vids:
            self.volumes[guid][v].update(pvmInstanceIDs=[vid], state="in-use")
        self.vms[guid][vid] = vm
        self.schedule(self.BOOT_STEPS, lambda: vm.update(status="ACTIVE") if vm["status"] == "BUILD" else None)
        return [vm]

    def delete_vm(self, guid: str, vm_id: str) -> None:
        """DELETE .../pvm-instances/{id}: 404 unknown, 410 while its deletion is under way; its volumes are
        detached (and kept) once it is gone."""
        vm = self.vms[guid].get(vm_id)
        if vm is None:
            raise FakeError(404, "not found", f"pvm-instance {vm_id} not found")
        if vm["status"] == "DELETING":
            raise FakeError(410, "gone", f"pvm-instance {vm_id} is already being deleted")
        vm["status"] = "DELETING"

        def gone() -> None:
            self.vms[guid].pop(vm_id, None)
            for v in vm.get("volumeIDs") or []:
                vol = self.volumes[guid].get(v)
                if vol is not None:
                    vol["pvmInstanceIDs"] = [i for i in vol["pvmInstanceIDs"] if i != vm_id]
                    if not vol["pvmInstanceIDs"] and vol["state"] == "in-use":
                        vol["state"] = "available"
        self.schedule(1, gone)

    # Key Protect ----------------------------------------------------------------------------------
    def kp(self, instance: str | None) -> dict[str, Any]:
        if not instance:
            raise FakeError(400, "BAD_HEADERS_ERR", "Bad Request: the Bluemix-Instance header is required")
        kp = self.kms.get(instance)
        if kp is None:
            raise FakeError(404, "INSTANCE_NOT_FOUND_ERR", f"Not Found: instance {instance} does not exist")
        return kp

    def create_key(self, kp_id: str, ring: str, res: dict[str, Any],
                   created_by: str = "IBMid-fake") -> dict[str, Any]:
        kp = self.kms[kp_id]
        if ring != "default" and ring not in kp["rings"]:
            raise FakeError(404, "KEY_RING_NOT_FOUND_ERR", f"Not Found: key ring {ring} does not exist")
        name = res.get("name")
        if not isinstance(name, str) or not 2 <= len(name) <= 90:
            raise FakeError(400, "BAD_BODY_ERR", "Bad Request: resources[0].name is required (2-90 characters)")
        rotation = res.get("rotation") or {}
        months = rotation.get("interval_month")
        if months is not None and (not isinstance(months, int) or not 1 <= months <= 12):
            raise FakeError(400, "BAD_BODY_ERR", "Bad Request: rotation.interval_month must be 1-12")
        kid = _uuid()
        now = time.time()
        key = {"id": kid, "name": name, "description": res.get("description"),
               "type": "application/vnd.ibm.kms.key+json",
               "state": 1, "extractable": bool(res.get("extractable", True)), "keyRingID": ring, "deleted": False,
               "crn": f"crn:v1:bluemix:public:kms:us-south:a/{DEMO_ACCOUNT}:{kp_id}:key:{kid}",
               "creationDate": iso(now), "lastUpdateDate": iso(now),
               "createdBy": created_by,
               # the policy; who set the key for deletion and until when is ``deletion_auth`` (kms.key_view
               # shows it as dualAuthDelete.keySetForDeletion / authExpiration while it lasts)
               "dualAuthDelete": {"enabled": bool((res.get("dualAuthDelete") or {}).get("enabled"))},
               "deletion_auth": None,
               "rotation": {"enabled": bool(rotation.get("enabled", months is not None)), "interval_month": months},
               "versions": [], "algorithmType": "AES", "algorithmBitSize": 256}
        self._new_version(key)
        kp["keys"][kid] = key
        return key

    @staticmethod
    def _new_version(key: dict[str, Any]) -> dict[str, Any]:
        version = {"id": _uuid(), "creationDate": iso(time.time()),
                   "material": base64.b64encode(AESGCM.generate_key(256)).decode()}
        key["versions"].append(version)
        return version

    def kp_key(self, kp_id: str, key_id: str, *, active: bool = False) -> dict[str, Any]:
        key = self.kms[kp_id]["keys"].get(key_id)
        if key is None:
            raise FakeError(404, "KEY_NOT_FOUND_ERR", f"Not Found: key {key_id} does not exist")
        if active and key["state"] != 1:
            raise FakeError(409, "KEY_ACTION_INVALID_STATE_ERR",
                            f"Conflict: key {key_id} is in state {key['state']}, not Active")
        return key

    @staticmethod
    def _aad(aad: Any) -> bytes:
        if aad is None:
            return b""
        if not isinstance(aad, list) or not all(isinstance(a, str) and len(a) <= 255 for a in aad):
            raise FakeError(400, "BAD_BODY_ERR", "Bad Request: aad must be a list of strings of at most 255 characters")
        return "\x1f".join(aad).encode()

    def wrap(self, kp_id: str, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        key = self.kp_key(kp_id, key_id, active=True)
        if key["extractable"]:
            raise FakeError(400, "KEY_ACTION_INVALID_ERR", "Bad Request: only root keys can wrap")
        aad = self._aad(body.get("aad"))
        generated = "plaintext" not in body
        try:
            dek = os.urandom(32) if generated else base64.b64decode(body["plaintext"], validate=True)
        except ValueError:
            raise FakeError(400, "BAD_BODY_ERR", "Bad Request: plaintext must be base64") from None
        version = key["versions"][-1]
        nonce = os.urandom(12)
        sealed = AESGCM(base64.b64decode(version["material"])).encrypt(nonce, dek, aad)
        out = {"ciphertext": base64.b64encode(uuid.UUID(version["id"]).bytes + nonce + sealed).decode(),
               "keyVersion": {"id": version["id"]}}
        if generated:
            out["plaintext"] = base64.b64encode(dek).decode()
        return out

    def unwrap(self, kp_id: str, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        key = self.kp_key(kp_id, key_id, active=True)
        aad = self._aad(body.get("aad"))
        try:
            blob = base64.b64decode(body.get("ciphertext") or "", validate=True)
            version = next(v for v in key["versions"] if v["id"] == str(uuid.UUID(bytes=blob[:16])))
            dek = AESGCM(base64.b64decode(version["material"])).decrypt(blob[16:28], blob[28:], aad)
        except (ValueError, StopIteration, InvalidTag):
            raise FakeError(422, "UNPROCESSABLE_CIPHERTEXT_ERR",
                            "Unprocessable Entity: the ciphertext or additional authentication data is invalid") \
                from None
        return {"plaintext": base64.b64encode(dek).decode(),
                "keyVersion": {"id": version["id"]}}

    # IAM tokens -----------------------------------------------------------------------------------
    def issue_token(self, iam_id: str, account: str, sub: str) -> dict[str, Any]:
        import jwt

        now = int(time.time())
        claims = {"iam_id": iam_id, "id": iam_id, "sub": sub, "realmid": "iam", "account": {"bss": account},
                  "iat": now, "exp": now + self.token_ttl, "iss": "https://iam.cloud.ibm.com/identity",
                  "grant_type": "urn:ibm:params:oauth:grant-type:apikey", "jti": _uuid(), "issued": time.time()}
        token = jwt.encode(claims, self.secret, algorithm="HS256")
        return {"access_token": token, "refresh_token": "not_supported", "token_type": "Bearer",
                "expires_in": self.token_ttl, "expiration": now + self.token_ttl, "scope": "ibm openid"}

    def check_token(self, header: str | None) -> dict[str, Any]:
        import jwt

        if not header or not header.startswith("Bearer "):
            raise FakeError(401, "BXNIM0308E", "Unauthorized: no bearer token")
        try:
            claims = jwt.decode(header[7:], self.secret, algorithms=["HS256"])
        except jwt.ExpiredSignatureError:
            raise FakeError(401, "BXNIM0408E", "Unauthorized: the token is expired") from None
        except jwt.InvalidTokenError:
            raise FakeError(401, "BXNIM0302E", "Unauthorized: the token is not valid") from None
        if claims.get("issued", 0) < self.revoked_before:
            raise FakeError(401, "BXNIM0408E", "Unauthorized: the token is expired")
        return claims

    # DR Automation --------------------------------------------------------------------------------
    def deploy(self, guid: str, body: dict[str, Any], redeploy: bool) -> dict[str, Any]:
        """Start (or, with ``redeploy``, change the standby of) the orchestrator deployment of DR Automation
        instance ``guid``: ``DRA_DEPLOY_STEPS`` steps, each step's progress in ``primary_description``."""
        inst = self.resource_instances[guid]
        dep = self.deployments.get(guid)
        if dep is not None and not redeploy:
            raise FakeError(409, "already_deployed", f"an orchestrator is already deployed for {guid}")
        ws = self.workspaces.get(body["orchestrator_workspace_id"])
        if ws is None:
            raise FakeError(400, "invalid_workspace", "orchestrator_workspace_id is not a PowerVS workspace")
        if body["location_id"] != ws["zone"]:
            raise FakeError(400, "invalid_location", f"location_id {body['location_id']} is not the zone of the "
                                                     f"orchestrator workspace ({ws['zone']})")
        ha = bool(body.get("orchestrator_ha"))
        if ha and body.get("standby_orchestrator_workspace_id") not in self.workspaces:
            raise FakeError(400, "invalid_workspace", "standby_orchestrator_workspace_id is not a PowerVS workspace")
        now = iso(time.time())
        if dep is None:
            dep = {"deployment_name": body["orchestrator_name"], "orchestrator_workspace": ws["guid"],
                   "managed": {}, "backups": [], "last_updated_orchestrator_deployment_time": now}
            self.deployments[guid] = dep
        dep["request"] = {k: v for k, v in body.items() if k not in ("orchestrator_password", "api_key",
                                                                     "client_secret", "managed_apikey")}
        steps = DRA_REDEPLOY_STEPS if redeploy else DRA_DEPLOY_STEPS
        dep.update(status="in progress", primary_orchestrator_status="DEPLOYING", orchestrator_config_status="",
                   orchestrator_ha=ha, primary_error_description="", primary_description=f"1/{steps}: validating",
                   standby_workspace=body.get("standby_orchestrator_workspace_id") if ha else None)
        if ha:
            dep.update(standby_status="DEPLOYING", standby_description=f"1/{steps}: validating",
                       orch_standby_node_addition_status="in progress")
        failing = self.take_failure("dra_deploy")
        phases = [(0.1, "creating the orchestrator VM"), (0.5, "installing KSYS"), (0.8, "configuring sites"),
                  (0.95, "discovering workgroups")]
        for i in range(2, steps + 1):
            phase = next((text for share, text in reversed(phases) if i / steps >= share), "validating")
            self.schedule(i - 1, lambda text=f"{i}/{steps}: {phase}": dep.update(primary_description=text))

        def finish() -> None:
            at = iso(time.time())
            if failing:
                dep.update(status="failed", primary_orchestrator_status="FAILED",
                           primary_error_description="injected failure: orchestrator VM did not boot")
                return
            self._discover(dep)
            dep.update(status="Active", primary_orchestrator_status="ACTIVE",
                       orchestrator_config_status="KSYS-DISCOVERY-SUCCESS", primary_ip_address="10.30.0.11",
                       primary_description=f"{steps}/{steps}: the orchestrator is deployed",
                       last_updated_orchestrator_deployment_time=at)
            if dep["orchestrator_ha"]:
                dep.update(standby_ip_address="10.20.0.12", standby_status="ACTIVE",
                           standby_description="the standby orchestrator is deployed",
                           orch_standby_node_addition_status="success",
                           last_updated_standby_orchestrator_deployment_time=at)
            else:
                dep.update(standby_ip_address="", standby_status="", standby_description="",
                           orch_standby_node_addition_status="")
        self.schedule(steps, finish)
        return {"dashboard_url": f"https://power-dra.cloud.ibm.com/power-dra-ui?instance_id={inst['crn']}",
                "id": inst["crn"], "orchestrator_location_type": body["orchestrator_location_type"],
                "location_id": body["location_id"], "orchestrator_name": body["orchestrator_name"],
                "orchestrator_workspace_id": body["orchestrator_workspace_id"], "orchestrator_ha": ha,
                "machine_type": body["machine_type"], "guid": guid,
                **{k: body[k] for k in ("ssh_key_name", "standby_ssh_key_name", "secret", "secret_group", "tier",
                                        "standby_orchestrator_name", "standby_orchestrator_workspace_id",
                                        "standby_machine_type", "standby_tier", "region_id", "proxy_ip")
                   if body.get(k) is not None}}

    def _discover(self, dep: dict[str, Any]) -> None:
        """KSYS discovery: the VMs of every workspace replicating into the orchestrator's become managed, each
        with a backup VM (``<vm>_BackUp``, shut off) in the orchestrator's workspace."""
        target = dep["orchestrator_workspace"]
        here = {g["consistencyGroupName"] for g in self.groups[target].values() if not g.get("deleted")}
        sources = {rel["master"] for cg, rel in self.relations.items() if cg in here}
        for src in sorted(sources):
            zone = self.workspaces[src]["zone"]
            for vm in self.vms[src].values():
                dep["managed"][vm["pvmInstanceID"]] = {
                    "vm_name": vm["serverName"], "workgroup_name": f"{vm['serverName']}_WG",
                    "workspace_name": self.workspaces[src]["name"], "region": ZONE_REGION.get(zone),
                    "dr_region": ZONE_REGION.get(self.workspaces[target]["zone"]), "core": "0.5", "memory": "4",
                    "dr_average_time": "0"}
                name = f"{vm['serverName']}_BackUp"
                if not any(b["serverName"] == name and b["owner"] == id(dep) for b in self.vms[target].values()):
                    bid = _uuid()
                    self.vms[target][bid] = {"pvmInstanceID": bid, "serverName": name, "status": "SHUTOFF",
                                             "processors": 0.5, "memory": 4, "osType": "aix", "owner": id(dep)}
                    dep["backups"].append(bid)

    def remove_deployment(self, guid: str) -> None:
        dep = self.deployments.pop(guid, None)
        if dep is None:
            return
        for bid in dep["backups"]:
            self.vms[dep["orchestrator_workspace"]].pop(bid, None)
