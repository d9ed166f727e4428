"""Helpers for tests of the ibmcloud backend against the fake IBM Cloud (a real HTTP server on loopback)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

from broker.fakecloud.server import FakeCloudServer
from broker.fakecloud.state import DEMO_KMS_INSTANCE_ID

# The fake's clock step and the broker's poll of it. The poll stays well under the step, so the broker still
# sees every state a progression passes through (each lasts at least one step); what takes steps of IBM's
# clock (an orchestrator deployment: 35) costs 35 * FAST_STEP of a test's time.
FAST_STEP = 0.02
FAST_POLL = 0.01
# socketserver looks for a shutdown request every ``poll_interval`` (0.5 s by default), which every test's
# teardown waited out; the fake's server thread polls this often instead.
SHUTDOWN_POLL = 0.01


def ibmcloud_env(url: str, **extra: str) -> dict[str, str]:
    """The broker's ibmcloud settings pointing every service at the fake through the base URL only."""
    env = {"DRBROKER_IBMCLOUD_BASE_URL": url, "DRBROKER_IBMCLOUD_APIKEY": "test-broker-apikey",
           "DRBROKER_IBMCLOUD_KMS_INSTANCE_ID": DEMO_KMS_INSTANCE_ID,
           "DRBROKER_IBMCLOUD_POLL_SECONDS": f"{FAST_POLL:g}", "DRBROKER_IBMCLOUD_WAIT_SECONDS": "20"}
    env.update(extra)
    return env


def start_fake(step_seconds: float = FAST_STEP, token_ttl: int = 3600) -> FakeCloudServer:
    """A running fake that stops within ``SHUTDOWN_POLL`` seconds."""
    server = FakeCloudServer(step_seconds=step_seconds, token_ttl=token_ttl)
    wsgi = server._server
    wsgi.serve_forever = functools.partial(wsgi.serve_forever,  # type: ignore[method-assign]
                                           poll_interval=SHUTDOWN_POLL)
    return server.start()


@contextmanager
def fake_cloud(step_seconds: float = FAST_STEP, token_ttl: int = 3600) -> Iterator[FakeCloudServer]:
    server = start_fake(step_seconds, token_ttl)
    try:
        yield server
    finally:
        server.stop()


def create_root_key(url: str, apikey: str, name: str = "drbroker-kek") -> str:
    """A root key created in the fake's Key Protect through its REST API, as an operator would: its id."""
    token = requests.post(f"{url}/identity/token", timeout=10, data={
        "grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": apikey}).json()
    r = requests.post(f"{url}/api/v2/keys", timeout=10, json={
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": False}]},
        headers={"Authorization": f"Bearer {token['access_token']}", "Bluemix-Instance": DEMO_KMS_INSTANCE_ID,
                 "Content-Type": "application/vnd.ibm.kms.key+json"})
    assert r.status_code == 201, r.text
    # the request and its answer are Key Protect's own shapes (the fake checks both against IBM's definitions)
    assert requests.get(f"{url}/_fake/contract", timeout=10).json()["violations"] == []
    return r.json()["resources"][0]["id"]


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
