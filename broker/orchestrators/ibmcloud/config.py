"""Configuration of the ibmcloud backend, from ``DRBROKER_IBMCLOUD_*`` and ``DRBROKER_METERING_*``.

- ``DRBROKER_IBMCLOUD_APIKEY``: the broker's own API key (a service ID's key); required.
- ``DRBROKER_IBMCLOUD_TRUSTED_PROFILE_ID``: assume this trusted profile (in the customer's account).
- ``DRBROKER_IBMCLOUD_REGION``: region of Key Protect and of usage records (``us-south``).
- ``DRBROKER_IBMCLOUD_BASE_URL``: send every API call to this base URL (the fake IBM Cloud).
- ``DRBROKER_IBMCLOUD_<SERVICE>_URL``: one service's endpoint; ``{region}`` is replaced.
- ``DRBROKER_IBMCLOUD_KMS_INSTANCE_ID``: Key Protect instance GUID for the key rings (``*-byok`` plans).
- ``DRBROKER_IBMCLOUD_RESOURCE_GROUP_ID``: resource group of DR Automation instances (else the
  ``context``'s, else ``default``).
- ``DRBROKER_IBMCLOUD_WAIT_SECONDS``: how long one waiting step polls before it is retried (1800).
- ``DRBROKER_IBMCLOUD_POLL_SECONDS``: interval between polls of an IBM state (10).
- ``DRBROKER_IBMCLOUD_APPROVAL_POLL_SECONDS``: while a deprovision waits for a second approver to delete a
  dual-authorisation root key, how often it looks whether the key is gone (900; keep it below the plan's
  ``maximum_polling_duration``).
- ``DRBROKER_IBMCLOUD_TIMEOUT_SECONDS``: HTTP timeout of one call (60).
- ``DRBROKER_IBMCLOUD_STATUS_CACHE_SECONDS``: how long an instance's replication status, as read from PowerVS
  for fetch instance, the dashboard and the RPO sampler, is reused (30; 0 = read it every time).
- ``DRBROKER_METERING_RESOURCE_ID``: this service's global catalog id; unset = no usage records.
- ``DRBROKER_METERING_INTERVAL_SECONDS``: how often the meter looks for finished hours (300).
- ``DRBROKER_METERING_HOUR_SECONDS``: the metered period (3600; shorter only for tests and demos).

``<SERVICE>`` is one of ``IAM``, ``POWERVS``, ``KMS``, ``IAM_IDENTITY``, ``IAM_POLICY``,
``RESOURCE_CONTROLLER``, ``GLOBAL_CATALOG``, ``DRA``, ``METERING``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from broker.config import env_float
from broker.orchestrators.ibmcloud.endpoints import SERVICES, Endpoints


@dataclass(frozen=True)
class IbmCloudConfig:
    apikey: str
    endpoints: Endpoints
    trusted_profile_id: str | None = None
    region: str = "us-south"
    kms_instance_id: str | None = None
    resource_group_id: str | None = None
    wait_seconds: float = 1800.0
    poll_seconds: float = 10.0
    approval_poll_seconds: float = 900.0
    timeout_seconds: float = 60.0
    status_cache_seconds: float = 30.0
    metering_resource_id: str | None = None
    metering_interval_seconds: float = 300.0
    metering_hour_seconds: int = 3600

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IbmCloudConfig:
        apikey = env.get("DRBROKER_IBMCLOUD_APIKEY") or ""
        if not apikey:
            raise SystemExit("DRBROKER_ORCHESTRATOR=ibmcloud needs DRBROKER_IBMCLOUD_APIKEY (the broker's own API "
                             "key; see README 'Running against IBM Cloud')")
        overrides = {svc: env[f"DRBROKER_IBMCLOUD_{svc.upper()}_URL"] for svc in SERVICES
                     if env.get(f"DRBROKER_IBMCLOUD_{svc.upper()}_URL")}
        return cls(
            apikey=apikey,
            endpoints=Endpoints(base_url=env.get("DRBROKER_IBMCLOUD_BASE_URL") or None, overrides=overrides),
            trusted_profile_id=env.get("DRBROKER_IBMCLOUD_TRUSTED_PROFILE_ID") or None,
            region=env.get("DRBROKER_IBMCLOUD_REGION") or "us-south",
            kms_instance_id=env.get("DRBROKER_IBMCLOUD_KMS_INSTANCE_ID") or None,
            resource_group_id=env.get("DRBROKER_IBMCLOUD_RESOURCE_GROUP_ID") or None,
            wait_seconds=env_float(env, "DRBROKER_IBMCLOUD_WAIT_SECONDS", 1800.0),
            poll_seconds=env_float(env, "DRBROKER_IBMCLOUD_POLL_SECONDS", 10.0),
            approval_poll_seconds=env_float(env, "DRBROKER_IBMCLOUD_APPROVAL_POLL_SECONDS", 900.0),
            timeout_seconds=env_float(env, "DRBROKER_IBMCLOUD_TIMEOUT_SECONDS", 60.0),
            status_cache_seconds=max(0.0, env_float(env, "DRBROKER_IBMCLOUD_STATUS_CACHE_SECONDS", 30.0)),
            metering_resource_id=env.get("DRBROKER_METERING_RESOURCE_ID") or None,
            metering_interval_seconds=env_float(env, "DRBROKER_METERING_INTERVAL_SECONDS", 300.0),
            metering_hour_seconds=int(env_float(env, "DRBROKER_METERING_HOUR_SECONDS", 3600)),
        )
