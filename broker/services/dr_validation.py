"""DR rules beyond the JSON schema: sites that form a GRS pair in one account, volumes the backend can
protect, the plan's required sections, proxies, and the per-account instance limit.

Each failure is an ``InvalidParameters`` (400) whose description names the fields involved.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.domain.catalog import Plan
from broker.domain.errors import InvalidParameters
from broker.domain.protocols import Orchestrator
from broker.domain.sites import is_grs_pair, parse_workspace_crn, partner_zones

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


def validate_dr_parameters(plan: Plan, params: Mapping[str, Any], orchestrator: Orchestrator,
                           instance_id: str | None = None) -> str | None:
    """Run every rule; return the primary site's account (for the instance limit)."""
    sites = check_sites(params)
    check_plan_sections(plan, params)
    check_volumes(orchestrator, params, instance_id)
    return sites[0] if sites else None
