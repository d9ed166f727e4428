"""DR rules beyond the JSON schema: sites that form a GRS pair in one account, volumes the backend can
protect, the plan's required sections, proxies, and the per-account instance limit.

Each failure is an ``InvalidParameters`` (400) whose description names the fields involved; an update that
asks Key Protect for what it cannot do (``check_encryption_change``) is ``Unprocessable`` (422).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.domain.catalog import Plan
from broker.domain.errors import InvalidParameters, Unprocessable
from broker.domain.protocols import Orchestrator
from broker.domain.sites import is_grs_pair, parse_workspace_crn, partner_zones
from broker.notifications.selection import check_notification_parameters
from broker.rehearsals import spec as rehearsal_spec

MAX_VOLUMES_PER_GROUP = 30


def check_sites(params: Mapping[str, Any]) -> tuple[str, str] | None:
    """Check the two workspaces; return (primary account, primary zone) when both are present."""
    p_crn, s_crn = params.get("primary_workspace_crn"), params.get("secondary_workspace_crn")
    if not p_crn or not s_crn:
        return None
    primary, secondary = parse_workspace_crn(p_crn), parse_workspace_crn(s_crn)
    if primary is None or secondary is None:
        bad = "primary_workspace_crn" if primary is None else "secondary_workspace_crn"
        raise InvalidParameters(f"parameters.{bad}: not a PowerVS workspace CRN")
    if primary.crn == secondary.crn or primary.guid == secondary.guid:
        raise InvalidParameters("parameters.primary_workspace_crn, parameters.secondary_workspace_crn: the "
                                "primary and secondary workspaces must differ")
    if primary.account != secondary.account:
        raise InvalidParameters(
            "parameters.primary_workspace_crn, parameters.secondary_workspace_crn: both workspaces must be in "
            f"the same account (primary a/{primary.account}, secondary a/{secondary.account})")
    if not is_grs_pair(primary.zone, secondary.zone):
        partners = ", ".join(partner_zones(primary.zone)) or "none"
        raise InvalidParameters(
            "parameters.primary_workspace_crn, parameters.secondary_workspace_crn: sites "
            f"{primary.site} and {secondary.site} do not form a Global Replication Service pair "
            f"({primary.zone} replicates to: {partners})")
    return primary.account, primary.zone


def check_plan_sections(plan: Plan, params: Mapping[str, Any]) -> None:
    f = plan.features
    if f.get("orchestrator") == "ksys" and not params.get("orchestrator"):
        raise InvalidParameters(f"parameters.orchestrator: required by plan {plan.name!r}")
    if f.get("byok") and not params.get("encryption"):
        raise InvalidParameters(f"parameters.encryption: required by plan {plan.name!r}")
    if f.get("orchestrator") == "ksys":
        zones = [ref.zone for ref in (parse_workspace_crn(params.get(k, "")) for k in
                                      ("primary_workspace_crn", "secondary_workspace_crn")) if ref]
        needing = [z for z in zones if z.startswith(("che", "mon"))]
        if needing and not (params.get("orchestrator") or {}).get("proxy"):
            raise InvalidParameters(f"parameters.orchestrator.proxy: required because site {needing[0]} reaches "
                                    "the DR orchestrator only through a proxy")


def check_volumes(orchestrator: Orchestrator, params: Mapping[str, Any], instance_id: str | None) -> None:
    volumes = list(params.get("protected_volumes") or [])
    if len(volumes) > MAX_VOLUMES_PER_GROUP:
        raise InvalidParameters(f"parameters.protected_volumes: at most {MAX_VOLUMES_PER_GROUP} volumes per "
                                f"replication group ({len(volumes)} given)")
    if not volumes or not params.get("primary_workspace_crn") or not params.get("secondary_workspace_crn"):
        return
    problems = orchestrator.check_protection(params["primary_workspace_crn"], params["secondary_workspace_crn"],
                                             volumes, instance_id)
    if problems:
        raise InvalidParameters("; ".join(problems))


def check_customer_api_key(plan: Plan, requested: Mapping[str, Any] | None) -> None:
    """``ibmcloud_api_key`` is the key DR Automation's orchestrator works with; a plan without an orchestrator
    has no use for it, so it is refused there rather than stored for nothing (checked on what a request
    sends, so an instance that holds one from earlier can still be updated)."""
    if requested and "ibmcloud_api_key" in requested and plan.features.get("orchestrator") != "ksys":
        raise InvalidParameters(
            f"parameters.ibmcloud_api_key: plan {plan.name!r} runs no DR orchestrator, the only user of a customer "
            "API key (the broker drives replication with its own identity); leave it out")


# What each bind ``purpose`` needs of the plan (the plan schemas offer only what the plan can serve).
_PURPOSE_NEEDS = {
    "orchestrator": (lambda f: f.get("orchestrator") == "ksys", "a DR orchestrator (KSYS plans)"),
    "kms-dek": (lambda f: bool(f.get("byok")), "the instance's root key (*-byok plans)"),
}


def check_bind_parameters(plan: Plan, params: Mapping[str, Any]) -> None:
    """Bind ``purpose`` and ``role`` together: a purpose the plan cannot serve, or ``Writer`` on a ``readonly``
    binding (which grants Viewer + Reader only), is a 400 naming the field."""
    purpose = params.get("purpose", "readonly")
    need = _PURPOSE_NEEDS.get(purpose)
    if need is not None and not need[0](plan.features):
        raise InvalidParameters(f"parameters.purpose: {purpose} needs {need[1]}; plan {plan.name!r} has none")
    if purpose == "readonly" and params.get("role", "Reader") != "Reader":
        raise InvalidParameters("parameters.role: a readonly binding gets Viewer + Reader on the workspaces; "
                                "Writer needs purpose orchestrator or kms-dek")


def validate_dr_parameters(plan: Plan, params: Mapping[str, Any], orchestrator: Orchestrator,
                           instance_id: str | None = None) -> str | None:
    """Run every rule; return the primary site's account (for the instance limit)."""
    sites = check_sites(params)
    rehearsal_spec.check(params)  # cron syntax and time zone: what the schema cannot check
    check_plan_sections(plan, params)
    check_volumes(orchestrator, params, instance_id)
    check_notification_parameters(params)
    return sites[0] if sites else None


def check_encryption_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """An update's ``encryption`` is applied to the root key in full (``rotation_interval_months``, adding a
    dual-authorisation policy) or refused here, before any operation is accepted: Key Protect cannot remove a
    key's dual-authorisation policy, and the broker does not move a root key to another key ring (the key
    stays where it was made, and deprovisioning deletes only the ring it made)."""
    before, after = old.get("encryption"), new.get("encryption")
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return  # no key yet (a plan change to byok makes it with these parameters)
    if before.get("dual_auth_delete") and not after.get("dual_auth_delete"):
        raise Unprocessable("parameters.encryption.dual_auth_delete: the root key has a dual-authorisation delete "
                            "policy, which cannot be removed (Key Protect refuses to let a key that needs two "
                            "approvers to be deleted by one); leave it true")
    if before.get("key_ring_id") != after.get("key_ring_id"):
        was = before.get("key_ring_id") or "the broker's own ring"
        wanted = after.get("key_ring_id") or "the broker's own ring"
        raise Unprocessable(f"parameters.encryption.key_ring_id: the root key is in key ring {was}; the broker does "
                            f"not move it to {wanted} (the ring stays what it was at provisioning, so that "
                            "deprovisioning deletes the key where it is and removes only a ring the broker "
                            "created); leave key_ring_id out, or provision a new instance in that ring")
