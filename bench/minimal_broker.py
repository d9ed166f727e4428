"""The floor a framework user starts from: a broker on openbrokerapi that keeps its state in a dict.

It answers the same lifecycle as ours (async provision/deprovision reported done at once, sync bind and
unbind) and does no durable work. Served by the same gunicorn settings as ours, for a fair comparison:
``gunicorn 'bench.minimal_broker:create_app()'``.
"""

from __future__ import annotations

import logging
import uuid

from flask import Flask
from openbrokerapi import api, errors
from openbrokerapi.catalog import ServicePlan
from openbrokerapi.service_broker import (
    BindDetails,
    Binding,
    DeprovisionDetails,
    DeprovisionServiceSpec,
    GetInstanceDetailsSpec,
    LastOperation,
    OperationState,
    ProvisionDetails,
    ProvisionedServiceSpec,
    ProvisionState,
    Service,
    ServiceBroker,
    UnbindDetails,
    UnbindSpec,
)

SERVICE_ID = "6f1d2c3b-8a4e-4d7f-9b2a-1c3e5f7a9b0d"
PLAN_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


class DictBroker(ServiceBroker):
    def __init__(self) -> None:
        self.instances: dict[str, dict] = {}
        self.bindings: dict[tuple[str, str], dict] = {}

    def catalog(self) -> Service:
        return Service(id=SERVICE_ID, name="powervs-dr", description="minimal", bindable=True,
                       instances_retrievable=True, bindings_retrievable=True,
                       plans=[ServicePlan(id=PLAN_ID, name="grs-async", description="minimal")])

    def provision(self, instance_id: str, details: ProvisionDetails, async_allowed: bool,
                  **kw) -> ProvisionedServiceSpec:
        self.instances[instance_id] = {"plan_id": details.plan_id, "parameters": details.parameters}
        return ProvisionedServiceSpec(state=ProvisionState.IS_ASYNC, operation=str(uuid.uuid4()))

    def get_instance(self, instance_id: str, **kw) -> GetInstanceDetailsSpec:
        inst = self.instances.get(instance_id)
        if inst is None:
            raise errors.ErrInstanceDoesNotExist()
        return GetInstanceDetailsSpec(service_id=SERVICE_ID, plan_id=inst["plan_id"], parameters=inst["parameters"])

    def last_operation(self, instance_id: str, operation_data: str | None, **kw) -> LastOperation:
        return LastOperation(OperationState.SUCCEEDED, "done")

    def bind(self, instance_id: str, binding_id: str, details: BindDetails, async_allowed: bool, **kw) -> Binding:
        self.bindings[(instance_id, binding_id)] = {"credentials": {"key": str(uuid.uuid4())}}
        return Binding(credentials=self.bindings[(instance_id, binding_id)]["credentials"])

    def unbind(self, instance_id: str, binding_id: str, details: UnbindDetails, async_allowed: bool,
               **kw) -> UnbindSpec:
        self.bindings.pop((instance_id, binding_id), None)
        return UnbindSpec(is_async=False)

    def deprovision(self, instance_id: str, details: DeprovisionDetails, async_allowed: bool,
                    **kw) -> DeprovisionServiceSpec:
        self.instances.pop(instance_id, None)
        return DeprovisionServiceSpec(is_async=True, operation=str(uuid.uuid4()))


def create_app() -> Flask:
    from openbrokerapi.auth import BrokerCredentials

    app = Flask(__name__)
    logger = logging.getLogger("minimal-broker")
    logger.setLevel(logging.WARNING)
    app.register_blueprint(api.get_blueprint(DictBroker(), BrokerCredentials("bench", "bench"), logger))
    return app
