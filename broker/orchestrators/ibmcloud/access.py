"""IAM steps: a binding's service ID, its API key and access policies, the credentials it gets, revocation.

A binding is an IAM identity of its own (or one the caller brings) with an access policy on each of the
instance's two workspaces (roles from the bind parameters ``purpose`` and ``role``, ``broker.domain.access``),
and with ``purpose: kms-dek`` Reader on the instance's root key; its credentials describe the replication, the
orchestrator (``orchestrator`` and ``kms-dek``), the wrapped data key (``kms-dek``) and the grants. Every policy
of a binding is described ``<binding name>-<grant>``: unbinding removes them by that prefix, deprovisioning
removes every binding's IAM objects by the instance's. A rotation's successor (OSB 2.17) uses its chain's first
binding's service ID and policies with an API key of its own; unbinding removes the shared ones only when no
other binding's key is left on the service ID.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.domain.access import key_grant, purpose, workspace_grants
from broker.domain.errors import PermanentBackendError
from broker.domain.protocols import StepContext
from broker.orchestrators.ibmcloud.common import IbmSteps
from broker.orchestrators.ibmcloud.naming import Names


class AccessSteps(IbmSteps):
    """The IAM actions of binding, unbinding and deprovisioning."""

    def create_service_id(self, ctx: StepContext) -> Mapping[str, Any]:
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

    @staticmethod
    def _owner(ctx: StepContext) -> str:
        """The binding whose service ID and policies this binding uses: the first of its rotation chain."""
        return ctx.identity_binding_id or ctx.binding_id or ""

    def reuse_service_id(self, ctx: StepContext) -> Mapping[str, Any]:
        """A rotation's successor: the service ID of its chain's first binding, whose access policies stay."""
        sid = self.iam.find_service_id(self._account(ctx), Names(ctx.instance_id).binding(self._owner(ctx)))
        if sid is None:
            raise PermanentBackendError(f"the service ID of binding {self._owner(ctx)} is gone; bind anew "
                                        "instead of rotating")
        return {"serviceid_crn": sid.get("crn"), "serviceid_id": sid.get("id"), "iam_id": sid.get("iam_id"),
                "serviceid_created": True}

    def _others(self, ctx: StepContext, account: str, sid: Mapping[str, Any]) -> list[str]:
        """The names of API keys other bindings of this instance hold on the service ID (a rotation's predecessor
        or successor; named ``<instance tag>-<binding>-key``): while one is left, the service ID and its policies
        stay. Keys someone else made on the service ID do not count."""
        names = Names(ctx.instance_id)
        own = names.binding_key(ctx.binding_id or "")
        return sorted(name for k in self.iam.api_keys(account, sid["iam_id"])
                      if (name := str(k.get("name") or "")) != own and name.startswith(names.tag + "-")
                      and name.endswith("-key"))

    def delete_service_id(self, ctx: StepContext) -> Mapping[str, Any]:
        if not ctx.parameters.get("primary_workspace_crn"):
            return {}
        account = self._account(ctx)
        sid = self.iam.find_service_id(account, Names(ctx.instance_id).binding(self._owner(ctx)))
        if sid is not None:
            others = self._others(ctx, account, sid)
            if others:
                return {"service_id_kept_for": others}
            self.iam.delete_service_id(sid["id"])
        return {}

    @staticmethod
    def _iam_id(ctx: StepContext) -> str:
        return str(ctx.outputs.get("iam_id") or "iam-" + str(ctx.outputs.get("serviceid_crn", "")).rsplit(":", 1)[-1])

    def grant_workspace_access(self, ctx: StepContext) -> Mapping[str, Any]:
        """An access policy per workspace for the binding's identity (found again by its description when an
        earlier attempt made it)."""
        names = Names(ctx.instance_id)
        bid = ctx.binding_id or ""
        account = self._account(ctx)
        existing = {p.get("description"): p for p in
                    self.iam.policies_with_prefix(account, names.binding_policy_prefix(bid))}
        ids = []
        for grant in workspace_grants(ctx.binding_parameters, *self._sites(ctx)):
            description = names.binding_policy(bid, grant.name)
            policy = existing.get(description) or self.iam.create_access_policy(
                account, self._iam_id(ctx), dict(grant.resource), list(grant.roles), description)
            ids.append(policy.get("id"))
        return {"workspace_policy_ids": ids}

    def grant_key_access(self, ctx: StepContext) -> Mapping[str, Any]:
        names = Names(ctx.instance_id)
        key = self.kp.find_key(names.root_key)
        if key is None:
            raise PermanentBackendError("the instance has no root key")
        account = self._account(ctx)
        grant = key_grant(str(self.kp.instance_id), key["id"])
        description = names.binding_policy(ctx.binding_id or "", grant.name)
        existing = self.iam.policies_described(account, description)
        if existing:
            return {"key_policy_id": existing[0]["id"]}
        policy = self.iam.create_access_policy(account, self._iam_id(ctx), dict(grant.resource), list(grant.roles),
                                               description)
        return {"key_policy_id": policy.get("id")}

    def _revoke(self, ctx: StepContext, description: str | None) -> Mapping[str, Any]:
        if not ctx.parameters.get("primary_workspace_crn"):
            return {}
        names = Names(ctx.instance_id)
        account = self._account(ctx)
        if description is None:
            sid = self.iam.find_service_id(account, names.binding(self._owner(ctx)))
            others = self._others(ctx, account, sid) if sid is not None else []
            if others:  # a binding of the same rotation chain still uses these grants
                return {"revoked_policies": [], "access_kept_for": others}
        policies = (self.iam.policies_described(account, description) if description else
                    self.iam.policies_with_prefix(account, names.binding_policy_prefix(self._owner(ctx))))
        removed = []
        for policy in policies:
            self.iam.delete_policy(policy["id"])
            removed.append(policy["id"])
        return {"revoked_policies": removed}

    def revoke_key_access(self, ctx: StepContext) -> Mapping[str, Any]:
        return self._revoke(ctx, Names(ctx.instance_id).binding_policy(ctx.binding_id or ""))

    def revoke_access(self, ctx: StepContext) -> Mapping[str, Any]:
        """Every access policy of the binding (workspaces, root key)."""
        return self._revoke(ctx, None)

    def issue_credentials(self, ctx: StepContext) -> Mapping[str, Any]:
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
        wants = purpose(ctx.binding_parameters)
        if ctx.plan.features.get("orchestrator") == "ksys" and wants in ("orchestrator", "kms-dek"):
            guid = self._dra_guid(ctx)
            last = (self.dra.last_operation(guid) or {}) if guid else {}
            # DR Automation answers every field of its status, "" where there is no value
            ip = last.get("primary_ip_address") or None
            credentials["orchestrator"] = {"dr_automation_instance_id": guid, "dr_automation_instance_crn":
                                           last.get("crn"), "endpoint": f"https://{ip}:3000" if ip else None,
                                           "primary_ip": ip, "standby_ip": last.get("standby_ip_address") or None,
                                           "dr_api": ep.url("dra")}
        grants = workspace_grants(ctx.binding_parameters, primary, secondary)
        if ctx.outputs.get("wrapped_dek") and wants == "kms-dek":
            grants.append(key_grant(str(self.kp.instance_id), str(ctx.outputs.get("root_key_id"))))
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
        credentials["access"] = {"purpose": wants, "role": ctx.binding_parameters.get("role", "Reader"),
                                 "grants": [g.public() for g in grants]}
        return {"credentials": credentials}

    def revoke_credentials(self, ctx: StepContext) -> Mapping[str, Any]:
        if not ctx.parameters.get("primary_workspace_crn"):
            return {}
        names = Names(ctx.instance_id)
        account = self._account(ctx)
        sid = self.iam.find_service_id(account, names.binding(self._owner(ctx)))
        if sid is None:
            return {}
        for key in self.iam.api_keys(account, sid["iam_id"]):
            if key.get("name") == names.binding_key(ctx.binding_id or ""):
                self.iam.delete_api_key(key["id"])
        return {}

    def revoke_all_bindings(self, ctx: StepContext) -> Mapping[str, Any]:
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
