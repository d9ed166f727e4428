"""The ibmcloud orchestrator: the ``Orchestrator`` protocol over IBM Cloud's real APIs.

Every action the simulated backend implements is implemented here with the same meaning, against PowerVS
(volumes, replication, volume groups, onboarding, clones, VM actions), Key Protect, IAM, the resource
controller and global catalog, and DR Automation. The rules every action keeps:

- Idempotent: it first looks for what an earlier attempt made (deterministic names, ``naming.Names``),
  then creates only what is missing. Removals tolerate what is already gone (404).
- Waiting actions poll the real state every ``poll_seconds`` for at most ``wait_seconds``; a state not yet
  reached is a ``TransientBackendError`` (the engine retries the idempotent action), a failed IBM job is
  a ``PermanentBackendError`` (the operation fails and compensates).
- Every IBM call goes through ``errors.call`` (the one error boundary); the transaction ids of the calls an
  action made are returned in its outputs as ``ibm_transaction_ids`` (kept in the step record).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from cachetools import TTLCache

from broker.domain.errors import BackendError, PermanentBackendError, TransientBackendError
from broker.domain.protocols import ReplicationStatus, StepContext
from broker.domain.sites import WorkspaceRef
from broker.orchestrators.ibmcloud.auth import make_authenticator
from broker.orchestrators.ibmcloud.config import IbmCloudConfig
from broker.orchestrators.ibmcloud.dra import DrAutomation
from broker.orchestrators.ibmcloud.errors import collecting
from broker.orchestrators.ibmcloud.iam import Iam
from broker.orchestrators.ibmcloud.keyprotect import KeyProtect
from broker.orchestrators.ibmcloud.naming import Names
from broker.orchestrators.ibmcloud.powervs import PowerVS
from broker.orchestrators.ibmcloud.resources import Resources

log = logging.getLogger(__name__)

Action = Callable[[StepContext], Mapping[str, Any]]

STATUS_CACHE_ENTRIES = 10_000  # instances whose replication status is kept at once (the least recently used go first)
_MISS = object()

# Typical durations on IBM Cloud (seconds), for Retry-After; IBM's own orchestrator deploy took ~35 min.
_EXPECTED = {
    "deploy_orchestrator": 2100.0, "wait_consistent_copying": 600.0, "wait_reverse_consistent": 600.0,
    "onboard_auxiliary_volumes": 300.0, "enable_replication": 120.0, "create_replication_group": 60.0,
    "start_rehearsal": 300.0, "remove_orchestrator": 300.0, "sync_standby_orchestrator": 1200.0,
    "discover": 120.0, "manage_vms": 60.0, "stop_primary_vms": 120.0, "start_primary_vms": 180.0,
    "stop_secondary_vms": 120.0, "start_secondary_vms": 180.0, "failover_replication": 60.0,
    "stop_reverse_with_access": 60.0,
}
_QUICK = 5.0

COPYING = ("consistent_copying", "inconsistent_copying")
READER = "crn:v1:bluemix:public:iam::::serviceRole:"


def _iso_to_epoch(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class IbmCloudOrchestrator:
    name = "ibmcloud"

    def __init__(self, config: IbmCloudConfig, store: Any = None, audit: Any = None) -> None:
        self.config = config
        self.store = store
        self.audit = audit
        self.auth = make_authenticator(config)
        ep, timeout = config.endpoints, config.timeout_seconds
        self.powervs = PowerVS(self.auth, ep, timeout)
        self.kp = KeyProtect(self.auth, ep.url("kms", config.region), config.kms_instance_id, timeout)
        self.iam = Iam(self.auth, ep.url("iam_identity"), ep.url("iam_policy"), timeout)
        self.resources = Resources(self.auth, ep.url("resource_controller"), ep.url("global_catalog"), timeout)
        self.dra = DrAutomation(self.auth, ep.url("dra"), timeout)
        self._lock = threading.Lock()
        # Replication status costs three PowerVS calls; fetch instance, the dashboard and the RPO sampler all ask
        # for it. A status read within the last ``status_cache_seconds`` is reused (freeze times are absolute,
        # so an achieved RPO computed from a reused one errs high, never low); this instance's own steps forget
        # it, so what an operation changed is read afresh.
        self._statuses: TTLCache[str, ReplicationStatus | None] | None = (
            TTLCache(maxsize=STATUS_CACHE_ENTRIES, ttl=config.status_cache_seconds)
            if config.status_cache_seconds > 0 else None)
        self._statuses_lock = threading.Lock()
        self._enabled_by_op: dict[tuple[str, str], set[str]] = {}
        self._actions: dict[str, Action] = {
            # provision
            "validate_sites": self._validate_sites,
            "create_dr_policy": self._create_dr_policy,
            "create_key_ring": self._create_key_ring,
            "create_root_key": self._create_root_key,
            "enable_replication": self._enable_replication,
            "create_replication_group": self._create_replication_group,
            "wait_consistent_copying": self._wait_role("master"),
            "onboard_auxiliary_volumes": self._onboard_auxiliary_volumes,
            "deploy_orchestrator": self._deploy_orchestrator,
            "add_sites": self._add_sites,
            "manage_vms": self._manage_vms,
            "discover": self._discover,
            "verify": self._verify,
            # deprovision and compensations
            "revoke_all_bindings": self._revoke_all_bindings,
            "remove_orchestrator": self._remove_orchestrator,
            "delete_replication_group": self._delete_replication_group,
            "disable_replication": self._disable_replication,
            "remove_auxiliary_volumes": self._remove_auxiliary_volumes,
            "delete_root_key": self._delete_root_key,
            "delete_key_ring": self._delete_key_ring,
            "delete_dr_policy": self._delete_dr_policy,
            "verify_removed": self._verify_removed,
            # update
            "apply_parameters": self._apply_parameters,
            "sync_standby_orchestrator": self._sync_standby,
            # bind / unbind
            "create_service_id": self._create_service_id,
            "delete_service_id": self._delete_service_id,
            "grant_key_access": self._grant_key_access,
            "revoke_key_access": self._revoke_key_access,
            "wrap_key": self._wrap_key,
            "issue_credentials": self._issue_credentials,
            "revoke_credentials": self._revoke_credentials,
            # day-2
            "check_replication": self._check_replication,
            "start_rehearsal": self._start_rehearsal,
            "verify_rehearsal": self._verify_rehearsal,
            "cleanup_rehearsal": self._cleanup_rehearsal,
            "stop_primary_vms": self._power("primary", "stop", "SHUTOFF"),
            "start_primary_vms": self._power("primary", "start", "ACTIVE"),
            "stop_secondary_vms": self._power("secondary", "stop", "SHUTOFF"),
            "start_secondary_vms": self._power("secondary", "start", "ACTIVE"),
            "failover_replication": self._failover_replication,
            "reverse_replication": self._start_group("aux"),
            "wait_reverse_consistent": self._wait_role("aux"),
            "stop_reverse_with_access": self._stop_primary_with_access,
            "restart_replication": self._start_group("master"),
        }

    # protocol -------------------------------------------------------------------------------------
    def actions(self) -> frozenset[str]:
        return frozenset(self._actions)

    def expected_seconds(self, action: str) -> float:
        return _EXPECTED.get(action, _QUICK)

    def describe(self) -> str:
        ep = self.config.endpoints
        where = f"all APIs at {ep.base_url}" if ep.base_url else "IBM Cloud public endpoints"
        if ep.overrides:
            where += f" (overridden: {', '.join(sorted(ep.overrides))})"
        who = (f"trusted profile {self.config.trusted_profile_id}" if self.config.trusted_profile_id
               else "the broker's API key")
        return f"IBM Cloud: {where}; identity: {who}; region {self.config.region}"

    def perform(self, action: str, ctx: StepContext) -> Mapping[str, Any]:
        try:
            fn = self._actions[action]
        except KeyError:
            raise PermanentBackendError(f"the ibmcloud backend has no action {action!r}") from None
        self._forget_status(ctx.instance_id)
        try:
            return self._perform(action, fn, ctx)
        finally:
            self._forget_status(ctx.instance_id)  # also a status read while the step ran

    def _forget_status(self, instance_id: str) -> None:
        if self._statuses is not None:
            with self._statuses_lock:
                self._statuses.pop(instance_id, None)

    def _perform(self, action: str, fn: Action, ctx: StepContext) -> Mapping[str, Any]:
        with collecting() as calls:
            try:
                result = dict(fn(ctx))
            except BackendError as exc:
                self._audit(action, ctx, calls, exc.error_code)
                raise
        self._audit(action, ctx, calls, "ok")
        if calls:
            result["ibm_transaction_ids"] = [c for c in calls if c.get("transaction_id")][-50:]
        return result

    def _audit(self, action: str, ctx: StepContext, calls: list[dict[str, Any]], outcome: str) -> None:
        """One audit record per backend step that called IBM: which calls, with IBM's transaction ids."""
        if self.audit is None or not calls:
            return
        from broker.security.audit import AuditEvent

        detail = {"step": action, "ibm_calls": [
            {"call": c["call"], "status": c["status"], "transaction_id": c["transaction_id"]} for c in calls[-50:]]}
        try:
            self.audit.append(AuditEvent(action=f"ibmcloud:{action}"[:64], instance_id=ctx.instance_id,
                                         binding_id=ctx.binding_id, operation_id=ctx.operation_id,
                                         outcome=outcome, principal="drbroker-worker", detail=detail))
        except Exception:  # the trail must not turn a done step into a failed one
            log.exception("could not append the IBM transaction ids of %s to the audit trail", action)

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

    def replication_status(self, instance_id: str) -> ReplicationStatus | None:
        if self._statuses is not None:
            with self._statuses_lock:
                cached = self._statuses.get(instance_id, _MISS)
            if cached is not _MISS:
                return cached  # type: ignore[return-value]
        status, ok = self._read_status(instance_id)
        if ok and self._statuses is not None:
            with self._statuses_lock:
                self._statuses[instance_id] = status
        return status

    def _read_status(self, instance_id: str) -> tuple[ReplicationStatus | None, bool]:
        """The status as PowerVS reports it now, and whether it could be read (an error is not kept)."""
        params = self._instance_parameters(instance_id)
        primary = params.get("primary_workspace_crn") if params else None
        if not primary:
            return None, True
        try:
            group = self.powervs.find_volume_group(primary, Names(instance_id).group)
            if group is None:
                return None, True
            details = self.powervs.storage_details(primary, group["id"])
            relations = self.powervs.remote_copy_relationships(primary, group["id"])
        except BackendError as exc:
            # A read for display must not fail the request or the operation that asked: report nothing.
            log.warning("replication status of %s unavailable: %s", instance_id, exc)
            return None, False
        freezes = [t for t in (_iso_to_epoch(r.get("freezeTime")) for r in relations) if t is not None]
        return ReplicationStatus(state=details.get("state") or "unknown",
                                 primary_role=details.get("primaryRole") or "master",
                                 freeze_time=min(freezes) if freezes else None,
                                 cycle_period_seconds=int(details.get("cyclePeriodSeconds") or 0),
                                 consistency_group=details.get("consistencyGroupName")), True

    def replication_statuses(self, instance_ids: Sequence[str]) -> dict[str, ReplicationStatus]:
        # PowerVS has no read of many volume groups' replication at once: one instance after another.
        found: dict[str, ReplicationStatus] = {}
        for iid in instance_ids:
            status = self.replication_status(iid)
            if status is not None:
                found[iid] = status
        return found

    def inventory(self, instance_id: str, parameters: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(kind, id) of everything this instance owns in IBM Cloud, found by its deterministic names."""
        names = Names(instance_id)
        primary = parameters.get("primary_workspace_crn")
        secondary = parameters.get("secondary_workspace_crn")
        found: list[tuple[str, str]] = []
        if primary:
            group = self.powervs.find_volume_group(primary, names.group)
            if group:
                found.append(("volume_group", group["id"]))
        if secondary:
            for vol in self.powervs.list_volumes(secondary):
                if str(vol.get("name", "")).startswith(names.aux_prefix):
                    found.append(("auxiliary_volume", vol["volumeID"]))
                elif str(vol.get("name", "")).startswith(names.rehearsal_prefix):
                    found.append(("rehearsal_volume", vol["volumeID"]))
        dra = self.resources.find_instance(names.dra_instance)
        if dra:
            found.append(("orchestrator", dra["guid"]))
        if self.config.kms_instance_id:
            key = self.kp.find_key(names.root_key)
            if key:
                found.append(("root_key", key["id"]))
        if primary:
            account = self._ws(primary).account
            found += [("service_id", s["id"]) for s in self.iam.service_ids_with_prefix(account, names.tag + "-")]
        return found

    # helpers --------------------------------------------------------------------------------------
    def _instance_parameters(self, instance_id: str) -> Mapping[str, Any] | None:
        if self.store is None:
            return None
        with self.store.read() as tx:
            inst = tx.get_instance(instance_id)
        return inst.parameters if inst else None

    def _recorded(self, instance_id: str, key: str) -> Any:
        """The latest value an action of this instance recorded under ``key`` in its step outputs."""
        if self.store is None:
            return None
        latest: tuple[float, Any] | None = None
        with self.store.read() as tx:
            for op in tx.list_operations(instance_id=instance_id, limit=1000):
                for rec in tx.steps(op.id):
                    if key in rec.outputs and (latest is None or (rec.finished_at or 0) >= latest[0]):
                        latest = (rec.finished_at or 0, rec.outputs[key])
        return latest[1] if latest else None

    @staticmethod
    def _ws(crn: str) -> WorkspaceRef:
        return PowerVS.workspace(crn)

    @staticmethod
    def _sites(ctx: StepContext) -> tuple[str, str]:
        return ctx.parameters["primary_workspace_crn"], ctx.parameters["secondary_workspace_crn"]

    def _wait(self, what: str, probe: Callable[[], tuple[bool, str]]) -> None:
        deadline = time.monotonic() + self.config.wait_seconds
        while True:
            done, state = probe()
            if done:
                return
            if time.monotonic() >= deadline:
                raise TransientBackendError(f"{what}: still {state} after {self.config.wait_seconds:g}s",
                                            retry_after=self.config.poll_seconds)
            time.sleep(self.config.poll_seconds)

    def _group(self, ctx: StepContext) -> dict[str, Any] | None:
        primary, _ = self._sites(ctx)
        return self.powervs.find_volume_group(primary, Names(ctx.instance_id).group)

    def _require_group(self, ctx: StepContext) -> dict[str, Any]:
        group = self._group(ctx)
        if group is None:
            raise PermanentBackendError("the replication group does not exist")
        return group

    def _aux_volumes(self, ctx: StepContext) -> list[dict[str, Any]]:
        _, secondary = self._sites(ctx)
        prefix = Names(ctx.instance_id).aux_prefix
        return [v for v in self.powervs.list_volumes(secondary) if str(v.get("name", "")).startswith(prefix)]

    def _aux_group_id(self, ctx: StepContext) -> str | None:
        _, secondary = self._sites(ctx)
        for vol in self._aux_volumes(ctx):
            detail = self.powervs.get_volume(secondary, vol["volumeID"]) or {}
            if detail.get("groupID"):
                return detail["groupID"]
        return None

    def _details(self, ctx: StepContext) -> dict[str, Any]:
        primary, _ = self._sites(ctx)
        return self.powervs.storage_details(primary, self._require_group(ctx)["id"])

    # provision ------------------------------------------------------------------------------------
    def _validate_sites(self, ctx: StepContext) -> Mapping[str, Any]:
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

    def _create_dr_policy(self, ctx: StepContext) -> Mapping[str, Any]:
        # PowerVS has no DR-policy object (RPO is monitored, not set): the policy is the broker's record,
        # kept in this step's outputs.
        policy = {"rpo_target_minutes": ctx.parameters.get("rpo_target_minutes"),
                  "vm_priorities": {vm.get("pvm_instance_id"): vm.get("priority", "Medium")
                                    for vm in ctx.parameters.get("managed_vms") or []},
                  "dr_test_schedule": ctx.parameters.get("dr_test_schedule"),
                  "notify": list(ctx.parameters.get("notification_emails") or [])}
        return {"dr_policy_id": Names(ctx.instance_id).tag, "dr_policy": policy}

    def _key_ring(self, ctx: StepContext) -> str:
        return (ctx.parameters.get("encryption") or {}).get("key_ring_id") or Names(ctx.instance_id).tag

    def _create_key_ring(self, ctx: StepContext) -> Mapping[str, Any]:
        ring = self._key_ring(ctx)
        created = self.kp.create_key_ring(ring)
        return {"key_ring_id": ring, "key_ring_created": created}

    def _create_root_key(self, ctx: StepContext) -> Mapping[str, Any]:
        enc = ctx.parameters.get("encryption") or {}
        names = Names(ctx.instance_id)
        key = self.kp.find_key(names.root_key)
        if key is None:
            key = self.kp.create_root_key(names.root_key, self._key_ring(ctx),
                                          rotation_months=enc.get("rotation_interval_months"),
                                          dual_auth=bool(enc.get("dual_auth_delete")))
        return {"root_key_id": key.get("id"), "root_key_crn": key.get("crn")}

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

    def _enable_replication(self, ctx: StepContext) -> Mapping[str, Any]:
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

    def _create_replication_group(self, ctx: StepContext) -> Mapping[str, Any]:
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

    def _wait_role(self, role: str) -> Action:
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

    def _onboard_auxiliary_volumes(self, ctx: StepContext) -> Mapping[str, Any]:
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

    def _dra_guid(self, ctx: StepContext | str) -> str | None:
        iid = ctx if isinstance(ctx, str) else ctx.instance_id
        found = self.resources.find_instance(Names(iid).dra_instance)
        return found.get("guid") if found else None

    def _require_dra(self, ctx: StepContext) -> str:
        guid = self._dra_guid(ctx)
        if guid is None:
            raise PermanentBackendError("the orchestrator is not deployed")
        return guid

    def _manage_dr_body(self, ctx: StepContext, standby: bool) -> dict[str, Any]:
        primary, secondary = (self._ws(c) for c in self._sites(ctx))
        orch = ctx.parameters.get("orchestrator") or {}
        body: dict[str, Any] = {
            "location_id": secondary.zone, "machine_type": orch.get("machine_type") or "s922",
            "orchestrator_location_type": "off-premises", "orchestrator_name": orch.get("name"),
            "orchestrator_password": orch.get("password"), "orchestrator_workspace_id": secondary.guid,
            "tier": orch.get("tier"), "proxy_ip": orch.get("proxy"),
            "api_key": ctx.parameters.get("ibmcloud_api_key"), "orchestrator_ha": standby,
        }
        if standby:
            body.update(standby_orchestrator_name=f"{orch.get('name')}-standby",
                        standby_orchestrator_workspace_id=primary.guid,
                        standby_machine_type=orch.get("machine_type") or "s922", standby_tier=orch.get("tier"))
        return body

    def _wait_deployed(self, guid: str, standby: bool | None) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def probe() -> tuple[bool, str]:
            nonlocal last
            last = self.dra.last_operation(guid) or {}
            if last.get("primary_error_description") or str(last.get("status", "")).lower() == "failed":
                raise PermanentBackendError("DR Automation: orchestrator deployment failed: "
                                            f"{last.get('primary_error_description') or last.get('status')}")
            ready = (last.get("status") == "Active"
                     and last.get("orchestrator_config_status") == "KSYS-DISCOVERY-SUCCESS"
                     and (standby is None or bool(last.get("orchestrator_ha")) == standby))
            return ready, f"{last.get('status')}: {last.get('primary_description') or ''}".strip()
        self._wait("DR Automation orchestrator", probe)
        return last

    def _deploy_orchestrator(self, ctx: StepContext) -> Mapping[str, Any]:
        names = Names(ctx.instance_id)
        standby = bool(ctx.plan.features.get("standby"))
        found = self.resources.find_instance(names.dra_instance)
        if found is None:
            group = self.config.resource_group_id or str(ctx.context.get("resource_group_crn") or "").rsplit(
                ":", 1)[-1] or "default"
            found = self.resources.create_instance(names.dra_instance, group, self.resources.dra_plan_id(),
                                                   tags=[f"drbroker:{names.tag}"])
        guid = found["guid"]
        last = self.dra.last_operation(guid) or {}
        if not last.get("deployment_name"):
            self.dra.manage_dr(guid, self._manage_dr_body(ctx, standby))
        last = self._wait_deployed(guid, standby)
        out: dict[str, Any] = {"orchestrator_id": guid, "orchestrator_crn": found.get("crn")}
        if standby:
            out["standby_orchestrator_ip"] = last.get("standby_ip_address")
        return out

    def _add_sites(self, ctx: StepContext) -> Mapping[str, Any]:
        guid = self._require_dra(ctx)
        primary, secondary = (self._ws(c) for c in self._sites(ctx))
        pairs = self.dra.grs_location_pairs(guid)
        if pairs.get(primary.zone) != secondary.zone and pairs.get(secondary.zone) != primary.zone:
            raise PermanentBackendError(f"DR Automation does not pair {primary.zone} with {secondary.zone}")
        return {"sites": [primary.zone, secondary.zone]}

    def _wanted_vms(self, ctx: StepContext) -> list[dict[str, Any]]:
        primary, _ = self._sites(ctx)
        vms = self.powervs.list_pvm_instances(primary)
        wanted = [vm["pvm_instance_id"] for vm in ctx.parameters.get("managed_vms") or []]
        if wanted:
            missing = sorted(set(wanted) - {v.get("pvmInstanceID") for v in vms})
            if missing:
                raise PermanentBackendError(f"VMs not found in the primary workspace: {', '.join(missing)}")
            return [v for v in vms if v.get("pvmInstanceID") in wanted]
        return vms

    def _manage_vms(self, ctx: StepContext) -> Mapping[str, Any]:
        guid = self._require_dra(ctx)
        wanted = {v["pvmInstanceID"] for v in self._wanted_vms(ctx)}

        def probe() -> tuple[bool, str]:
            managed = set(self.dra.managed_vms(guid))
            missing = sorted(wanted - managed)
            return not missing, f"not yet managed: {', '.join(missing)}"
        self._wait("DR Automation managed VMs", probe)
        return {"managed_vms": sorted(wanted)}

    def _discover(self, ctx: StepContext) -> Mapping[str, Any]:
        guid = self._require_dra(ctx)
        _, secondary = self._sites(ctx)
        backups = {f"{v.get('serverName')}_BackUp" for v in self._wanted_vms(ctx)}

        def probe() -> tuple[bool, str]:
            last = self.dra.last_operation(guid) or {}
            present = {v.get("serverName") for v in self.powervs.list_pvm_instances(secondary)}
            missing = sorted(backups - present)
            ok = last.get("orchestrator_config_status") == "KSYS-DISCOVERY-SUCCESS" and not missing
            return ok, f"{last.get('orchestrator_config_status')}, backup VMs missing: {', '.join(missing)}"
        self._wait("KSYS discovery", probe)
        return {"backup_vms": sorted(backups)}

    def _verify(self, ctx: StepContext) -> Mapping[str, Any]:
        missing = []
        group = self._group(ctx)
        if group is None:
            missing.append("volume_group")
        if self._aux_group_id(ctx) is None:
            missing.append("auxiliary_volume_group")
        if ctx.plan.features.get("byok") and self.kp.find_key(Names(ctx.instance_id).root_key) is None:
            missing.append("root_key")
        if ctx.plan.features.get("orchestrator") == "ksys":
            guid = self._dra_guid(ctx)
            if guid is None:
                missing.append("orchestrator")
            elif ctx.plan.features.get("standby") and not (self.dra.last_operation(guid) or {}).get(
                    "orchestrator_ha"):
                missing.append("standby_orchestrator")
        if missing:
            raise PermanentBackendError(f"verification failed: missing {', '.join(missing)}")
        state = self._details(ctx).get("state")
        if state not in ("consistent_copying", "idling"):
            raise PermanentBackendError(f"verification failed: replication group is {state}")
        return {}

    # deprovision ----------------------------------------------------------------------------------
    def _account(self, ctx: StepContext) -> str:
        return self._ws(ctx.parameters["primary_workspace_crn"]).account

    def _revoke_all_bindings(self, ctx: StepContext) -> Mapping[str, Any]:
        names = Names(ctx.instance_id)
        account = self._account(ctx)
        count = 0
        for policy in self.iam.policies_with_prefix(account, names.tag + "-"):
            self.iam.delete_policy(policy["id"])
            count += 1
        for sid in self.iam.service_ids_with_prefix(account, names.tag + "-"):
            self.iam.delete_service_id(sid["id"])  # IAM deletes the service ID's API keys with it
            count += 1
        return {"revoked_resources": count}

    def _remove_orchestrator(self, ctx: StepContext) -> Mapping[str, Any]:
        guid = self._dra_guid(ctx)
        if guid is None:
            return {}
        self.resources.delete_instance(guid)

        def probe() -> tuple[bool, str]:
            inst = self.resources.get_instance(guid)
            state = (inst or {}).get("state")
            return inst is None or state == "removed", f"resource instance {state}"
        self._wait("DR Automation instance removal", probe)
        return {"removed_orchestrator": guid}

    def _delete_replication_group(self, ctx: StepContext) -> Mapping[str, Any]:
        self._cleanup_rehearsal(ctx)
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

    def _disable_replication(self, ctx: StepContext) -> Mapping[str, Any]:
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

    def _remove_auxiliary_volumes(self, ctx: StepContext) -> Mapping[str, Any]:
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

    def _delete_root_key(self, ctx: StepContext) -> Mapping[str, Any]:
        if not self.kp.instance_id:
            return {}
        key = self.kp.find_key(Names(ctx.instance_id).root_key)
        if key is None:
            return {}
        if key.get("dualAuthDelete", {}).get("enabled") and not key.get("deletionAuthorized"):
            # The broker is the first approver; Key Protect wants a second identity's DELETE within 7 days
            # (the fake accepts the broker's own; see README).
            self.kp.set_for_deletion(key["id"])
        self.kp.delete_key(key["id"])
        return {"deleted_key": key["id"]}

    def _delete_key_ring(self, ctx: StepContext) -> Mapping[str, Any]:
        if not self.kp.instance_id or not (ctx.parameters.get("encryption") or ctx.plan.features.get("byok")):
            return {}
        if self.kp.find_key(Names(ctx.instance_id).root_key) is not None:
            raise PermanentBackendError("Key Protect: key ring still holds keys (409 KEY_RING_KEYS_NOT_DELETED)")
        ring = self._key_ring(ctx)
        if ring == "default":
            return {}
        self.kp.delete_key_ring(ring)
        return {}

    def _delete_dr_policy(self, ctx: StepContext) -> Mapping[str, Any]:
        return {}  # the policy is the broker's own record (see _create_dr_policy)

    def _verify_removed(self, ctx: StepContext) -> Mapping[str, Any]:
        left = self.inventory(ctx.instance_id, ctx.parameters)
        if left:
            raise PermanentBackendError("resources left behind: " + ", ".join(sorted({k for k, _ in left})))
        return {}

    # update ---------------------------------------------------------------------------------------
    def _apply_parameters(self, ctx: StepContext) -> Mapping[str, Any]:
        primary, secondary = self._sites(ctx)
        out: dict[str, Any] = {}
        enc = ctx.parameters.get("encryption") or {}
        if enc.get("rotation_interval_months") and self.kp.instance_id:
            key = self.kp.find_key(Names(ctx.instance_id).root_key)
            if key is not None:
                self.kp.set_rotation(key["id"], int(enc["rotation_interval_months"]))
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
            self._onboard_auxiliary_volumes(ctx)
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

    def _sync_standby(self, ctx: StepContext) -> Mapping[str, Any]:
        guid = self._require_dra(ctx)
        want = bool(ctx.plan.features.get("standby"))
        last = self.dra.last_operation(guid) or {}
        if bool(last.get("orchestrator_ha")) != want:
            self.dra.manage_dr(guid, self._manage_dr_body(ctx, want), standby_redeploy=True)
        self._wait_deployed(guid, want)
        return {"orchestrator_ha": want}

    # bind / unbind --------------------------------------------------------------------------------
    def _create_service_id(self, ctx: StepContext) -> Mapping[str, Any]:
        given = ctx.bind_resource.get("serviceid_crn")
        if given:
            return {"serviceid_crn": given, "serviceid_created": False,
                    "iam_id": "iam-" + str(given).rsplit(":", 1)[-1]}
        account = self._account(ctx)
        name = Names(ctx.instance_id).binding(ctx.binding_id or "")
        sid = self.iam.find_service_id(account, name)
        if sid is None:
            sid = self.iam.create_service_id(account, name, ctx.context.get("crn"))
        return {"serviceid_crn": sid.get("crn"), "serviceid_id": sid.get("id"), "iam_id": sid.get("iam_id"),
                "serviceid_created": True}

    def _delete_service_id(self, ctx: StepContext) -> Mapping[str, Any]:
        if not ctx.parameters.get("primary_workspace_crn"):
            return {}
        sid = self.iam.find_service_id(self._account(ctx), Names(ctx.instance_id).binding(ctx.binding_id or ""))
        if sid is not None:
            self.iam.delete_service_id(sid["id"])
        return {}

    def _grant_key_access(self, ctx: StepContext) -> Mapping[str, Any]:
        names = Names(ctx.instance_id)
        key = self.kp.find_key(names.root_key)
        if key is None:
            raise PermanentBackendError("the instance has no root key")
        account = self._account(ctx)
        description = names.binding_policy(ctx.binding_id or "")
        existing = self.iam.policies_described(account, description)
        if existing:
            return {"key_policy_id": existing[0]["id"]}
        iam_id = ctx.outputs.get("iam_id") or "iam-" + str(ctx.outputs.get("serviceid_crn", "")).rsplit(":", 1)[-1]
        role = READER + str(ctx.binding_parameters.get("role", "Reader"))
        policy = self.iam.create_key_reader_policy(account, iam_id, str(self.kp.instance_id), key["id"],
                                                   description, role)
        return {"key_policy_id": policy.get("id")}

    def _revoke_key_access(self, ctx: StepContext) -> Mapping[str, Any]:
        if not ctx.parameters.get("primary_workspace_crn"):
            return {}
        description = Names(ctx.instance_id).binding_policy(ctx.binding_id or "")
        removed = []
        for policy in self.iam.policies_described(self._account(ctx), description):
            self.iam.delete_policy(policy["id"])
            removed.append(policy["id"])
        return {"revoked_policies": removed}

    def _wrap_key(self, ctx: StepContext) -> Mapping[str, Any]:
        key = self.kp.find_key(Names(ctx.instance_id).root_key)
        if key is None:
            raise PermanentBackendError("the instance has no root key")
        wrapped = self.kp.wrap(key["id"], [ctx.instance_id, ctx.binding_id or ""])
        # The plaintext data key Key Protect generated is dropped here: only its ciphertext leaves.
        wrapped.pop("plaintext", None)
        return {"wrapped_dek": wrapped.get("ciphertext"),
                "key_version": (wrapped.get("keyVersion") or {}).get("id"), "root_key_id": key["id"],
                "root_key_crn": key.get("crn")}

    def _issue_credentials(self, ctx: StepContext) -> Mapping[str, Any]:
        primary, secondary = self._sites(ctx)
        p, s = self._ws(primary), self._ws(secondary)
        ep = self.config.endpoints
        group = self._group(ctx)
        details = self.powervs.storage_details(primary, group["id"]) if group else {}
        credentials: dict[str, Any] = {"backend": "ibmcloud", "dr_instance_id": ctx.instance_id}
        credentials["replication"] = {
            "type": "global_mirror_change_volumes",
            "primary": {"workspace_crn": primary, "zone": p.zone, "volume_group_id": group["id"] if group else None,
                        "api": ep.url("powervs", p.region or p.zone)},
            "secondary": {"workspace_crn": secondary, "zone": s.zone, "volume_group_id": self._aux_group_id(ctx),
                          "api": ep.url("powervs", s.region or s.zone)},
            "consistency_group_name": details.get("consistencyGroupName"),
            "rpo_target_minutes": ctx.parameters.get("rpo_target_minutes"),
        }
        if ctx.plan.features.get("orchestrator") == "ksys":
            guid = self._dra_guid(ctx)
            last = (self.dra.last_operation(guid) or {}) if guid else {}
            ip = last.get("primary_ip_address")
            credentials["orchestrator"] = {"dr_automation_instance_id": guid, "dr_automation_instance_crn":
                                           last.get("crn"), "endpoint": f"https://{ip}:3000" if ip else None,
                                           "primary_ip": ip, "standby_ip": last.get("standby_ip_address"),
                                           "dr_api": ep.url("dra")}
        if ctx.outputs.get("wrapped_dek"):
            credentials["kms"] = {
                "endpoint": self.kp.url, "instance_id": self.kp.instance_id,
                "root_key_crn": ctx.outputs.get("root_key_crn"), "key_ring_id": self._key_ring(ctx),
                "wrapped_dek": ctx.outputs["wrapped_dek"], "key_version_id": ctx.outputs.get("key_version"),
                "aad": [ctx.instance_id, ctx.binding_id]}
        iam: dict[str, Any] = {"serviceid_crn": ctx.outputs.get("serviceid_crn")}
        if ctx.outputs.get("serviceid_created"):
            account = self._account(ctx)
            name = Names(ctx.instance_id).binding_key(ctx.binding_id or "")
            iam_id = ctx.outputs.get("iam_id")
            # A fresh key on every run: an earlier attempt's key value was never stored by IAM or by us.
            for key in self.iam.api_keys(account, iam_id):
                if key.get("name") == name:
                    self.iam.delete_api_key(key["id"])
            iam["apikey"] = self.iam.create_api_key(account, iam_id, name).get("apikey")
        credentials["iam"] = iam
        return {"credentials": credentials}

    def _revoke_credentials(self, ctx: StepContext) -> Mapping[str, Any]:
        if not ctx.parameters.get("primary_workspace_crn"):
            return {}
        names = Names(ctx.instance_id)
        account = self._account(ctx)
        sid = self.iam.find_service_id(account, names.binding(ctx.binding_id or ""))
        if sid is None:
            return {}
        for key in self.iam.api_keys(account, sid["iam_id"]):
            if key.get("name") == names.binding_key(ctx.binding_id or ""):
                self.iam.delete_api_key(key["id"])
        return {}

    # day-2 ----------------------------------------------------------------------------------------
    def _check_replication(self, ctx: StepContext) -> Mapping[str, Any]:
        state = self._details(ctx).get("state")
        if state != "consistent_copying":
            raise PermanentBackendError(f"replication group is {state}, not consistent_copying")
        return {}

    def _rehearsal_volumes(self, ctx: StepContext) -> list[dict[str, Any]]:
        _, secondary = self._sites(ctx)
        prefix = Names(ctx.instance_id).rehearsal_prefix
        return [v for v in self.powervs.list_volumes(secondary) if str(v.get("name", "")).startswith(prefix)]

    def _start_rehearsal(self, ctx: StepContext) -> Mapping[str, Any]:
        _, secondary = self._sites(ctx)
        existing = self._rehearsal_volumes(ctx)
        if existing:
            return {"rehearsal_volumes": sorted(v["volumeID"] for v in existing)}
        aux = [v["volumeID"] for v in self._aux_volumes(ctx)]
        if not aux:
            raise PermanentBackendError("no auxiliary volumes at the secondary to rehearse with")
        # A point-in-time copy of the replicas at the secondary: rehearsal VMs boot from these while
        # replication carries on (KSYS's DR test does the same with its own clones).
        task = self.powervs.clone_volumes(secondary, {"name": Names(ctx.instance_id).rehearsal, "volumeIDs": aux})
        task_id = task["cloneTaskID"]
        cloned: list[str] = []

        def probe() -> tuple[bool, str]:
            nonlocal cloned
            st = self.powervs.get_clone_task(secondary, task_id)
            if st.get("status") == "failed":
                raise PermanentBackendError(f"PowerVS clone task {task_id} failed: "
                                            f"{st.get('failedReason') or 'no reason given'}")
            cloned = [c.get("clonedVolumeID") for c in st.get("clonedVolumes") or []]
            return st.get("status") == "completed", f"clone {st.get('status')} ({st.get('percentComplete', 0)}%)"
        self._wait("PowerVS volume clone", probe)
        return {"rehearsal_volumes": sorted(c for c in cloned if c), "clone_task_id": task_id}

    def _verify_rehearsal(self, ctx: StepContext) -> Mapping[str, Any]:
        vols = self._rehearsal_volumes(ctx)
        if not vols or any(v.get("state") not in ("available", "in-use") for v in vols):
            raise PermanentBackendError("rehearsal resources are missing")
        return {}

    def _cleanup_rehearsal(self, ctx: StepContext) -> Mapping[str, Any]:
        _, secondary = self._sites(ctx)
        removed = []
        for vol in self._rehearsal_volumes(ctx):
            self.powervs.delete_volume(secondary, vol["volumeID"])
            removed.append(vol["volumeID"])
        # Deletion is asynchronous: a rehearsal started right after must not find these half-deleted copies.
        self._wait("deleting the rehearsal volumes", lambda: (not self._rehearsal_volumes(ctx), "deleting"))
        return {"removed_rehearsal_volumes": removed}

    def _power(self, site: str, action: str, target: str) -> Action:
        def act(ctx: StepContext) -> Mapping[str, Any]:
            primary, secondary = self._sites(ctx)
            vms = self._wanted_vms(ctx)
            if site == "primary":
                crn, ids = primary, [v["pvmInstanceID"] for v in vms]
            else:
                backups = {f"{v.get('serverName')}_BackUp" for v in vms}
                crn = secondary
                ids = [v["pvmInstanceID"] for v in self.powervs.list_pvm_instances(secondary)
                       if v.get("serverName") in backups]
            todo = [i for i in ids if (self.powervs.get_pvm_instance(crn, i) or {}).get("status") != target]
            for vm_id in todo:
                self.powervs.pvm_action(crn, vm_id, action)

            def probe() -> tuple[bool, str]:
                pending = [i for i in todo if (self.powervs.get_pvm_instance(crn, i) or {}).get("status") != target]
                return not pending, f"waiting for {', '.join(pending)} to be {target}"
            if todo:
                self._wait(f"PowerVS VM {action}", probe)
            return {f"{site}_vms_{target.lower()}": sorted(ids)}
        return act

    def _group_state_wait(self, crn: str, group_id: str, state: str, role: str | None = None) -> None:
        def probe() -> tuple[bool, str]:
            d = self.powervs.storage_details(crn, group_id)
            ok = d.get("state") == state and (role is None or d.get("primaryRole") == role)
            return ok, f"{d.get('state')} (primary role {d.get('primaryRole')})"
        self._wait("GRS consistency group", probe)

    def _failover_replication(self, ctx: StepContext) -> Mapping[str, Any]:
        _, secondary = self._sites(ctx)
        aux = self._aux_group_id(ctx)
        if aux is None:
            raise PermanentBackendError("the auxiliary replication group does not exist")
        if self.powervs.storage_details(secondary, aux).get("state") != "idling":
            # Stop with access at the secondary: the replicas become writable there.
            self.powervs.volume_group_action(secondary, aux, {"stop": {"access": True}})
        self._group_state_wait(secondary, aux, "idling")
        return {"dr_state": {"replication": "idling"}}

    def _start_group(self, source: str) -> Action:
        def act(ctx: StepContext) -> Mapping[str, Any]:
            primary, _ = self._sites(ctx)
            group = self._require_group(ctx)
            d = self.powervs.storage_details(primary, group["id"])
            running = d.get("state") in COPYING and d.get("primaryRole") == source
            if not running:
                self.powervs.volume_group_action(primary, group["id"], {"start": {"source": source}})
            return {"dr_state": {"replication": "copying"}}
        return act

    def _stop_primary_with_access(self, ctx: StepContext) -> Mapping[str, Any]:
        primary, _ = self._sites(ctx)
        group = self._require_group(ctx)
        if self.powervs.storage_details(primary, group["id"]).get("state") != "idling":
            self.powervs.volume_group_action(primary, group["id"], {"stop": {"access": True}})
        self._group_state_wait(primary, group["id"], "idling")
        return {"dr_state": {"replication": "idling"}}
