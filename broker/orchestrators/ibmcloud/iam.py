"""IAM identity (service IDs, API keys) and access policies through ibm-platform-services.

Every list reads all its pages: an account holds many more service IDs, keys and policies than the
broker's, and ours may be on any page. Policies page through the SDK's ``PoliciesPager`` (``limit`` and a
``start`` token from ``next.start``); the SDK has no pager for service IDs and API keys, so those follow
``next`` (a URL carrying ``pagetoken``) here. Each page is one call through the error boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

from ibm_cloud_sdk_core.authenticators import Authenticator
from ibm_platform_services import IamIdentityV1, IamPolicyManagementV1
from ibm_platform_services.iam_policy_management_v1 import PoliciesPager

from broker.orchestrators.ibmcloud.errors import call

PAGE_SIZE = 100  # the largest page IAM serves

READER = "crn:v1:bluemix:public:iam::::serviceRole:Reader"


class Iam:
    def __init__(self, authenticator: Authenticator, identity_url: str, policy_url: str,
                 timeout: float = 60.0) -> None:
        self.authenticator = authenticator
        self.identity = IamIdentityV1(authenticator=authenticator)
        self.identity.set_service_url(identity_url)
        self.identity.set_http_config({"timeout": timeout})
        self.policies = IamPolicyManagementV1(authenticator=authenticator)
        self.policies.set_service_url(policy_url)
        self.policies.set_http_config({"timeout": timeout})

    def _call(self, what: str, fn: Any, allow: tuple[int, ...] = ()) -> Any:
        resp = call(f"IAM {what}", fn, allow=allow, authenticator=self.authenticator)
        return None if resp is None else resp.get_result()

    def _pages(self, what: str, key: str, fetch: Callable[[str | None], Any]) -> Iterator[dict[str, Any]]:
        """Every item of an IAM identity list, page after page (``next`` is the next page's URL)."""
        token: str | None = None
        while True:
            result = self._call(what, lambda t=token: fetch(t)) or {}
            yield from result.get(key) or []
            nxt = result.get("next")
            token = (parse_qs(urlparse(str(nxt)).query).get("pagetoken") or [None])[0] if nxt else None
            if not token:
                return

    # service IDs ------------------------------------------------------------------------------------
    def _service_ids(self, account_id: str, name: str | None = None) -> Iterator[dict[str, Any]]:
        return self._pages("GET /v1/serviceids", "serviceids", lambda token: self.identity.list_service_ids(
            account_id=account_id, name=name, pagesize=PAGE_SIZE, pagetoken=token))

    def find_service_id(self, account_id: str, name: str) -> dict[str, Any] | None:
        return next((s for s in self._service_ids(account_id, name) if s.get("name") == name), None)

    def service_ids_with_prefix(self, account_id: str, prefix: str) -> list[dict[str, Any]]:
        return [s for s in self._service_ids(account_id) if str(s.get("name", "")).startswith(prefix)]

    def create_service_id(self, account_id: str, name: str, instance_crn: str | None) -> dict[str, Any]:
        return self._call("POST /v1/serviceids", lambda: self.identity.create_service_id(
            account_id, name, description="powervs-dr-broker binding",
            unique_instance_crns=[instance_crn] if instance_crn else None))

    def delete_service_id(self, service_id: str) -> None:
        self._call(f"DELETE /v1/serviceids/{service_id}", lambda: self.identity.delete_service_id(service_id),
                   allow=(404,))

    # API keys ---------------------------------------------------------------------------------------
    def api_keys(self, account_id: str, iam_id: str) -> list[dict[str, Any]]:
        return list(self._pages("GET /v1/apikeys", "apikeys", lambda token: self.identity.list_api_keys(
            account_id=account_id, iam_id=iam_id, pagesize=PAGE_SIZE, pagetoken=token)))

    def create_api_key(self, account_id: str, iam_id: str, name: str) -> dict[str, Any]:
        return self._call("POST /v1/apikeys", lambda: self.identity.create_api_key(
            name, iam_id, account_id=account_id, description="powervs-dr-broker binding", store_value=False))

    def delete_api_key(self, key_id: str) -> None:
        self._call(f"DELETE /v1/apikeys/{key_id}", lambda: self.identity.delete_api_key(key_id), allow=(404,))

    # policies ---------------------------------------------------------------------------------------
    def _access_policies(self, account_id: str) -> list[dict[str, Any]]:
        pager = PoliciesPager(client=_Through(self.policies, "IAM GET /v1/policies", self.authenticator),
                              account_id=account_id, type="access", limit=PAGE_SIZE)
        return list(pager.get_all())

    def policies_described(self, account_id: str, description: str) -> list[dict[str, Any]]:
        return [p for p in self._access_policies(account_id) if p.get("description") == description]

    def policies_with_prefix(self, account_id: str, prefix: str) -> list[dict[str, Any]]:
        return [p for p in self._access_policies(account_id) if str(p.get("description") or "").startswith(prefix)]

    def create_key_reader_policy(self, account_id: str, iam_id: str, kms_instance: str, key_id: str,
                                 description: str, role: str = READER) -> dict[str, Any]:
        subjects = [{"attributes": [{"name": "iam_id", "value": iam_id}]}]
        roles = [{"role_id": role}]
        resources = [{"attributes": [
            {"name": "accountId", "value": account_id},
            {"name": "serviceName", "value": "kms"},
            {"name": "serviceInstance", "value": kms_instance},
            {"name": "resourceType", "value": "key"},
            {"name": "resource", "value": key_id},
        ]}]
        return self._call("POST /v1/policies", lambda: self.policies.create_policy(
            "access", subjects, roles, resources, description=description))

    def create_access_policy(self, account_id: str, iam_id: str, resource: dict[str, str], roles: list[str],
                             description: str) -> dict[str, Any]:
        """An access policy for one identity on one resource: ``resource`` holds the IAM resource attributes
        (``serviceName``, ``serviceInstance``, ...; ``accountId`` is added), ``roles`` the role CRNs."""
        subjects = [{"attributes": [{"name": "iam_id", "value": iam_id}]}]
        attributes = [{"name": "accountId", "value": account_id}]
        attributes += [{"name": k, "value": v} for k, v in resource.items()]
        return self._call("POST /v1/policies", lambda: self.policies.create_policy(
            "access", subjects, [{"role_id": r} for r in roles], [{"attributes": attributes}],
            description=description))

    def delete_policy(self, policy_id: str) -> None:
        self._call(f"DELETE /v1/policies/{policy_id}", lambda: self.policies.delete_policy(policy_id),
                   allow=(404,))


class _Through:
    """An SDK service whose calls go through the error boundary, for the SDK's pagers (which call the
    service's list method themselves)."""

    def __init__(self, service: Any, what: str, authenticator: Authenticator) -> None:
        self._service = service
        self._what = what
        self._authenticator = authenticator

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._service, name)

        def through(*args: Any, **kwargs: Any) -> Any:
            return call(self._what, lambda: method(*args, **kwargs), authenticator=self._authenticator)
        return through
