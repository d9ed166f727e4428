"""PowerVS replication steps: volumes, replication on and off, volume groups, onboarding, failover and failback.

Everything that drives PowerVS Global Replication Services lives here: checking that the sites and volumes can
be protected, enabling replication on the protected volumes (and disabling it only on those the broker
enabled), the volume group and its GRS consistency group, onboarding the auxiliary volumes at the secondary,
the group actions of failover and failback, and the waits on the group's state.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from broker.domain.errors import PermanentBackendError, TransientBackendError
from broker.domain.protocols import StepContext
from broker.orchestrators.ibmcloud.common import Action, Clients, IbmSteps
from broker.orchestrators.ibmcloud.naming import Names
from broker.orchestrators.ibmcloud.rehearsal import RehearsalSteps

COPYING = ("consistent_copying", "inconsistent_copying")


class ReplicationSteps(IbmSteps):
    """The PowerVS volume and volume-group actions (replication of the protected volumes)."""

    def __init__(self, clients: Clients, rehearsal: RehearsalSteps) -> None:
        super().__init__(clients)
        self.rehearsal = rehearsal  # a group's deletion first removes the rehearsal clones of its replicas
        self._lock = threading.Lock()
        self._enabled_by_op: dict[tuple[str, str], set[str]] = {}

    def check_protection(self, primary_crn: str, secondary_crn: str, volume_ids: Sequence[str],
                         instance_id: str | None = None) -> list[str]:
        problems: list[str] = []
        for field, crn in (("primary_workspace_crn", primary_crn), ("secondary_workspace_crn", secondary_crn)):
            if self.powervs.get_workspace(crn) is None:
                problems.append(f"parameters.{field}: workspace {crn} does not exist or is not visible to the "
                                "broker")
        if problems:
            return problems
        ours = self.powervs.find_volume_group(primary_crn, Names(instance_id).group) if instance_id else None
        pools: dict[str, list[str]] = {}
        for vol_id in volume_ids:
            vol = self.powervs.get_volume(primary_crn, vol_id)
            if vol is None:
                problems.append(f"parameters.protected_volumes: volume {vol_id} does not exist in the primary "
                                "workspace")
                continue
            pools.setdefault(vol.get("volumePool") or "?", []).append(vol_id)
            group = vol.get("groupID")
            if group and (ours is None or group != ours.get("id")):
                problems.append(f"parameters.protected_volumes: volume {vol_id} already belongs to replication "
                                f"group {group}")
        if len(pools) > 1:
            listed = "; ".join(f"{pool}: {', '.join(v)}" for pool, v in sorted(pools.items()))
            problems.append(f"parameters.protected_volumes: volumes must be in one storage pool ({listed})")
        if pools:
            capable = {p.get("poolName"): bool(p.get("replicationEnabled"))
                       for p in self.powervs.storage_pools(primary_crn)}
            for pool in pools:
                if not capable.get(pool, False):
                    problems.append(f"parameters.protected_volumes: storage pool {pool} is not "
                                    "replication-capable")
        return problems

    def validate_sites(self, ctx: StepContext) -> Mapping[str, Any]:
        primary, secondary = self._sites(ctx)
        problems = self.check_protection(primary, secondary, ctx.parameters.get("protected_volumes") or [],
                                         ctx.instance_id)
        if problems:
            raise PermanentBackendError("; ".join(problems))
        p, s = self._ws(primary), self._ws(secondary)
        sites = self.powervs.dr_locations(primary)
        partners = {r.get("location") for r in sites.get("replicationSites") or [] if r.get("isActive", True)}
        if s.zone not in partners:
            raise PermanentBackendError(f"PowerVS reports no replication site {s.zone} for {p.zone} "
                                        f"(replication sites: {', '.join(sorted(x for x in partners if x)) or 'none'})")
        return {}

    def _enable(self, ctx: StepContext, primary: str, volume_ids: Sequence[str]) -> set[str]:
        """Enable replication where it is off; return the volumes this operation enabled.

        Which volumes were off is remembered per operation from its first attempt, so a retry after a
        transient error still counts the volumes the earlier attempt enabled as the broker's (only a crash
        between the enabling and the step's record loses that; such a volume keeps replication on).
        """
        key = (ctx.operation_id, ctx.instance_id)
        with self._lock:
            known = self._enabled_by_op.get(key)
        states = {}
        for vol_id in volume_ids:
            vol = self.powervs.get_volume(primary, vol_id)
            if vol is None:
                raise PermanentBackendError(f"volume {vol_id} not found (404)")
            states[vol_id] = bool(vol.get("replicationEnabled"))
        mine = {v for v, on in states.items() if not on} | (known or set())
        with self._lock:
            self._enabled_by_op[key] = mine
        todo = [v for v, on in states.items() if not on]
        for vol_id in todo:
            self.powervs.volume_action(primary, vol_id, {"replicationEnabled": True})
        self._wait_volumes(primary, todo, True)
        return mine & set(volume_ids)

    def enable_replication(self, ctx: StepContext) -> Mapping[str, Any]:
        primary, _ = self._sites(ctx)
        ours = set(self._recorded(ctx.instance_id, "broker_enabled_volumes") or [])
        ours |= self._enable(ctx, primary, list(ctx.parameters.get("protected_volumes") or []))
        # Only the volumes this instance enabled are disabled again at tear-down.
        return {"broker_enabled_volumes": sorted(ours)}

    def _wait_volumes(self, crn: str, volume_ids: Sequence[str], enabled: bool) -> None:
        def probe() -> tuple[bool, str]:
            pending = [v for v in volume_ids
                       if bool((self.powervs.get_volume(crn, v) or {}).get("replicationEnabled")) != enabled]
            return not pending, f"replication {'enabling' if enabled else 'disabling'} on {', '.join(pending)}"
        if volume_ids:
            self._wait("PowerVS volume replication", probe)

    def create_replication_group(self, ctx: StepContext) -> Mapping[str, Any]:
        primary, _ = self._sites(ctx)
        names = Names(ctx.instance_id)
        group = self.powervs.find_volume_group(primary, names.group)
        if group is None:
            group = self.powervs.create_volume_group(primary, names.group,
                                                     list(ctx.parameters.get("protected_volumes") or []))

        def probe() -> tuple[bool, str]:
            g = self.powervs.get_volume_group(primary, group["id"]) or {}
            if g.get("status") == "error":
                raise PermanentBackendError(f"volume group {group['id']} is in error: {g.get('statusDescription')}")
            return g.get("status") == "available", f"status {g.get('status')}"
        self._wait("PowerVS volume group", probe)
        return {"volume_group_id": group["id"]}

    def wait_role(self, role: str) -> Action:
        def act(ctx: StepContext) -> Mapping[str, Any]:
            primary, _ = self._sites(ctx)
            group = self._require_group(ctx)

            def probe() -> tuple[bool, str]:
                d = self.powervs.storage_details(primary, group["id"])
                if d.get("state") in ("inconsistent_stopped", "consistent_stopped", "idling_disconnected",
                                      "consistent_disconnected") and d.get("primaryRole") == role:
                    raise PermanentBackendError(f"replication group stopped in state {d.get('state')}")
                return (d.get("state") == "consistent_copying" and d.get("primaryRole") == role,
                        f"{d.get('state')} (primary role {d.get('primaryRole')})")
            self._wait("GRS consistency group", probe)
            return {"dr_state": {"replication": "consistent_copying"}}
        return act

    def onboard_auxiliary_volumes(self, ctx: StepContext) -> Mapping[str, Any]:
        primary, secondary = self._sites(ctx)
        names = Names(ctx.instance_id)
        self._require_group(ctx)
        present = {v.get("name") for v in self._aux_volumes(ctx)}
        wanted = []
        for vol_id in ctx.parameters.get("protected_volumes") or []:
            if names.aux_volume(vol_id) in present:
                continue
            vol = self.powervs.get_volume(primary, vol_id) or {}
            if not vol.get("auxVolumeName"):
                raise TransientBackendError(f"volume {vol_id} has no auxiliary volume yet")
            wanted.append({"auxVolumeName": vol["auxVolumeName"], "name": names.aux_volume(vol_id)})
        if wanted:
            task = next((o for o in self.powervs.list_onboardings(secondary)
                         if o.get("description") == names.tag and o.get("status") not in ("Failure", "failed")),
                        None)
            if task is None:
                task = self.powervs.onboard(secondary, {"volumes": [{"sourceCRN": primary,
                                                                     "auxiliaryVolumes": wanted}],
                                                        "description": names.tag})

            def probe() -> tuple[bool, str]:
                o = self.powervs.get_onboarding(secondary, task["id"])
                if o.get("status") in ("Failure", "failed"):
                    failures = (o.get("results") or {}).get("volumeOnboardingFailures") or []
                    why = "; ".join(str(f.get("failureMessage") or f) for f in failures) or "no reason given"
                    raise PermanentBackendError(f"PowerVS volume onboarding {task['id']} failed: {why}")
                return o.get("status") == "Success", f"onboarding {o.get('status')} ({o.get('progress', 0)}%)"
            self._wait("PowerVS volume onboarding", probe)
        aux = self._aux_group_id(ctx)
        if aux is None:
            raise TransientBackendError("the auxiliary volume group has not appeared at the secondary yet")
        return {"auxiliary_volume_group_id": aux}

    def check_replication(self, ctx: StepContext) -> Mapping[str, Any]:
        state = self._details(ctx).get("state")
        if state != "consistent_copying":
            raise PermanentBackendError(f"replication group is {state}, not consistent_copying")
        return {}

    def apply_volume_changes(self, ctx: StepContext) -> Mapping[str, Any]:
        """The update's PowerVS part: protect the volumes added to ``protected_volumes``, release the removed."""
        primary, secondary = self._sites(ctx)
        out: dict[str, Any] = {}
        group = self._group(ctx)
        if group is None:
            return out
        detail = self.powervs.get_volume_group(primary, group["id"]) or {}
        current = list(detail.get("volumeIDs") or [])
        wanted = list(ctx.parameters.get("protected_volumes") or [])
        added = [v for v in wanted if v not in current]
        removed = [v for v in current if v not in wanted]
        ours = set(self._recorded(ctx.instance_id, "broker_enabled_volumes") or [])
        if added:
            ours |= self._enable(ctx, primary, added)
            self.powervs.update_volume_group(primary, group["id"], add=added)
            self.onboard_auxiliary_volumes(ctx)
        if removed:
            self.powervs.update_volume_group(primary, group["id"], remove=removed)
            names = Names(ctx.instance_id)
            by_name = {v.get("name"): v for v in self._aux_volumes(ctx)}
            for vol_id in removed:
                aux = by_name.get(names.aux_volume(vol_id))
                if aux is not None:
                    aux_group = (self.powervs.get_volume(secondary, aux["volumeID"]) or {}).get("groupID")
                    if aux_group:
                        self.powervs.update_volume_group(secondary, aux_group, remove=[aux["volumeID"]])
                    self.powervs.delete_volume(secondary, aux["volumeID"])
                if vol_id in ours:
                    self.powervs.volume_action(primary, vol_id, {"replicationEnabled": False})
                    ours.discard(vol_id)
        out["broker_enabled_volumes"] = sorted(ours)
        return out

    def delete_replication_group(self, ctx: StepContext) -> Mapping[str, Any]:
        self.rehearsal.cleanup_rehearsal(ctx)
        group = self._group(ctx)
        if group is None:
            return {}
        primary, _ = self._sites(ctx)
        detail = self.powervs.get_volume_group(primary, group["id"]) or {}
        volumes = list(detail.get("volumeIDs") or [])
        if volumes:
            # The documented order: remove the volumes, then delete the (empty) group.
            self.powervs.update_volume_group(primary, group["id"], remove=volumes)

            def emptied() -> tuple[bool, str]:
                g = self.powervs.get_volume_group(primary, group["id"]) or {}
                return not g.get("volumeIDs"), f"{len(g.get('volumeIDs') or [])} volumes left"
            self._wait("PowerVS volume group emptying", emptied)
        self.powervs.delete_volume_group(primary, group["id"])

        def gone() -> tuple[bool, str]:
            return self.powervs.get_volume_group(primary, group["id"]) is None, "deleting"
        self._wait("PowerVS volume group deletion", gone)
        return {"deleted_volume_group": group["id"]}

    def disable_replication(self, ctx: StepContext) -> Mapping[str, Any]:
        primary = ctx.parameters.get("primary_workspace_crn")
        ours = list(self._recorded(ctx.instance_id, "broker_enabled_volumes") or [])
        if not primary or not ours:
            return {}
        changed = []
        for vol_id in ours:
            vol = self.powervs.get_volume(primary, vol_id)
            if vol is not None and vol.get("replicationEnabled"):
                self.powervs.volume_action(primary, vol_id, {"replicationEnabled": False})
                changed.append(vol_id)
        self._wait_volumes(primary, changed, False)
        return {"broker_enabled_volumes": []}

    def remove_auxiliary_volumes(self, ctx: StepContext) -> Mapping[str, Any]:
        _, secondary = self._sites(ctx)
        aux = self._aux_volumes(ctx)
        group_id = self._aux_group_id(ctx)
        if group_id:
            g = self.powervs.get_volume_group(secondary, group_id) or {}
            if g.get("volumeIDs"):
                self.powervs.update_volume_group(secondary, group_id, remove=list(g["volumeIDs"]))
            self.powervs.delete_volume_group(secondary, group_id)
        for vol in aux:
            self.powervs.delete_volume(secondary, vol["volumeID"])
        # PowerVS deletes volumes asynchronously (state "deleting"); the tear-down is done when they are gone.
        self._wait("deleting the auxiliary volumes", lambda: (not self._aux_volumes(ctx), "deleting"))
        return {"removed_auxiliary_volumes": [v["volumeID"] for v in aux]}

    def _group_state_wait(self, crn: str, group_id: str, state: str, role: str | None = None) -> None:
        def probe() -> tuple[bool, str]:
            d = self.powervs.storage_details(crn, group_id)
            ok = d.get("state") == state and (role is None or d.get("primaryRole") == role)
            return ok, f"{d.get('state')} (primary role {d.get('primaryRole')})"
        self._wait("GRS consistency group", probe)

    def failover_replication(self, ctx: StepContext) -> Mapping[str, Any]:
        _, secondary = self._sites(ctx)
        aux = self._aux_group_id(ctx)
        if aux is None:
            raise PermanentBackendError("the auxiliary replication group does not exist")
        if self.powervs.storage_details(secondary, aux).get("state") != "idling":
            # Stop with access at the secondary: the replicas become writable there.
            self.powervs.volume_group_action(secondary, aux, {"stop": {"access": True}})
        self._group_state_wait(secondary, aux, "idling")
        return {"dr_state": {"replication": "idling"}}

    def start_group(self, source: str) -> Action:
        def act(ctx: StepContext) -> Mapping[str, Any]:
            primary, _ = self._sites(ctx)
            group = self._require_group(ctx)
            d = self.powervs.storage_details(primary, group["id"])
            running = d.get("state") in COPYING and d.get("primaryRole") == source
            if not running:
                self.powervs.volume_group_action(primary, group["id"], {"start": {"source": source}})
            return {"dr_state": {"replication": "copying"}}
        return act

    def stop_primary_with_access(self, ctx: StepContext) -> Mapping[str, Any]:
        primary, _ = self._sites(ctx)
        group = self._require_group(ctx)
        if self.powervs.storage_details(primary, group["id"]).get("state") != "idling":
            self.powervs.volume_group_action(primary, group["id"], {"stop": {"access": True}})
        self._group_state_wait(primary, group["id"], "idling")
        return {"dr_state": {"replication": "idling"}}
