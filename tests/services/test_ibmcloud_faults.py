"""The ibmcloud backend under IBM Cloud's failure modes, through the real app, engine and worker, with the
fake IBM Cloud injecting them over HTTP: transient ones are retried to success (honouring Retry-After),
permanent ones fail the operation and run the compensations of the steps that completed."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.app import build_runtime, create_app
from tests.conftest import SERVICE_ID, make_settings
from tests.ibmfake import FakeAdmin, fake_cloud, ibmcloud_env
from tests.services.conftest import DR, QUICK_RETRY


class IbmDR(DR):
    def __init__(self, client, runtime, admin: FakeAdmin) -> None:
        super().__init__(client, runtime)
        self.fake = admin

    def step(self, op_id: str, name: str):
        with self.runtime.store.read() as tx:
            return next(s for s in tx.steps(op_id) if s.name == name)

    def last_op(self, iid: str):
        with self.runtime.store.read() as tx:
            return tx.latest_instance_operation(iid)


@pytest.fixture
def ibm(tmp_path: Path) -> Iterator[IbmDR]:
    with fake_cloud() as fake:
        rt = build_runtime(make_settings(tmp_path, orchestrator="ibmcloud", ibmcloud_env=ibmcloud_env(fake.url)))
        rt.worker.start()
        try:
            yield IbmDR(create_app(runtime=rt).test_client(), rt, FakeAdmin(fake.url))
        finally:
            rt.worker.stop(10)
            rt.store.engine.dispose()


def _accepted(ibm: IbmDR, iid: str, plan: str = "grs-async") -> str:
    r = ibm.provision_plan(iid, plan)
    assert r.status_code == 202, r.get_data(as_text=True)
    return r.json["operation"]


def test_throttling_is_retried_after_retry_after(ibm: IbmDR) -> None:
    op_id = _accepted(ibm, "f-429")
    ibm.fake.fault(service="powervs", method="POST", path=r"/volume-groups$", status=429, retry_after=0.4, count=2)
    result = ibm.wait("f-429", timeout=60)
    assert result["state"] == "succeeded", result
    step = ibm.step(op_id, "create_replication_group")
    assert step.attempts >= 3, step
    posts = [r for r in ibm.fake.requests() if r["method"] == "POST" and r["path"].endswith("/volume-groups")]
    assert [r["status"] for r in posts] == [429, 429, 202]
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(posts)]
    assert all(gap >= 0.4 for gap in gaps), gaps  # Retry-After honoured


def test_a_burst_of_5xx_is_retried(ibm: IbmDR) -> None:
    ibm.runtime.engine.retry = QUICK_RETRY
    op_id = _accepted(ibm, "f-5xx")
    ibm.fake.fault(service="powervs", method="GET", path=r"/volumes/vol-app-data-1$", status=503, count=3)
    ibm.fake.fault(service="powervs", method="POST", path=r"/volumes/onboarding$", status=502, count=2)
    result = ibm.wait("f-5xx", timeout=60)
    assert result["state"] == "succeeded", result
    assert all(f["count"] == 0 for f in ibm.fake.faults())
    assert ibm.step(op_id, "onboard_auxiliary_volumes").attempts >= 3


def test_an_expired_iam_token_is_refreshed(ibm: IbmDR) -> None:
    ibm.ready_plan("f-token", "grs-async")
    ibm.fake.fault(expire_tokens=True)
    r = ibm.put("/v2/service_instances/f-token/service_bindings/b1",
                {"service_id": SERVICE_ID, "plan_id": ibm.pid("grs-async")})
    assert r.status_code == 201, r.get_data(as_text=True)
    log = ibm.fake.requests()
    first_401 = next(i for i, r in enumerate(log) if r["status"] == 401)
    assert log[first_401 + 1]["path"] == "/identity/token" and log[first_401 + 1]["status"] == 200
    assert log[first_401 + 2]["path"] == log[first_401]["path"] and log[first_401 + 2]["status"] < 400


def test_a_key_protect_409_fails_the_bind_and_compensates(ibm: IbmDR) -> None:
    ibm.ready_plan("f-kp", "ksys-managed-byok")
    ibm.fake.fault(service="kms", method="POST", path=r"/actions/wrap$", status=409, count=1)
    r = ibm.put("/v2/service_instances/f-kp/service_bindings/b1?accepts_incomplete=true",
                {"service_id": SERVICE_ID, "plan_id": ibm.pid("ksys-managed-byok")})
    assert r.status_code == 202, r.get_data(as_text=True)
    result = ibm.wait_binding("f-kp", "b1", timeout=60)
    assert result["state"] == "failed", result
    assert "409" in result["description"] and "wrapping a data key" in result["description"]
    assert "cleaned up: revoke_key_access, revoke_access, delete_service_id" in result["description"], result
    state = ibm.fake.state()
    assert state["service_ids"] == [] and state["policies"] == []  # nothing of the failed binding is left


def test_a_failed_powervs_onboarding_job_fails_the_provision_and_cleans_up(ibm: IbmDR) -> None:
    ibm.fake.fault(fail_next="onboarding")
    _accepted(ibm, "f-job")
    result = ibm.wait("f-job", timeout=60)
    assert result["state"] == "failed", result
    assert "onboarding" in result["description"] and "injected failure" in result["description"]
    for compensation in ("delete_replication_group", "disable_replication", "delete_dr_policy"):
        assert compensation in result["description"], result
    state = ibm.fake.state()
    assert state["volume_groups"] == []
    assert not [v for v in state["volumes"] if v["replicationEnabled"]], state["volumes"]


def test_a_failed_clone_job_fails_the_rehearsal_and_leaves_the_instance_usable(ibm: IbmDR) -> None:
    ibm.ready_plan("f-clone", "ksys-managed")
    ibm.fake.fault(fail_next="clone")
    assert ibm.action("f-clone", "test_failover").status_code == 202
    result = ibm.wait("f-clone", timeout=60)
    assert result["state"] == "failed" and result["instance_usable"] is True, result
    assert "clone task" in result["description"] and "cleanup_rehearsal" in result["description"]
    assert ibm.attributes("f-clone")["test_failover_active"] is False
    # and the next rehearsal works
    assert ibm.action("f-clone", "test_failover").status_code == 202
    assert ibm.wait("f-clone", timeout=60)["state"] == "succeeded"


def test_a_failed_orchestrator_deployment_removes_it(ibm: IbmDR) -> None:
    ibm.fake.fault(fail_next="dra_deploy")
    _accepted(ibm, "f-dra", "ksys-managed")
    result = ibm.wait("f-dra", timeout=60)
    assert result["state"] == "failed", result
    assert "orchestrator deployment failed" in result["description"]
    assert "remove_orchestrator" in result["description"]
    state = ibm.fake.state()
    # deleted: IBM's resource controller keeps it in reclamation (pending_reclamation) until it is reclaimed
    assert [r["state"] for r in state["resource_instances"]] == ["pending_reclamation"]
    assert state["volume_groups"] == []


def test_transaction_ids_are_recorded_in_the_step_outputs(ibm: IbmDR) -> None:
    op_id = _accepted(ibm, "f-txn")
    assert ibm.wait("f-txn", timeout=60)["state"] == "succeeded"
    recorded = ibm.step(op_id, "create_replication_group").outputs["ibm_transaction_ids"]
    assert recorded and all(c["transaction_id"].startswith("fake-") for c in recorded)
    served = {r["transaction_id"]: r for r in ibm.fake.requests()}
    assert all(c["transaction_id"] in served for c in recorded)
    assert any(served[c["transaction_id"]]["method"] == "POST" for c in recorded)


def test_permanent_4xx_is_not_retried(ibm: IbmDR) -> None:
    op_id = _accepted(ibm, "f-400")
    ibm.fake.fault(service="powervs", method="POST", path=r"/volume-groups$", status=400, count=5)
    started = time.monotonic()
    result = ibm.wait("f-400", timeout=60)
    assert result["state"] == "failed", result
    assert ibm.step(op_id, "create_replication_group").attempts == 1
    assert time.monotonic() - started < 30
    assert "disable_replication" in result["description"]
