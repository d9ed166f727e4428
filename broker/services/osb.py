"""OSB semantics: idempotency, conflicts, concurrency, validation, and what each request becomes.

Every mutating method decides and writes inside one store transaction: it reads the instance (and
binding) rows, applies the checklist's idempotency table, and writes the row and its operation row
together. Nothing here knows about HTTP; results carry the OSB outcome (created / accepted / ok) and
errors are ``broker.domain.errors`` classes.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

from broker.domain.catalog import Catalog, Plan, Service
from broker.domain.errors import (
    AsyncRequired,
    BackendError,
    BadRequest,
    ConcurrencyError,
    Conflict,
    Gone,
    InstanceDisabled,
    InvalidParameters,
    MaintenanceInfoConflict,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
)
from broker.domain.models import (
    Binding,
    BindingState,
    Instance,
    InstanceState,
    Operation,
    OperationState,
    OperationType,
)
from broker.domain.protocols import Orchestrator
from broker.events.log import brief, recent
from broker.security.links import DashboardLinks
from broker.services import rotation
from broker.services.dr_validation import (
    check_bind_parameters,
    check_customer_api_key,
    check_encryption_change,
    validate_dr_parameters,
)
from broker.services.protection import Protection, assess
from broker.services.requests import (
    BindRequest,
    Caller,
    DeprovisionRequest,
    LastOperation,
    ProvisionRequest,
    Result,
    UnbindRequest,
    UpdateRequest,
)
from broker.services.validation import redact, validate_parameters
from broker.store.repository import Store, Tx
from broker.workflows.definitions import DR_ACTIONS


def _a(word: str) -> str:
    """The word with its indefinite article: "an update", "a provision"."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


class Runner(Protocol):
    """What the service needs of the worker: a nudge, and running one operation now."""

    def wake(self) -> None: ...

    def run_now(self, op_id: str, timeout: float) -> bool:
        """Run (or wait for) the operation; True once it has finished."""
        ...

    def expected_remaining(self, op: Operation) -> float: ...


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


RECENT_EVENTS = 5  # how many of an instance's newest DR events fetch instance and the dashboard show


def request_hash(**fields: Any) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


_STATE_TEXT = {
    OperationState.QUEUED: "in progress",
    OperationState.IN_PROGRESS: "in progress",
    OperationState.SUCCEEDED: "succeeded",
    OperationState.FAILED: "failed",
}


class BrokerService:
    def __init__(self, store: Store, catalog: Catalog, runner: Runner, orchestrator: Orchestrator, *,
                 public_url: str | None = None, sync_bind_timeout: float = 60.0, account_instance_limit: int = 20,
                 clock: Callable[[], float] = time.time, dashboard_links: DashboardLinks | None = None) -> None:
        self.store = store
        self.catalog = catalog
        self.runner = runner
        self.orchestrator = orchestrator
        self.account_instance_limit = account_instance_limit
        self.public_url = public_url.rstrip("/") if public_url else None
        self.sync_bind_timeout = sync_bind_timeout
        self.clock = clock
        # Signs every dashboard_url handed out; without it (no dashboard served) the URL needs the broker's auth.
        self.dashboard_links = dashboard_links

    # helpers --------------------------------------------------------------------------------------
    def _service_plan(self, service_id: str, plan_id: str | None) -> tuple[Service, Plan | None]:
        service = self.catalog.service(service_id)
        if service is None:
            raise BadRequest(f"service_id: {service_id!r} is not a service of this broker's catalog")
        if plan_id is None:
            return service, None
        plan = self.catalog.plan(plan_id)
        if plan is None or plan.service_id != service.id:
            raise BadRequest(f"plan_id: {plan_id!r} is not a plan of service {service.name!r}")
        return service, plan

    def _plan(self, plan_id: str) -> Plan:
        plan = self.catalog.plan(plan_id)
        if plan is None:
            raise Unprocessable(f"plan {plan_id!r} of this instance is no longer in the catalog")
        return plan

    def dashboard_url(self, instance_id: str, caller: Caller) -> str | None:
        base = self.public_url or (caller.base_url or "").rstrip("/")
        if not base:
            return None
        return f"{base}/dashboard/instances/{quote(instance_id, safe='')}"

    def dashboard_link(self, page_url: str | None, instance_id: str) -> str | None:
        """The stored dashboard page URL as handed to the platform: a signed link with the longest lifetime
        allowed, fresh on every answer (the stored URL itself opens only with the broker's credentials)."""
        if page_url is None or self.dashboard_links is None:
            return page_url
        return self.dashboard_links.sign(page_url, instance_id, now=self.clock())

    def _new_operation(self, *, instance_id: str, binding_id: str | None, op_type: OperationType,
                       plan_id: str, request_hash: str, caller: Caller, payload: dict[str, Any] | None = None,
                       blocked_by: str | None = None) -> Operation:
        return Operation(
            id=str(uuid.uuid4()), instance_id=instance_id, binding_id=binding_id, type=op_type,
            state=OperationState.QUEUED, plan_id=plan_id, request_hash=request_hash,
            created_at=self.clock(), description=f"{op_type.value}: queued", payload=payload or {},
            originating_identity=caller.originating_identity, request_identity=caller.request_identity,
            principal=caller.principal, blocked_by=blocked_by,
        )

    @staticmethod
    def _check_maintenance(plan: Plan, version: str | None) -> None:
        if version is None:
            return
        if plan.maintenance_version != version:
            current = plan.maintenance_version or "none"
            raise MaintenanceInfoConflict(
                f"maintenance_info.version {version!r} does not match the plan's version {current!r}; "
                "fetch the catalog again")

    # provision ------------------------------------------------------------------------------------
    def provision(self, req: ProvisionRequest) -> Result:
        digest = request_hash(service_id=req.service_id, plan_id=req.plan_id, parameters=req.parameters,
                              organization_guid=req.organization_guid, space_guid=req.space_guid,
                              maintenance_version=req.maintenance_version)
        # An id that exists (or is being provisioned) is answered before the body is checked against a plan:
        # different attributes are 409 even when the new plan's schema would refuse them (OSB: a 409 must not
        # hide behind a 400 for the new body's parameters).
        repeat = self._existing_instance(req, digest)
        if repeat is not None:
            return repeat
        _service, plan = self._service_plan(req.service_id, req.plan_id)
        assert plan is not None
        if not req.context.get("platform"):
            missing = [f for f in ("organization_guid", "space_guid") if not getattr(req, f)]
            if missing:
                raise BadRequest(f"{' and '.join(missing)}: required when the request has no context.platform")
        self._check_maintenance(plan, req.maintenance_version)
        params = validate_parameters(req.parameters, plan.parameter_schema("provision"))
        check_customer_api_key(plan, params)
        if not req.accepts_incomplete:
            raise AsyncRequired("provisioning disaster recovery takes minutes; retry with accepts_incomplete=true")
        account = validate_dr_parameters(plan, params, self.orchestrator, req.instance_id) or \
            req.context.get("account_id")
        dashboard = self.dashboard_url(req.instance_id, req.caller)
        now = self.clock()
        with self.store.write() as tx:
            tx.lock_instance(req.instance_id)
            existing = tx.get_instance(req.instance_id)
            if existing is not None and existing.state != InstanceState.GONE:
                return self._repeat_provision(tx, existing, digest)
            if account and tx.count_account_instances(account) >= self.account_instance_limit:
                raise InvalidParameters(
                    f"parameters.primary_workspace_crn: account a/{account} already has "
                    f"{self.account_instance_limit} DR instances, the limit per account")
            instance = Instance(
                id=req.instance_id, service_id=req.service_id, plan_id=req.plan_id,
                state=InstanceState.PROVISIONING, parameters=params, context=dict(req.context),
                organization_guid=req.organization_guid, space_guid=req.space_guid,
                maintenance_version=req.maintenance_version or plan.maintenance_version,
                dashboard_url=dashboard, request_hash=digest, enabled=True, last_active=None,
                created_at=now, updated_at=now, account_id=account,
            )
            op = self._new_operation(instance_id=req.instance_id, binding_id=None,
                                     op_type=OperationType.PROVISION, plan_id=req.plan_id,
                                     request_hash=digest, caller=req.caller)
            if existing is None:
                tx.insert_instance(instance)
            else:
                # Id reuse after a finished deprovision: the tombstone becomes the new instance.
                tx.purge_bindings(req.instance_id)
                tx.replace_instance(instance)
            tx.insert_operation(op)
        self.runner.wake()
        return Result("accepted", op.id, {"dashboard_url": self.dashboard_link(dashboard, req.instance_id),
                                          "operation": op.id})

    def _existing_instance(self, req: ProvisionRequest, digest: str) -> Result | None:
        """The answer for an id that already names a live instance (409, or the repeat's 202/200); None for a new
        one. One read when the id is new; the write transaction that creates the instance checks again."""
        with self.store.read(snapshot=False) as tx:
            if not tx.instance_exists(req.instance_id):
                return None
        with self.store.write() as tx:
            tx.lock_instance(req.instance_id)
            existing = tx.get_instance(req.instance_id)
            if existing is None or existing.state == InstanceState.GONE:
                return None
            result = self._repeat_provision(tx, existing, digest)
        if result.status == "accepted" and not req.accepts_incomplete:
            raise AsyncRequired("provisioning disaster recovery takes minutes; retry with accepts_incomplete=true")
        return result

    def _repeat_provision(self, tx: Tx, existing: Instance, digest: str) -> Result:
        if existing.request_hash != digest:
            raise Conflict(f"instance {existing.id} already exists with different attributes")
        active = tx.active_operations(existing.id)
        running = next((o for o in active if o.type == OperationType.PROVISION), None)
        if running is not None:
            return Result("accepted", running.id, {"dashboard_url": self.dashboard_link(existing.dashboard_url,
                                                                                        existing.id),
                                                   "operation": running.id})
        if active:
            raise ConcurrencyError(f"instance {existing.id} has {_a(active[0].type.value)} operation in progress")
        if existing.state == InstanceState.READY:
            return Result("ok", None, {"dashboard_url": self.dashboard_link(existing.dashboard_url, existing.id)})
        raise Conflict(f"instance {existing.id} exists in state {existing.state.value}; deprovision it before "
                       "provisioning it again")

    # update ---------------------------------------------------------------------------------------
    def update(self, req: UpdateRequest) -> Result:
        result = self._update(req)
        if result.status == "accepted":
            self.runner.wake()
        return result

    def _update(self, req: UpdateRequest) -> Result:
        service, target_plan = self._service_plan(req.service_id, req.plan_id)
        digest = request_hash(plan_id=req.plan_id, parameters=req.parameters,
                              maintenance_version=req.maintenance_version)
        with self.store.write() as tx:
            tx.lock_instance(req.instance_id)
            inst = tx.get_instance(req.instance_id)
            if inst is None or inst.state == InstanceState.GONE:
                raise NotFound(f"instance {req.instance_id} does not exist")
            if inst.service_id != req.service_id:
                raise BadRequest(f"service_id: instance {inst.id} belongs to service {inst.service_id!r}")
            active = tx.active_operations(inst.id)
            same = next((o for o in active if o.type == OperationType.UPDATE and o.request_hash == digest), None)
            if same is not None:
                return Result("accepted", same.id, {"operation": same.id})
            if active or inst.state in (InstanceState.PROVISIONING, InstanceState.DEPROVISIONING):
                kind = active[0].type.value if active else inst.state.value
                raise ConcurrencyError(f"instance {inst.id} has {_a(kind)} operation in progress")
            if inst.state == InstanceState.FAILED:
                raise Unprocessable(f"instance {inst.id} failed to provision and cannot be updated; "
                                    "deprovision it", instance_usable=False, update_repeatable=False)
            current = self._plan(inst.plan_id)
            if req.parameters and "dr_action" in req.parameters:
                return self._dr_action(tx, req, inst, current, target_plan, digest)
            target = target_plan or current
            if target.id != current.id:
                self._check_plan_change(service, current, target)
            self._check_maintenance(target, req.maintenance_version)
            new_params = dict(inst.parameters)
            if req.parameters is not None:
                changes = validate_parameters(req.parameters, target.parameter_schema("update"),
                                              apply_defaults=False)
                check_customer_api_key(target, changes)
                if isinstance(changes.get("encryption"), dict) and isinstance(new_params.get("encryption"), dict):
                    # encryption is changed field by field: the fields an update leaves out keep their values
                    changes["encryption"] = {**new_params["encryption"], **changes["encryption"]}
                if isinstance(changes.get("rehearsal"), dict) and isinstance(new_params.get("rehearsal"), dict):
                    # so is rehearsal: {"rehearsal": {"enabled": false}} pauses the schedule it has
                    changes["rehearsal"] = {**new_params["rehearsal"], **changes["rehearsal"]}
                new_params.update(changes)
            new_params = validate_parameters(new_params, target.parameter_schema("provision"))
            check_encryption_change(inst.parameters, new_params)
            if new_params != inst.parameters or target.id != current.id:
                validate_dr_parameters(target, new_params, self.orchestrator, inst.id)
            maintenance = req.maintenance_version or inst.maintenance_version
            if target.id == current.id and new_params == inst.parameters and maintenance == \
                    inst.maintenance_version:
                return Result("ok", None, {})
            if not req.accepts_incomplete:
                raise AsyncRequired("updating disaster recovery takes minutes; retry with accepts_incomplete=true")
            op = self._new_operation(
                instance_id=inst.id, binding_id=None, op_type=OperationType.UPDATE, plan_id=current.id,
                request_hash=digest, caller=req.caller,
                payload={"target_plan_id": target.id if target.id != current.id else None,
                         "target_parameters": new_params,
                         # a new ibmcloud_api_key is handed to DR Automation, not only stored
                         "rotate_api_key": new_params.get("ibmcloud_api_key") != inst.parameters.get(
                             "ibmcloud_api_key"),
                         "target_maintenance_version": maintenance if maintenance != inst.maintenance_version
                         else None})
            tx.insert_operation(op)
        return Result("accepted", op.id, {"operation": op.id})

    def _dr_action(self, tx: Tx, req: UpdateRequest, inst: Instance, plan: Plan, target_plan: Plan | None,
                   digest: str) -> Result:
        assert req.parameters is not None
        if set(req.parameters) != {"dr_action"} or (target_plan and target_plan.id != plan.id) or \
                req.maintenance_version:
            raise BadRequest("parameters.dr_action: send a DR action alone, without other parameter, plan or "
                             "maintenance changes")
        checked = validate_parameters(req.parameters, plan.parameter_schema("update"))
        action = dict(checked["dr_action"])
        spec = DR_ACTIONS[action["type"]]
        if not inst.enabled:
            raise InstanceDisabled(f"instance {inst.id} is disabled by the platform; DR actions are refused "
                                   "until it is enabled again (replication keeps running)")
        if spec.real_move and plan.features.get("rehearsal_only"):
            raise Unprocessable(f"parameters.dr_action.type: {action['type']} is a real move, which plan "
                                f"{plan.name!r} does not allow (test_failover and cleanup_test only)")
        why_not = spec.allowed(inst.dr_state)
        if why_not:
            raise Unprocessable(f"parameters.dr_action.type: {action['type']} is not possible now: {why_not}")
        if not req.accepts_incomplete:
            raise AsyncRequired("DR actions take minutes; retry with accepts_incomplete=true")
        op = self._new_operation(instance_id=inst.id, binding_id=None, op_type=OperationType.UPDATE,
                                 plan_id=plan.id, request_hash=digest, caller=req.caller,
                                 payload={"dr_action": action, "target_parameters": inst.parameters,
                                          "target_plan_id": None, "target_maintenance_version": None})
        tx.insert_operation(op)
        return Result("accepted", op.id, {"operation": op.id})

    def scheduled_rehearsal(self, tx: Tx, instance_id: str, caller: Caller,
                            due_at: float) -> Operation | tuple[str, str]:
        """Queue the rehearsal DR action that ``instance_id``'s schedule asks for, inside the caller's transaction
        (broker.rehearsals.scheduler moves the schedule on in the same one), under the rules a platform's DR
        action meets: the queued operation, or (reason, why) when it must be skipped now."""
        tx.lock_instance(instance_id)
        inst = tx.get_instance(instance_id)
        if inst is None or inst.state == InstanceState.GONE:
            return "gone", f"instance {instance_id} does not exist"
        active = tx.active_operations(inst.id)
        if active:
            return "busy", f"{_a(active[0].type.value)} operation is in progress"
        if inst.state != InstanceState.READY:
            return "not_ready", f"the instance is {inst.state.value}"
        if not inst.enabled:
            return "disabled", "the instance is disabled by the platform"
        plan = self.catalog.plan(inst.plan_id)
        if plan is None:
            return "not_ready", f"plan {inst.plan_id} is no longer in the catalog"
        dr = inst.dr_state or {}
        if dr.get("active_site", "primary") != "primary":
            return "failed_over", "the instance is failed over to the secondary site"
        if dr.get("test_active"):
            return "test_active", "a test failover is active (cleanup_test has not run)"
        why_not = DR_ACTIONS["rehearsal"].allowed(dr)
        if why_not:
            return "not_allowed", why_not
        action = {"type": "rehearsal", "scheduled": True}
        op = self._new_operation(instance_id=inst.id, binding_id=None, op_type=OperationType.UPDATE,
                                 plan_id=plan.id, caller=caller,
                                 request_hash=request_hash(kind="scheduled-rehearsal", due_at=due_at),
                                 payload={"dr_action": action, "scheduled_for": due_at,
                                          "target_parameters": inst.parameters, "target_plan_id": None,
                                          "target_maintenance_version": None})
        tx.insert_operation(op)
        return op

    def _check_plan_change(self, service: Service, current: Plan, target: Plan) -> None:
        if not service.plan_updateable(current):
            raise Unprocessable(f"plan_id: plan {current.name!r} cannot be changed (plan_updateable is false)")
        allowed = current.features.get("plan_changes") or []
        if target.name not in allowed:
            options = ", ".join(allowed) or "none"
            raise Unprocessable(f"plan_id: changing plan {current.name!r} to {target.name!r} is not supported "
                                f"(allowed: {options})")

    # deprovision ----------------------------------------------------------------------------------
    def deprovision(self, req: DeprovisionRequest) -> Result:
        self._service_plan(req.service_id, req.plan_id)
        with self.store.write() as tx:
            tx.lock_instance(req.instance_id)
            inst = tx.get_instance(req.instance_id)
            if inst is None or inst.state == InstanceState.GONE:
                raise Gone(f"instance {req.instance_id} does not exist")
            active = tx.active_operations(inst.id)
            running = next((o for o in active if o.type == OperationType.DEPROVISION), None)
            if running is not None:
                return Result("accepted", running.id, {"operation": running.id})
            if not req.accepts_incomplete:
                raise AsyncRequired("deprovisioning disaster recovery takes minutes; retry with "
                                    "accepts_incomplete=true")
            blocker = next((o for o in active if o.type != OperationType.PROVISION), None)
            if blocker is not None:
                raise ConcurrencyError(f"instance {inst.id} has {_a(blocker.type.value)} operation in progress")
            provision = next((o for o in active if o.type == OperationType.PROVISION), None)
            blocked_by = None
            if provision is not None:
                # The spec requires halting creation: a queued provision ends now, a running one at its
                # next step boundary; the deprovision waits for it and then removes what it made.
                if provision.state == OperationState.QUEUED:
                    tx.update_operation(provision.id, expect={"state": OperationState.QUEUED},
                                        state=OperationState.FAILED, finished_at=self.clock(),
                                        description="halted: a deprovision request arrived", error="halted")
                else:
                    tx.update_operation(provision.id, cancel_requested=True)
                    blocked_by = provision.id
            op = self._new_operation(instance_id=inst.id, binding_id=None, op_type=OperationType.DEPROVISION,
                                     plan_id=inst.plan_id, request_hash=request_hash(kind="deprovision"),
                                     caller=req.caller, blocked_by=blocked_by)
            tx.update_instance(inst.id, state=InstanceState.DEPROVISIONING.value, updated_at=self.clock())
            tx.insert_operation(op)
        self.runner.wake()
        return Result("accepted", op.id, {"operation": op.id})

    # last operation -------------------------------------------------------------------------------
    def _report(self, op: Operation) -> LastOperation:
        state = _STATE_TEXT[op.state]
        if state == "in progress":
            description = op.description or "in progress"
            if op.state == OperationState.QUEUED and op.blocked_by:
                description = "waiting for the halted provision to stop at a step boundary"
            retry = math.ceil(self.runner.expected_remaining(op))
            return LastOperation(state, description, retry_after=max(1, retry))
        usable = repeatable = None
        if op.state == OperationState.FAILED and op.type == OperationType.UPDATE:
            usable, repeatable = True, True
        elif op.state == OperationState.FAILED and op.type == OperationType.DEPROVISION:
            usable = False
        return LastOperation(state, op.description or state, instance_usable=usable,
                             update_repeatable=repeatable)

    def last_operation(self, instance_id: str, operation: str | None = None) -> LastOperation:
        with self.store.read(snapshot=False) as tx:
            op = tx.get_operation(operation) if operation else None
            if op is None or op.instance_id != instance_id or op.type.is_binding:
                op = tx.latest_instance_operation(instance_id)
            # Instance rows are never deleted, and an operation is written with its instance: only when there
            # is no operation can the instance be missing.
            if op is None and not tx.instance_exists(instance_id):
                raise NotFound(f"instance {instance_id} does not exist")
        if op is None:
            raise NotFound(f"instance {instance_id} has no operation")
        return self._report(op)

    def last_binding_operation(self, instance_id: str, binding_id: str,
                               operation: str | None = None) -> LastOperation:
        with self.store.read() as tx:
            binding = tx.get_binding(instance_id, binding_id)
            if binding is None:
                raise NotFound(f"binding {binding_id} of instance {instance_id} does not exist")
            op = tx.get_operation(operation) if operation else None
            if op is None or op.binding_id != binding_id or op.instance_id != instance_id:
                op = tx.latest_binding_operation(instance_id, binding_id)
        if op is None:
            raise NotFound(f"binding {binding_id} has no operation")
        report = self._report(op)
        return LastOperation(report.state, report.description, retry_after=report.retry_after)

    # fetch ----------------------------------------------------------------------------------------
    def get_instance(self, instance_id: str) -> dict[str, Any]:
        with self.store.read(snapshot=False) as tx:
            summary = tx.instance_summary(instance_id)
        if summary is None or summary[0].state in (InstanceState.GONE, InstanceState.PROVISIONING,
                                                   InstanceState.FAILED):
            raise NotFound(f"instance {instance_id} does not exist or is still being provisioned")
        inst, updating, bound = summary
        if updating:
            raise ConcurrencyError(f"instance {instance_id} is being updated")
        plan = self.catalog.plan(inst.plan_id)
        params = redact(inst.parameters, plan.parameter_schema("provision") if plan else None)
        attributes: dict[str, Any] = {
            "state": inst.state.value, "enabled": inst.enabled,
            "bindings": bound,
            **self.dr_attributes(inst)}
        body: dict[str, Any] = {
            "service_id": inst.service_id,
            "plan_id": inst.plan_id,
            "parameters": params,
            "metadata": {"labels": {}, "attributes": attributes},
        }
        if inst.dashboard_url:  # optional (OSB): an instance provisioned through an untrusted Host has none
            body["dashboard_url"] = self.dashboard_link(inst.dashboard_url, inst.id)
        if inst.maintenance_version:
            body["maintenance_info"] = {"version": inst.maintenance_version}
        return body

    def _rto_target_seconds(self, inst: Instance) -> float | None:
        """The plan's RTO target (catalog feature ``rto_target_minutes``), which every rehearsal is held to."""
        plan = self.catalog.plan(inst.plan_id)
        minutes = plan.features.get("rto_target_minutes") if plan else None
        return minutes * 60 if minutes else None

    def dr_attributes(self, inst: Instance) -> dict[str, Any]:
        """Live DR state: replication, active site, achieved RPO against target, last rehearsal and RTO, and the
        protection status (``broker.services.protection``)."""
        return self.dr_view(inst)[0]

    def dr_view(self, inst: Instance) -> tuple[dict[str, Any], Protection]:
        """``dr_attributes`` and the protection status they were computed from (one replication read)."""
        dr = inst.dr_state or {}
        target_min = inst.parameters.get("rpo_target_minutes")
        out: dict[str, Any] = {
            "active_site": dr.get("active_site", "primary"),
            "test_failover_active": bool(dr.get("test_active")),
            "rpo_target_seconds": target_min * 60 if target_min else None,
            "last_rehearsal_at": _iso(dr.get("last_rehearsal_at")),
            "last_rehearsal_rto_seconds": dr.get("last_rehearsal_rto_seconds"),
            "last_rehearsal_rto_met": dr.get("last_rehearsal_rto_met"),
            "rto_target_seconds": self._rto_target_seconds(inst),
        }
        status = self.orchestrator.replication_status(inst.id)
        if status is not None:
            out["replication_state"] = status.state
            out["replication_primary_role"] = status.primary_role
            out["consistency_group"] = status.consistency_group
            out["cycle_period_seconds"] = status.cycle_period_seconds
            if status.freeze_time is not None:
                out["last_freeze_time"] = _iso(status.freeze_time)
        # achieved_rpo_seconds and rpo_met come from the protection status: an RPO only while replication copies
        protection = assess(inst, status, self.clock(), self.catalog.plan(inst.plan_id))
        out.update(protection.attributes())
        # the DR event log's newest entries (broker.events; docs/events.md): one indexed query
        with self.store.read(snapshot=False) as tx:
            out["recent_events"] = [brief(e) for e in recent(tx.conn, inst.id, RECENT_EVENTS)]
        return out, protection

    def get_binding(self, instance_id: str, binding_id: str) -> dict[str, Any]:
        with self.store.read() as tx:
            binding = tx.get_binding(instance_id, binding_id)
        if binding is None or binding.state not in (BindingState.BOUND, BindingState.UNBINDING):
            raise NotFound(f"binding {binding_id} does not exist or is still being created")
        plan = self.catalog.plan(binding.plan_id)
        return {
            "credentials": binding.credentials or {},
            "parameters": redact(binding.parameters, plan.parameter_schema("bind") if plan else None),
            "metadata": rotation.metadata(binding),
        }

    # bind / unbind --------------------------------------------------------------------------------
    def bind(self, req: BindRequest) -> Result:
        digest = request_hash(service_id=req.service_id, plan_id=req.plan_id, parameters=req.parameters,
                              bind_resource=req.bind_resource, app_guid=req.app_guid,
                              **({"predecessor_binding_id": req.predecessor_binding_id}
                                 if req.predecessor_binding_id else {}))
        # As for instances: an existing (or in-flight) binding id is answered before the body meets the plan.
        repeat = self._existing_binding(req, digest)
        if isinstance(repeat, Result):
            return repeat
        if repeat is not None:
            return self._finish_sync_bind(req.instance_id, req.binding_id, repeat, created=False)
        if req.predecessor_binding_id:  # OSB 2.17 rotation: the successor inherits its predecessor's request
            req = rotation.resolve(self.store, self.catalog, req, self.clock())
        service, plan = self._service_plan(req.service_id, req.plan_id)
        assert plan is not None
        if not service.bindable(plan):
            raise BadRequest(f"plan_id: plan {plan.name!r} is not bindable")
        params = validate_parameters(req.parameters, plan.parameter_schema("bind"))
        check_bind_parameters(plan, params)
        now = self.clock()
        with self.store.write() as tx:
            tx.lock_instance(req.instance_id)
            inst = tx.get_instance(req.instance_id)
            if inst is None or inst.state == InstanceState.GONE:
                raise NotFound(f"instance {req.instance_id} does not exist")
            existing = tx.get_binding(inst.id, req.binding_id)
            created = True
            if existing is not None and existing.state != BindingState.GONE:
                outcome = self._repeat_bind(tx, existing, digest, req.accepts_incomplete)
                if isinstance(outcome, Result):
                    return outcome
                op_id, created = outcome, False
            else:
                self._check_bindable_instance(tx, inst, req.plan_id)
                rotated = rotation.binding_fields(tx, req, plan, now)  # lifetime; a successor's predecessor
                binding = Binding(
                    instance_id=inst.id, id=req.binding_id, service_id=req.service_id, plan_id=req.plan_id,
                    state=BindingState.BINDING, parameters=params, bind_resource=dict(req.bind_resource),
                    context=dict(req.context), credentials=None, request_hash=digest, created_at=now,
                    updated_at=now, **rotated)
                op = self._new_operation(instance_id=inst.id, binding_id=req.binding_id,
                                         op_type=OperationType.BIND, plan_id=req.plan_id, request_hash=digest,
                                         caller=req.caller, payload={"purpose": params.get("purpose"),
                                                                     **rotation.payload_fields(rotated)})
                if existing is None:
                    tx.insert_binding(binding)
                else:
                    tx.replace_binding(binding)
                tx.insert_operation(op)
                op_id = op.id
        if req.accepts_incomplete:
            self.runner.wake()
            return Result("accepted", op_id, {"operation": op_id})
        return self._finish_sync_bind(req.instance_id, req.binding_id, op_id, created=created)

    def _existing_binding(self, req: BindRequest, digest: str) -> Result | str | None:
        """For a binding id that is live already: the repeat's answer (or 409), or the running bind's operation
        id for a synchronous repeat to wait on; None for a new id (its instance is checked later)."""
        with self.store.read(snapshot=False) as tx:
            existing = tx.get_binding(req.instance_id, req.binding_id)
            if existing is None or existing.state == BindingState.GONE:
                return None
        with self.store.write() as tx:
            tx.lock_instance(req.instance_id)
            existing = tx.get_binding(req.instance_id, req.binding_id)
            if existing is None or existing.state == BindingState.GONE:
                return None
            return self._repeat_bind(tx, existing, digest, req.accepts_incomplete)

    def _check_bindable_instance(self, tx: Tx, inst: Instance, plan_id: str) -> None:
        if inst.state in (InstanceState.PROVISIONING, InstanceState.DEPROVISIONING):
            raise ConcurrencyError(f"instance {inst.id} is {inst.state.value}; bind when it is ready")
        if inst.state == InstanceState.FAILED:
            raise Unprocessable(f"instance {inst.id} failed to provision; it cannot be bound")
        if not inst.enabled:
            raise InstanceDisabled(f"instance {inst.id} is disabled by the platform; bindings are refused "
                                   "until it is enabled again (replication keeps running)")
        if plan_id != inst.plan_id:
            raise BadRequest(f"plan_id: {plan_id!r} is not the plan of instance {inst.id}")
        active = [o for o in tx.active_operations(inst.id) if not o.type.is_binding]
        if active:
            raise ConcurrencyError(f"instance {inst.id} has {_a(active[0].type.value)} operation in progress")

    def _repeat_bind(self, tx: Tx, existing: Binding, digest: str, accepts_incomplete: bool) -> Result | str:
        if existing.request_hash != digest:
            raise Conflict(f"binding {existing.id} already exists with different attributes")
        active = [o for o in tx.active_operations(existing.instance_id) if o.binding_id == existing.id]
        running = next((o for o in active if o.type == OperationType.BIND), None)
        if running is not None:
            if accepts_incomplete:
                return Result("accepted", running.id, {"operation": running.id})
            return running.id
        if active:
            raise ConcurrencyError(f"binding {existing.id} is being deleted")
        if existing.state == BindingState.BOUND:
            return Result("ok", None, {"credentials": existing.credentials or {},
                                       "metadata": rotation.metadata(existing)})
        raise Conflict(f"binding {existing.id} exists in state {existing.state.value}; unbind it first")

    def _wait(self, op_id: str) -> Operation:
        if not self.runner.run_now(op_id, self.sync_bind_timeout):
            raise ServiceUnavailable(f"operation {op_id} did not finish within {self.sync_bind_timeout:g}s; "
                                     "it continues in the background")
        with self.store.read() as tx:
            op = tx.get_operation(op_id)
        assert op is not None
        return op

    def _finish_sync_bind(self, instance_id: str, binding_id: str, op_id: str, *, created: bool) -> Result:
        op = self._wait(op_id)
        if op.state != OperationState.SUCCEEDED:
            raise BackendError(op.description or "binding failed")
        with self.store.read() as tx:
            binding = tx.get_binding(instance_id, binding_id)
        assert binding is not None
        return Result("created" if created else "ok", None, {"credentials": binding.credentials or {},
                                                             "metadata": rotation.metadata(binding)})

    def unbind(self, req: UnbindRequest) -> Result:
        self._service_plan(req.service_id, req.plan_id)
        with self.store.write() as tx:
            tx.lock_instance(req.instance_id)
            binding = tx.get_binding(req.instance_id, req.binding_id)
            if binding is None or binding.state == BindingState.GONE:
                raise Gone(f"binding {req.binding_id} does not exist")
            active = tx.active_operations(req.instance_id)
            mine = [o for o in active if o.binding_id == req.binding_id]
            running = next((o for o in mine if o.type == OperationType.UNBIND), None)
            if running is not None:
                op_id = running.id
            else:
                others = [o for o in active if not o.type.is_binding]
                if others:
                    raise ConcurrencyError(f"instance {req.instance_id} has {_a(others[0].type.value)} "
                                           "operation in progress")
                bind_op = next((o for o in mine if o.type == OperationType.BIND), None)
                blocked_by = None
                if bind_op is not None:
                    if bind_op.state == OperationState.QUEUED:
                        tx.update_operation(bind_op.id, expect={"state": OperationState.QUEUED},
                                            state=OperationState.FAILED, finished_at=self.clock(),
                                            description="halted: an unbind request arrived", error="halted")
                    else:
                        tx.update_operation(bind_op.id, cancel_requested=True)
                        blocked_by = bind_op.id
                op = self._new_operation(instance_id=req.instance_id, binding_id=req.binding_id,
                                         op_type=OperationType.UNBIND, plan_id=binding.plan_id,
                                         request_hash=request_hash(kind="unbind"), caller=req.caller,
                                         blocked_by=blocked_by,
                                         payload=rotation.unbind_payload(binding))
                tx.update_binding(req.instance_id, req.binding_id, state=BindingState.UNBINDING.value,
                                  updated_at=self.clock())
                tx.insert_operation(op)
                op_id = op.id
        if req.accepts_incomplete:
            self.runner.wake()
            return Result("accepted", op_id, {"operation": op_id})
        op = self._wait(op_id)
        if op.state != OperationState.SUCCEEDED:
            raise BackendError(op.description or "unbinding failed")
        return Result("ok", None, {})

    # IBM Cloud /bluemix_v1 ------------------------------------------------------------------------
    def instance_state(self, instance_id: str) -> dict[str, Any]:
        with self.store.read() as tx:
            inst = tx.get_instance(instance_id)
        if inst is None or inst.state == InstanceState.GONE:
            raise NotFound(f"instance {instance_id} does not exist")
        return {"enabled": inst.enabled,
                "active": inst.enabled and inst.state == InstanceState.READY,
                "last_active": int((inst.last_active or inst.created_at) * 1000)}

    def set_instance_state(self, instance_id: str, enabled: bool, caller: Caller,
                           details: Mapping[str, Any] | None = None) -> None:
        now = self.clock()
        with self.store.write() as tx:
            tx.lock_instance(instance_id)
            inst = tx.get_instance(instance_id)
            if inst is None or inst.state == InstanceState.GONE:
                raise NotFound(f"instance {instance_id} does not exist")
            fields: dict[str, Any] = {"enabled": enabled, "updated_at": now}
            if inst.enabled and not enabled:
                fields["last_active"] = now
            tx.update_instance(instance_id, **fields)
