"""The ibmcloud orchestrator: the ``Orchestrator`` protocol over IBM Cloud's real APIs.

Every action the simulated backend implements is implemented here with the same meaning, against PowerVS
(volumes, replication, volume groups, onboarding, clones, VM actions), Key Protect, IAM, the resource
controller and global catalog, and DR Automation. This class composes them: the actions themselves live in
one module per IBM service (``replication``, ``rehearsal``, ``vms``, ``keys``, ``access``, ``orchestration``,
sharing ``common.IbmSteps``); what stays here is the action table, the protocol's reads (replication status
with its cache, inventory, protection checks), the audit of every step's IBM calls, and the few steps that
span services. The rules every action keeps:

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
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cachetools import TTLCache

from broker.domain.errors import BackendError, PermanentBackendError
from broker.domain.protocols import ReplicationStatus, StepContext
from broker.orchestrators.ibmcloud.access import AccessSteps
from broker.orchestrators.ibmcloud.auth import make_authenticator
from broker.orchestrators.ibmcloud.common import Action, Clients, IbmSteps
from broker.orchestrators.ibmcloud.config import IbmCloudConfig
from broker.orchestrators.ibmcloud.dra import DrAutomation
from broker.orchestrators.ibmcloud.errors import collecting
from broker.orchestrators.ibmcloud.iam import Iam
from broker.orchestrators.ibmcloud.keyprotect import KeyProtect
from broker.orchestrators.ibmcloud.keys import KeySteps
from broker.orchestrators.ibmcloud.naming import Names
from broker.orchestrators.ibmcloud.orchestration import DrAutomationSteps
from broker.orchestrators.ibmcloud.powervs import PowerVS
from broker.orchestrators.ibmcloud.rehearsal import RehearsalSteps
from broker.orchestrators.ibmcloud.replication import ReplicationSteps
from broker.orchestrators.ibmcloud.resources import Resources
from broker.orchestrators.ibmcloud.vms import VmSteps

log = logging.getLogger(__name__)

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

def _iso_to_epoch(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class IbmCloudOrchestrator(IbmSteps):
    name = "ibmcloud"

    def __init__(self, config: IbmCloudConfig, store: Any = None, audit: Any = None) -> None:
        self.audit = audit
        self.auth = make_authenticator(config)
        ep, timeout = config.endpoints, config.timeout_seconds
        clients = Clients(
            config=config, store=store, powervs=PowerVS(self.auth, ep, timeout),
            kp=KeyProtect(self.auth, ep.url("kms", config.region), config.kms_instance_id, timeout),
            iam=Iam(self.auth, ep.url("iam_identity"), ep.url("iam_policy"), timeout),
            resources=Resources(self.auth, ep.url("resource_controller"), ep.url("global_catalog"), timeout),
            dra=DrAutomation(self.auth, ep.url("dra"), timeout))
        super().__init__(clients)
        self.vms = VmSteps(clients)
        self.rehearsal = RehearsalSteps(clients, self.vms)
        self.replication = ReplicationSteps(clients, self.rehearsal)
        self.keys = KeySteps(clients)
        self.access = AccessSteps(clients)
        self.orchestration = DrAutomationSteps(clients, self.vms)
        # Replication status costs three PowerVS calls; fetch instance, the dashboard and the RPO sampler all ask
        # for it. A status read within the last ``status_cache_seconds`` is reused (freeze times are absolute,
        # so an achieved RPO computed from a reused one errs high, never low); this instance's own steps forget
        # it, so what an operation changed is read afresh.
        self._statuses: TTLCache[str, ReplicationStatus | None] | None = (
            TTLCache(maxsize=STATUS_CACHE_ENTRIES, ttl=config.status_cache_seconds)
            if config.status_cache_seconds > 0 else None)
        self._statuses_lock = threading.Lock()
        rep, reh, vms, keys, access, dr = (self.replication, self.rehearsal, self.vms, self.keys, self.access,
                                           self.orchestration)
        self._actions: dict[str, Action] = {
            # provision
            "validate_sites": rep.validate_sites,
            "create_dr_policy": self._create_dr_policy,
            "create_key_ring": keys.create_key_ring,
            "create_root_key": keys.create_root_key,
            "enable_replication": rep.enable_replication,
            "create_replication_group": rep.create_replication_group,
            "wait_consistent_copying": rep.wait_role("master"),
            "onboard_auxiliary_volumes": rep.onboard_auxiliary_volumes,
            "deploy_orchestrator": dr.deploy_orchestrator,
            "add_sites": dr.add_sites,
            "manage_vms": dr.manage_vms,
            "discover": dr.discover,
            "verify": self._verify,
            # deprovision and compensations
            "revoke_all_bindings": access.revoke_all_bindings,
            "remove_orchestrator": dr.remove_orchestrator,
            "delete_replication_group": rep.delete_replication_group,
            "disable_replication": rep.disable_replication,
            "remove_auxiliary_volumes": rep.remove_auxiliary_volumes,
            "delete_root_key": keys.delete_root_key,
            "delete_key_ring": keys.delete_key_ring,
            "delete_dr_policy": self._delete_dr_policy,
            "verify_removed": self._verify_removed,
            # update
            "apply_parameters": self._apply_parameters,
            "sync_standby_orchestrator": dr.sync_standby,
            "update_orchestrator_api_key": dr.update_api_key,
            # bind / unbind
            "create_service_id": access.create_service_id,
            "reuse_service_id": access.reuse_service_id,
            "delete_service_id": access.delete_service_id,
            "grant_workspace_access": access.grant_workspace_access,
            "revoke_access": access.revoke_access,
            "grant_key_access": access.grant_key_access,
            "revoke_key_access": access.revoke_key_access,
            "wrap_key": keys.wrap_key,
            "issue_credentials": access.issue_credentials,
            "revoke_credentials": access.revoke_credentials,
            # day-2
            "check_replication": rep.check_replication,
            "start_rehearsal": reh.start_rehearsal,
            "verify_rehearsal": reh.verify_rehearsal,
            "cleanup_rehearsal": reh.cleanup_rehearsal,
            "stop_primary_vms": vms.power("primary", "stop", "SHUTOFF"),
            "start_primary_vms": vms.power("primary", "start", "ACTIVE"),
            "stop_secondary_vms": vms.power("secondary", "stop", "SHUTOFF"),
            "start_secondary_vms": vms.power("secondary", "start", "ACTIVE"),
            "failover_replication": rep.failover_replication,
            "reverse_replication": rep.start_group("aux"),
            "wait_reverse_consistent": rep.wait_role("aux"),
            "stop_reverse_with_access": rep.stop_primary_with_access,
            "restart_replication": rep.start_group("master"),
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
        return self.replication.check_protection(primary_crn, secondary_crn, volume_ids, instance_id)

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
            found += [("rehearsal_vm", vm["pvmInstanceID"]) for vm in self.powervs.list_pvm_instances(secondary)
                      if names.is_rehearsal_vm(vm.get("serverName"))]
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
            found += [("policy", p["id"]) for p in self.iam.policies_with_prefix(account, names.tag + "-")]
        return found

    # steps that span the services ---------------------------------------------------------------
    def _create_dr_policy(self, ctx: StepContext) -> Mapping[str, Any]:
        # PowerVS has no DR-policy object (RPO is monitored, not set): the policy is the broker's record,
        # kept in this step's outputs.
        policy = {"rpo_target_minutes": ctx.parameters.get("rpo_target_minutes"),
                  "vm_priorities": {vm.get("pvm_instance_id"): vm.get("priority", "Medium")
                                    for vm in ctx.parameters.get("managed_vms") or []},
                  "dr_test_schedule": ctx.parameters.get("dr_test_schedule"),
                  "notify": list(ctx.parameters.get("notification_emails") or [])}
        return {"dr_policy_id": Names(ctx.instance_id).tag, "dr_policy": policy}

    def _delete_dr_policy(self, ctx: StepContext) -> Mapping[str, Any]:
        return {}  # the policy is the broker's own record (see _create_dr_policy)

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

    def _verify_removed(self, ctx: StepContext) -> Mapping[str, Any]:
        left = self.inventory(ctx.instance_id, ctx.parameters)
        if left:
            raise PermanentBackendError("resources left behind: " + ", ".join(sorted({k for k, _ in left})))
        return {}

    def _apply_parameters(self, ctx: StepContext) -> Mapping[str, Any]:
        self._sites(ctx)  # an update needs both sites before it changes anything
        self.keys.apply_encryption(ctx)
        return self.replication.apply_volume_changes(ctx)
