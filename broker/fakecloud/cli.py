"""``drbroker fake-ibmcloud``: run the fake IBM Cloud in the foreground."""

from __future__ import annotations

import click


@click.command("fake-ibmcloud")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=int)
@click.option("--step-seconds", default=1.0, show_default=True, type=float,
              help="seconds per step of the fake's asynchronous progressions (volume groups, onboarding, "
                   "clones, orchestrator deployment)")
@click.option("--token-ttl", default=3600, show_default=True, type=int, help="lifetime of the IAM tokens it issues")
def fake_ibmcloud(host: str, port: int, step_seconds: float, token_ttl: int) -> None:
    """Serve a FAKE IBM Cloud (IAM, PowerVS, Key Protect, IAM identity/policy, resource controller, global
    catalog, DR Automation, usage metering) for tests and demos. Point the broker at it with
    DRBROKER_ORCHESTRATOR=ibmcloud DRBROKER_IBMCLOUD_BASE_URL=http://HOST:PORT."""
    from broker.fakecloud.server import FakeCloudServer
    from broker.fakecloud.state import DEMO_KMS_INSTANCE_ID

    server = FakeCloudServer(host, port, step_seconds=step_seconds, token_ttl=token_ttl)
    click.echo(f"fake IBM Cloud (NOT IBM Cloud: an in-memory imitation for tests and demos) on {server.url}\n"
               f"  DRBROKER_ORCHESTRATOR=ibmcloud DRBROKER_IBMCLOUD_BASE_URL={server.url} "
               f"DRBROKER_IBMCLOUD_APIKEY=any-key DRBROKER_IBMCLOUD_KMS_INSTANCE_ID={DEMO_KMS_INSTANCE_ID}\n"
               f"  faults: POST {server.url}/_fake/faults   state: GET {server.url}/_fake/state", err=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        pass
