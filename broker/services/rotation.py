"""Binding rotation (OSB 2.17) and binding lifetimes: which successor a ``predecessor_binding_id`` asks for, what
it inherits, and the ``metadata.expires_at`` / ``renew_before`` every binding of a plan with a lifetime gets.

Read from the spec at openservicebrokerapi/servicebroker tag v2.17 (commit
ef303a9559f1fb3815ac9d47b27439058bf3fa7c), spec.md "Binding Rotation", "Request (Rotating a Service Binding)"
and "Binding Metadata Object":
- only plans with ``binding_rotatable: true`` may be rotated (the Platform MUST NOT try otherwise);
- the rotation request's body is ``predecessor_binding_id*``: the id of a non-expired binding of the *same*
  instance; the successor gets a new binding id, and both stay valid until they expire or are unbound;
- the platform need not send the bind parameters again (the spec's motivation): the successor inherits them;
- ``expires_at`` / ``renew_before`` are ``yyyy-mm-ddThh:mm:ss.sZ``, ``renew_before`` <= ``expires_at``.
The spec names no status code for a refused rotation, so each refusal is its generic "invalid data" 400 (a
predecessor whose bind is still running: 422 ``ConcurrencyError``, as for any busy binding); docs/rotation.md
lists the decisions.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from broker.domain.catalog import Catalog, Plan
from broker.domain.errors import BadRequest, ConcurrencyError
from broker.domain.models import Binding, BindingState
from broker.services.requests import BindRequest
from broker.services.validation import validate_parameters
from broker.store.repository import Tx
from broker.store.tables import bindings

ROTATION_MIN_VERSION = (2, 17)  # predecessor_binding_id and binding_rotatable are 2.17 fields
DAY = 86400.0
FIELD = "predecessor_binding_id"


def iso(ts: float) -> str:
    """``yyyy-mm-ddThh:mm:ss.sZ`` exactly as the spec's pattern (one fraction digit)."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 100000}Z"


def lifetime(plan: Plan, now: float) -> tuple[float | None, float | None]:
    """``(expires_at, renew_before)`` of a binding issued ``now`` on ``plan``: catalog features
    ``credential_lifetime_days`` and ``renew_before_days`` (how long before expiry to rotate); none without a
    lifetime. Whole seconds, so what is stored is what the ISO text says."""
    days = plan.features.get("credential_lifetime_days")
    if not days:
        return None, None
    expires = math.floor(now) + float(days) * DAY
    ahead = float(plan.features.get("renew_before_days") or 0) * DAY
    return expires, max(math.floor(now), expires - ahead)


def metadata(binding: Binding) -> dict[str, Any]:
    """The binding's OSB ``metadata`` (Binding Metadata Object): its lifetime, when it has one."""
    out: dict[str, Any] = {}
    if binding.expires_at is not None:
        out["expires_at"] = iso(binding.expires_at)
    if binding.renew_before is not None:
        out["renew_before"] = iso(binding.renew_before)
    return out


def rotatable(plan: Plan) -> bool:
    return bool(plan.raw.get("binding_rotatable", False))


def _instance_of(tx: Tx, binding_id: str) -> str | None:
    """The instance of a live binding with this id, whatever the instance (to tell "unknown" from "another
    instance's")."""
    row = tx.conn.execute(select(bindings.c.instance_id).where(
        bindings.c.id == binding_id, bindings.c.state != BindingState.GONE.value).limit(1)).first()
    return row[0] if row else None


def predecessor(tx: Tx, req: BindRequest, now: float) -> Binding:
    """The bound, non-expired binding ``req.predecessor_binding_id`` names on ``req``'s instance, or the refusal."""
    pid = req.predecessor_binding_id
    assert pid is not None
    found = tx.get_binding(req.instance_id, pid)
    if found is None or found.state == BindingState.GONE:
        if _instance_of(tx, pid) is not None:
            raise BadRequest(f"{FIELD}: binding {pid} belongs to another service instance; a rotation must "
                             "name a binding of the same instance")
        raise BadRequest(f"{FIELD}: binding {pid} does not exist on instance {req.instance_id}")
    if found.state == BindingState.BINDING:
        raise ConcurrencyError(f"{FIELD}: binding {pid} is still being created; rotate it once it is bound")
    if found.state != BindingState.BOUND:
        raise BadRequest(f"{FIELD}: binding {pid} is {found.state.value}, not bound; only a bound binding can "
                         "be rotated")
    if found.expires_at is not None and found.expires_at <= now:
        raise BadRequest(f"{FIELD}: binding {pid} expired at {iso(found.expires_at)}; bind anew instead")
    if found.bind_resource.get("serviceid_crn"):
        raise BadRequest(f"{FIELD}: binding {pid} uses the caller's own service ID (bind_resource.serviceid_crn): "
                         "the broker issues it no API key to rotate")
    return found


def inherit(req: BindRequest, pred: Binding, catalog: Catalog) -> BindRequest:
    """The successor's request: what the rotation body leaves out comes from the predecessor; what it repeats
    must be the same (a successor keeps its predecessor's grants, so it cannot change them)."""
    plan = catalog.plan(pred.plan_id)
    if plan is None or not rotatable(plan):
        name = plan.name if plan else pred.plan_id
        raise BadRequest(f"{FIELD}: plan {name!r} is not binding_rotatable; bind anew instead of rotating")
    for name in ("service_id", "plan_id"):
        sent = getattr(req, name)
        if sent and sent != getattr(pred, name):
            raise BadRequest(f"{name}: differs from the predecessor binding's; a rotation keeps them")
    if req.parameters and validate_parameters(req.parameters, plan.parameter_schema("bind")) != pred.parameters:
        raise BadRequest("parameters: differ from the predecessor binding's; a rotation keeps them (omit them)")
    if req.bind_resource and req.bind_resource != pred.bind_resource:
        raise BadRequest("bind_resource: differs from the predecessor binding's; a rotation keeps it (omit it)")
    return replace(req, service_id=pred.service_id, plan_id=pred.plan_id, parameters=dict(pred.parameters),
                   bind_resource=dict(pred.bind_resource), context=dict(req.context or pred.context),
                   app_guid=req.app_guid or pred.bind_resource.get("app_guid"))


def resolve(store: Any, catalog: Catalog, req: BindRequest, now: float) -> BindRequest:
    """``inherit`` for a rotation request (one read), before the bind checks the body against the plan."""
    with store.read(snapshot=False) as tx:
        pred = predecessor(tx, req, now)
    return inherit(req, pred, catalog)


def binding_fields(tx: Tx, req: BindRequest, plan: Plan, now: float) -> dict[str, Any]:
    """The new binding row's rotation and lifetime columns; for a rotation the predecessor is checked again
    inside the write transaction (an unbind may have taken it meanwhile)."""
    expires, renew = lifetime(plan, now)
    fields: dict[str, Any] = {"expires_at": expires, "renew_before": renew}
    if req.predecessor_binding_id:
        pred = predecessor(tx, req, now)
        fields["predecessor_binding_id"] = pred.id
        fields["identity_binding_id"] = pred.identity_binding_id or pred.id
    return fields


def payload_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """What a bind (or unbind) operation's payload carries for the workflow, the engine and the event log."""
    return {k: fields[k] for k in ("predecessor_binding_id", "identity_binding_id") if fields.get(k)}


def unbind_payload(binding: Binding) -> dict[str, Any]:
    """An unbind's payload: the chain's first binding, whose service ID and policies the unbind may have to
    remove (when no other binding of the chain holds a key on them any more)."""
    return {"identity_binding_id": binding.identity_binding_id} if binding.identity_binding_id else {}
