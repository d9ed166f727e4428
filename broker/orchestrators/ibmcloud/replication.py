"""PowerVS replication steps: volumes, replication on and off, volume groups, onboarding, failover and failback.

Everything that drives PowerVS Global Replication Services lives here: checking that the sites and volumes can
be protected, enabling replication on the protected volumes (and disabling it only on those the broker
enabled), the volume group and its GRS consistency group, onboarding the auxiliary volumes at the secondary,
the group actions of failover and failback, and the waits on the group's state.

As IBM's definitions have it: a volume group's members are read from ``.../details`` (``VolumeGroup`` has
none); its ``PUT`` and ``DELETE`` are asynchronous, so every change waits for the group to settle
(``available``) or be gone; failback's resync starts the auxiliary group at the secondary; an action's
``replicationStatus`` reaches the partner group only after a while; reads inside waits wait out a 429.
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
# Stopped with access: "idling", or "idling_disconnected" when the partner site is unreachable (the failover of
# an unplanned outage). The states in which a wait for copying cannot end by itself:
IDLE = ("idling", "idling_disconnected")
STOPPED = ("inconsistent_stopped", "consistent_stopped", "idling_disconnected", "consistent_disconnected",
           "inconsistent_disconnected")
# VolumeOnboarding.status is a free string in IBM's definition (no enum): the fake answers InProgress, Success,
# Failure; compared case-insensitively with the other spellings IBM's task APIs use.
ONBOARDING_DONE = ("success", "succeeded", "completed", "complete")
ONBOARDING_FAILED = ("failure", "failed", "error")


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
        # Site.isActive is omitempty in IBM's model: an inactive site comes without it, so only true counts.
        partners = {r.get("location") for r in sites.get("replicationSites") or [] if r.get("isActive") is True}
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
        """Create the volume group (found by its name if an earlier attempt made it, e.g. when the create's
        answer was lost), wait until it is ``available``, and add what it lacks: a create may answer 206
        (``statusDetail``) with the group made without some of the volumes."""
        primary, _ = self._sites(ctx)
        names = Names(ctx.instance_id)
        wanted = list(ctx.parameters.get("protected_volumes") or [])
        group = self.powervs.find_volume_group(primary, names.group)
        if group is None:
            group = self.powervs.create_volume_group(primary, names.group, wanted)
        detail = self._settle(primary, group["id"], "PowerVS volume group")
        missing = [v for v in wanted if v not in (detail.get("volumeIDs") or [])]
        if missing:
            self.powervs.update_volume_group(primary, group["id"], add=missing)
            detail = self._settle(primary, group["id"], "PowerVS volume group update")
        return {"volume_group_id": group["id"], "consistency_group_name": detail.get("consistencyGroupName")}

    def wait_role(self, role: str) -> Action:
        def act(ctx: StepContext) -> Mapping[str, Any]:
            primary, _ = self._sites(ctx)
            group = self._require_group(ctx)

            def probe() -> tuple[bool, str]:
                d = self.powervs.storage_details(primary, group["id"], patience=self._patience)
                if d.get("state") == "empty":
                    raise PermanentBackendError("the replication group holds no volumes (state empty)")
                if d.get("state") in STOPPED and d.get("primaryRole") == role:
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
            task_id = self._running_onboarding(secondary, names.tag)
            if task_id is None:
                # VolumeOnboardingCreate: "Volumes" (capital V); the answer (VolumeOnboardingCreateResponse)
                # holds only the task's id and description, so the progress is read from GET .../{id}.
                made = self.powervs.onboard(secondary, {"Volumes": [{"sourceCRN": primary,
                                                                     "auxiliaryVolumes": wanted}],
                                                        "description": names.tag}) or {}
                task_id = made.get("id") or self._running_onboarding(secondary, names.tag)
                if task_id is None:
                    raise TransientBackendError("PowerVS accepted the volume onboarding but lists no such task yet")

            def probe() -> tuple[bool, str]:
                o = self.powervs.get_onboarding(secondary, task_id)
                status = str(o.get("status") or "")
                if status.lower() in ONBOARDING_FAILED:
                    failures = (o.get("results") or {}).get("volumeOnboardingFailures") or []
                    why = "; ".join(str(f.get("failureMessage") or f) for f in failures) or "no reason given"
                    raise PermanentBackendError(f"PowerVS volume onboarding {task_id} failed: {why}")
                return status.lower() in ONBOARDING_DONE, f"onboarding {status or '?'} ({o.get('progress', 0)}%)"
            self._wait("PowerVS volume onboarding", probe)
        aux = self._aux_group_id(ctx)
        if aux is None:
            raise TransientBackendError("the auxiliary volume group has not appeared at the secondary yet")
        return {"auxiliary_volume_group_id": aux}

    def _running_onboarding(self, secondary: str, description: str) -> str | None:
        """The onboarding task still under way with this description, if any.

        The onboarding POST has no idempotency key: a retry after its answer was lost (the task made, the answer
        dropped or replaced by a 5xx) finds the task by the description the broker gave it. A finished or
        failed task with it is an earlier onboarding (e.g. of volumes added since), not this one.
        """
        for o in self.powervs.list_onboardings(secondary):
            status = str(o.get("status") or "").lower()
            if o.get("description") == description and status not in ONBOARDING_DONE + ONBOARDING_FAILED:
                return o.get("id")
        return None

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
        # The members are only in VolumeGroupDetails (GET .../details); a group takes a PUT only when settled
        # (status available), and a PUT is itself asynchronous: a removed volume is out of the group (and its
        # replication can be disabled) once the group is available again.
        detail = self._settle(primary, group["id"], "PowerVS volume group")
        current = list(detail.get("volumeIDs") or [])
        wanted = list(ctx.parameters.get("protected_volumes") or [])
        added = [v for v in wanted if v not in current]
        removed = [v for v in current if v not in wanted]
        ours = set(self._recorded(ctx.instance_id, "broker_enabled_volumes") or [])
        if added:
            ours |= self._enable(ctx, primary, added)
            self.powervs.update_volume_group(primary, group["id"], add=added)
            self._settle(primary, group["id"], "PowerVS volume group update")
            self.onboard_auxiliary_volumes(ctx)
        if removed:
            self.powervs.update_volume_group(primary, group["id"], remove=removed)
            self._settle(primary, group["id"], "PowerVS volume group update")
        # What the parameters no longer protect, including what an earlier attempt of this update already took
        # out of the group: its auxiliary volume goes, and its replication if the broker enabled it.
        names = Names(ctx.instance_id)
        for aux in self._aux_volumes(ctx):
            if str(aux.get("name"))[len(names.aux_prefix):] in wanted:
                continue
            aux_group = (self.powervs.get_volume(secondary, aux["volumeID"]) or {}).get("groupID")
            if aux_group:
                self._settle(secondary, aux_group, "PowerVS auxiliary volume group")
                self.powervs.update_volume_group(secondary, aux_group, remove=[aux["volumeID"]])
                self._settle(secondary, aux_group, "PowerVS auxiliary volume group update")
            self.powervs.delete_volume(secondary, aux["volumeID"])
        released = []
        for vol_id in sorted(ours - set(wanted)):
            vol = self.powervs.get_volume(primary, vol_id)
            if vol is not None and vol.get("replicationEnabled"):
                self.powervs.volume_action(primary, vol_id, {"replicationEnabled": False})
                released.append(vol_id)
            ours.discard(vol_id)
        self._wait_volumes(primary, released, False)  # the volume action is asynchronous too
        out["broker_enabled_volumes"] = sorted(ours)
        return out

    def delete_replication_group(self, ctx: StepContext) -> Mapping[str, Any]:
        self.rehearsal.cleanup_rehearsal(ctx)
        group = self._group(ctx)
        if group is None:
            return {}
        primary, _ = self._sites(ctx)
        # The documented order: remove the volumes, then delete the (empty) group; both are asynchronous.
        self._empty_group(primary, group["id"])
        self._delete_group(primary, group["id"])
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
            self._empty_group(secondary, group_id)  # members only in .../details; the PUT is asynchronous
            self.powervs.delete_volume_group(secondary, group_id)
        for vol in aux:
            self.powervs.delete_volume(secondary, vol["volumeID"])
        # PowerVS deletes volumes asynchronously (state "deleting"); the tear-down is done when they are gone.
        self._wait("deleting the auxiliary volumes", lambda: (not self._aux_volumes(ctx), "deleting"))
        return {"removed_auxiliary_volumes": [v["volumeID"] for v in aux]}

    # volume groups: settling, emptying, deleting, replication status ---------------------------------
    @property
    def _patience(self) -> float:
        """How long a read inside a wait waits out 429s (storage-details, remote-copy-relationships)."""
        return self.config.wait_seconds

    def _settle(self, crn: str, group_id: str, what: str, *, error_ok: bool = False) -> dict[str, Any]:
        """Wait until the group's last change (create, PUT) has finished (status ``available``); return its
        ``VolumeGroupDetails``. ``error``: a failed create, which only a delete can follow (``error_ok``)."""
        seen: dict[str, Any] = {}

        def probe() -> tuple[bool, str]:
            d = self.powervs.get_volume_group_details(crn, group_id)
            if d is None:
                raise PermanentBackendError(f"volume group {group_id} does not exist")
            seen.clear()
            seen.update(d)
            if d.get("status") == "error" and not error_ok:
                errors = (d.get("statusDescription") or {}).get("errors") or []
                why = "; ".join(str(e.get("message") or e.get("key")) for e in errors) or "no reason given"
                raise PermanentBackendError(f"volume group {group_id} is in error: {why}")
            return d.get("status") in (("available", "error") if error_ok else ("available",)), \
                f"status {d.get('status')}"
        self._wait(what, probe)
        return seen

    def _empty_group(self, crn: str, group_id: str) -> None:
        """Remove every volume from the group and wait until the removal has finished (nothing listed, status
        settled; the consistency group's state is then ``empty``)."""
        volumes = list(self._settle(crn, group_id, "PowerVS volume group", error_ok=True).get("volumeIDs") or [])
        if not volumes:
            return
        self.powervs.update_volume_group(crn, group_id, remove=volumes)

        def emptied() -> tuple[bool, str]:
            d = self.powervs.get_volume_group_details(crn, group_id) or {}
            left = d.get("volumeIDs") or []
            return not left and d.get("status") in ("available", "error", None), \
                f"{len(left)} volumes left (status {d.get('status')})"
        self._wait("PowerVS volume group emptying", emptied)

    def _delete_group(self, crn: str, group_id: str) -> None:
        self.powervs.delete_volume_group(crn, group_id)

        def gone() -> tuple[bool, str]:  # DELETE is asynchronous: "deleting", then 404
            g = self.powervs.get_volume_group(crn, group_id)
            return g is None, f"status {(g or {}).get('status')}"
        self._wait("PowerVS volume group deletion", gone)

    def _replication_status(self, crn: str, group_id: str, want: str) -> None:
        """Wait for the group's ``replicationStatus``. An action on one group of the pair reaches the other's
        after a while, and PowerVS refuses a start while it is ``enabled`` and a stop while ``disabled`` (IBM:
        confirm the replication status of both groups before an action)."""
        def probe() -> tuple[bool, str]:
            g = self.powervs.get_volume_group(crn, group_id)
            if g is None:
                raise PermanentBackendError(f"volume group {group_id} does not exist")
            return g.get("replicationStatus") == want, f"replicationStatus {g.get('replicationStatus')}"
        self._wait(f"PowerVS volume group replication {want}", probe)

    def _group_state_wait(self, crn: str, group_id: str, states: Sequence[str], role: str | None = None) -> None:
        def probe() -> tuple[bool, str]:
            d = self.powervs.storage_details(crn, group_id, patience=self._patience)
            ok = d.get("state") in states and (role is None or d.get("primaryRole") == role)
            return ok, f"{d.get('state')} (primary role {d.get('primaryRole')})"
        self._wait("GRS consistency group", probe)

    def failover_replication(self, ctx: StepContext) -> Mapping[str, Any]:
        _, secondary = self._sites(ctx)
        aux = self._aux_group_id(ctx)
        if aux is None:
            raise PermanentBackendError("the auxiliary replication group does not exist")
        if self.powervs.storage_details(secondary, aux, patience=self._patience).get("state") not in IDLE:
            # Stop with access at the secondary: the replicas become writable there.
            self._replication_status(secondary, aux, "enabled")
            self.powervs.volume_group_action(secondary, aux, {"stop": {"access": True}})
        # idling_disconnected when the primary site is unreachable (an unplanned failover)
        self._group_state_wait(secondary, aux, IDLE)
        return {"dr_state": {"replication": "idling"}}

    def start_group(self, source: str) -> Action:
        """Start replication from ``source``. IBM's failback: the resync from the auxiliary volumes
        (``source: aux``) is started on the auxiliary volume group, in the secondary workspace; the restart from
        the primary (``source: master``) on the primary's group. Both groups must show replication disabled
        first (the partner's status follows the last stop after a while)."""
        def act(ctx: StepContext) -> Mapping[str, Any]:
            primary, secondary = self._sites(ctx)
            group = self._require_group(ctx)
            aux = self._aux_group_id(ctx)
            crn, target = (secondary, aux) if source == "aux" else (primary, group["id"])
            if target is None:
                raise PermanentBackendError("the auxiliary replication group does not exist")
            d = self.powervs.storage_details(crn, target, patience=self._patience)
            running = d.get("state") in COPYING and d.get("primaryRole") == source
            if not running:
                self._replication_status(primary, group["id"], "disabled")
                if aux is not None:
                    self._replication_status(secondary, aux, "disabled")
                self.powervs.volume_group_action(crn, target, {"start": {"source": source}})
            return {"dr_state": {"replication": "copying"}}
        return act

    def stop_primary_with_access(self, ctx: StepContext) -> Mapping[str, Any]:
        """Failback's stop of the reverse copy: stop the primary's group with access, then wait for it to be
        idle and its replication status ``disabled`` (as IBM's procedure says) before the restart."""
        primary, _ = self._sites(ctx)
        group = self._require_group(ctx)
        if self.powervs.storage_details(primary, group["id"], patience=self._patience).get("state") not in IDLE:
            self._replication_status(primary, group["id"], "enabled")
            self.powervs.volume_group_action(primary, group["id"], {"stop": {"access": True}})
        self._group_state_wait(primary, group["id"], IDLE)
        self._replication_status(primary, group["id"], "disabled")
        return {"dr_state": {"replication": "idling"}}
