"""Helpers for tests of the ibmcloud backend against the fake IBM Cloud (a real HTTP server on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

from broker.fakecloud.server import FakeCloudServer
from broker.fakecloud.state import DEMO_KMS_INSTANCE_ID

FAST_STEP = 0.05


def ibmcloud_env(url: str, **extra: str) -> dict[str, str]:
    """The broker's ibmcloud settings pointing every service at the fake through the base URL only."""
    env = {"DRBROKER_IBMCLOUD_BASE_URL": url, "DRBROKER_IBMCLOUD_APIKEY": "test-broker-apikey",
           "DRBROKER_IBMCLOUD_KMS_INSTANCE_ID": DEMO_KMS_INSTANCE_ID, "DRBROKER_IBMCLOUD_POLL_SECONDS": "0.05",
           "DRBROKER_IBMCLOUD_WAIT_SECONDS": "20"}
    env.update(extra)
    return env


@contextmanager
def fake_cloud(step_seconds: float = FAST_STEP, token_ttl: int = 3600) -> Iterator[FakeCloudServer]:
    server = FakeCloudServer(step_seconds=step_seconds, token_ttl=token_ttl).start()
    try:
        yield server
    finally:
        server.stop()


class FakeAdmin:
    """The fake's /_fake admin API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def fault(self, **rule: Any) -> dict[str, Any]:
        r = requests.post(f"{self.url}/_fake/faults", json=rule, timeout=10)
        assert r.status_code == 201, r.text
        return r.json()

    def faults(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.url}/_fake/faults", timeout=10).json()["faults"]

    def clear(self) -> None:
        requests.delete(f"{self.url}/_fake/faults", timeout=10)

    def state(self) -> dict[str, Any]:
        return requests.get(f"{self.url}/_fake/state", timeout=10).json()

    def requests(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.url}/_fake/requests", timeout=10).json()["requests"]

    def usage(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.url}/_fake/usage", timeout=10).json()["usage"]
