"""A small OSB 2.17 HTTP client: one method per endpoint, errors as ``ClientError`` with the broker's body."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_delay


class ClientError(Exception):
    """The broker refused (4xx/5xx) or could not be reached (``status`` None).

    ``error`` and ``description`` are the broker's OSB error body when it sent one."""

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.error: str | None = body.get("error") if isinstance(body, dict) else None
        detail = body.get("description") if isinstance(body, dict) else body
        self.description: str = str(detail) if detail else message


class NotInCatalog(ClientError):
    """A service or plan name (or id) the broker's catalog does not have: the user's mistake, not the broker's."""


@dataclass
class Response:
    status: int
    body: Any
    headers: Mapping[str, str]


class OSBClient:
    def __init__(self, url: str, *, user: str | None = None, password: str | None = None,
                 token: str | None = None, api_version: str = "2.17", timeout: float = 60.0,
                 verify: bool | str = True) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.verify = verify
        self.session.headers["X-Broker-API-Version"] = api_version
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        elif user is not None:
            self.session.auth = (user, password or "")
        self.timeout = timeout
        self._catalog: dict[str, Any] | None = None

    # transport ------------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None,
                ok: tuple[int, ...] = (200, 201, 202)) -> Response:
        headers = {"X-Broker-API-Request-Identity": str(uuid.uuid4())}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            resp = self.session.request(method, self.url + path, data=data, params=params, headers=headers,
                                        timeout=self.timeout)
        except requests.RequestException as exc:
            raise ClientError(f"cannot reach the broker at {self.url}: {exc}") from None
        try:
            parsed = resp.json() if resp.content else None
        except ValueError:
            parsed = resp.text
        if resp.status_code not in ok:
            detail = parsed.get("description") if isinstance(parsed, dict) else parsed
            code = parsed.get("error") if isinstance(parsed, dict) else None
            raise ClientError(f"{method} {path}: {resp.status_code}{f' {code}' if code else ''}: {detail}",
                              status=resp.status_code, body=parsed)
        return Response(resp.status_code, parsed, resp.headers)

    @staticmethod
    def _id(value: str) -> str:
        return quote(value, safe="")

    # catalog --------------------------------------------------------------------------------------
    def catalog(self) -> dict[str, Any]:
        if self._catalog is None:
            self._catalog = self.request("GET", "/v2/catalog").body
        return self._catalog

    def services(self) -> list[dict[str, Any]]:
        cat = self.catalog()
        services = cat.get("services") if isinstance(cat, dict) else None
        return [s for s in services if isinstance(s, dict)] if isinstance(services, list) else []

    def resolve(self, service: str | None, plan: str | None = None) -> tuple[str, str | None]:
        """Service and plan ids from names or ids; without a service, the one service offering ``plan``."""
        services = self.services()
        if service is None:
            if plan is None:
                raise NotInCatalog("a service or a plan is needed")
            offering = [s for s in services if any(plan in (p.get("id"), p.get("name")) for p in s.get("plans", []))]
            if len(offering) == 1:
                service = offering[0]["id"]
            elif offering:
                names = ", ".join(s["name"] for s in offering)
                raise NotInCatalog(f"plan {plan!r} is offered by several services ({names}): give --service")
            else:
                names = ", ".join(f"{s['name']}/{p['name']}" for s in services for p in s.get("plans", []))
                raise NotInCatalog(f"plan {plan!r} is not in the catalog ({names})")
        for svc in services:
            if service in (svc["id"], svc["name"]):
                if plan is None:
                    return svc["id"], None
                for p in svc.get("plans", []):
                    if plan in (p["id"], p["name"]):
                        return svc["id"], p["id"]
                names = ", ".join(p["name"] for p in svc.get("plans", []))
                raise NotInCatalog(f"plan {plan!r} is not a plan of {svc['name']} ({names})")
        names = ", ".join(s["name"] for s in services)
        raise NotInCatalog(f"service {service!r} is not in the catalog ({names})")

    def names(self, service_id: str | None, plan_id: str | None) -> tuple[str | None, str | None]:
        """The catalog names of a service and plan id (None where the catalog does not have them)."""
        for svc in self.services():
            if svc.get("id") == service_id:
                plan = next((p.get("name") for p in svc.get("plans", []) if p.get("id") == plan_id), None)
                return svc.get("name"), plan
        return None, None

    # instances ------------------------------------------------------------------------------------
    def provision(self, instance_id: str, service_id: str, plan_id: str, parameters: Mapping[str, Any],
                  *, context: Mapping[str, Any] | None = None, organization_guid: str | None = None,
                  space_guid: str | None = None) -> Response:
        body: dict[str, Any] = {"service_id": service_id, "plan_id": plan_id, "parameters": dict(parameters)}
        body["context"] = dict(context) if context else {"platform": "drbroker-client"}
        if organization_guid:
            body["organization_guid"] = organization_guid
        if space_guid:
            body["space_guid"] = space_guid
        return self.request("PUT", f"/v2/service_instances/{self._id(instance_id)}",
                            params={"accepts_incomplete": "true"}, body=body)

    def update(self, instance_id: str, service_id: str, *, plan_id: str | None = None,
               parameters: Mapping[str, Any] | None = None) -> Response:
        body: dict[str, Any] = {"service_id": service_id}
        if plan_id:
            body["plan_id"] = plan_id
        if parameters is not None:
            body["parameters"] = dict(parameters)
        return self.request("PATCH", f"/v2/service_instances/{self._id(instance_id)}",
                            params={"accepts_incomplete": "true"}, body=body)

    def deprovision(self, instance_id: str, service_id: str, plan_id: str) -> Response:
        return self.request("DELETE", f"/v2/service_instances/{self._id(instance_id)}",
                            params={"service_id": service_id, "plan_id": plan_id, "accepts_incomplete": "true"})

    def instance(self, instance_id: str) -> Response:
        return self.request("GET", f"/v2/service_instances/{self._id(instance_id)}", ok=(200,))

    def last_operation(self, instance_id: str, binding_id: str | None = None,
                       operation: str | None = None) -> Response:
        path = f"/v2/service_instances/{self._id(instance_id)}"
        if binding_id:
            path += f"/service_bindings/{self._id(binding_id)}"
        return self.request("GET", path + "/last_operation", params={"operation": operation} if operation else None,
                            ok=(200, 410))

    # bindings -------------------------------------------------------------------------------------
    def bind(self, instance_id: str, binding_id: str, service_id: str, plan_id: str,
             parameters: Mapping[str, Any] | None = None, bind_resource: Mapping[str, Any] | None = None,
             *, accepts_incomplete: bool = False) -> Response:
        body: dict[str, Any] = {"service_id": service_id, "plan_id": plan_id}
        if parameters:
            body["parameters"] = dict(parameters)
        if bind_resource:
            body["bind_resource"] = dict(bind_resource)
        params = {"accepts_incomplete": "true"} if accepts_incomplete else None
        return self.request("PUT", f"/v2/service_instances/{self._id(instance_id)}/service_bindings/"
                                   f"{self._id(binding_id)}", params=params, body=body)

    def unbind(self, instance_id: str, binding_id: str, service_id: str, plan_id: str) -> Response:
        return self.request("DELETE", f"/v2/service_instances/{self._id(instance_id)}/service_bindings/"
                                      f"{self._id(binding_id)}", params={"service_id": service_id, "plan_id": plan_id})

    # waiting --------------------------------------------------------------------------------------
    def wait(self, instance_id: str, *, operation: str | None = None, binding_id: str | None = None,
             timeout: float = 3600.0, on_progress: Callable[[dict[str, Any]], None] | None = None,
             sleep: Callable[[float], None] = time.sleep, max_interval: float = 30.0) -> dict[str, Any]:
        """Follow last_operation until it is no longer in progress, honouring Retry-After (polled with
        tenacity: each wait is the broker's Retry-After, at least 0.05 s, at most ``max_interval`` and never past
        ``timeout``; at the timeout a ``TimeoutError``)."""

        def poll() -> tuple[dict[str, Any], float]:
            resp = self.last_operation(instance_id, binding_id, operation)
            state = {"state": "succeeded", "description": "gone"} if resp.status == 410 else (resp.body or {})
            if on_progress:
                on_progress(state)
            try:
                delay = float(resp.headers.get("Retry-After", "2"))
            except ValueError:
                delay = 2.0
            return state, delay

        def wait(retry_state: RetryCallState) -> float:
            _, delay = retry_state.outcome.result() if retry_state.outcome else ({}, 2.0)
            left = timeout - (retry_state.seconds_since_start or 0.0)
            return max(0.05, min(delay, max_interval, left))

        def timed_out(retry_state: RetryCallState) -> None:
            state, _ = retry_state.outcome.result() if retry_state.outcome else ({}, 0.0)
            raise TimeoutError(f"still in progress after {timeout:g}s: {state.get('description', '')}")

        follow = Retrying(stop=stop_after_delay(timeout), wait=wait, sleep=sleep,
                          retry=retry_if_result(lambda answer: answer[0].get("state") == "in progress"),
                          retry_error_callback=timed_out)
        return follow(poll)[0]
