"""Binding rotation on the ibmcloud backend, through the real app and worker against the fake IBM Cloud (a real
HTTP server on loopback, held to IBM's definitions by its contract check)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from broker.app import build_runtime, create_app
from broker.orchestrators.ibmcloud.naming import Names
from tests.conftest import make_settings
from tests.ibmfake import fake_cloud, ibmcloud_env
from tests.rotation.conftest import bind, rotate
from tests.services.conftest import DR


@pytest.fixture
def ibm(tmp_path: Path) -> Iterator[DR]:
    with fake_cloud() as fake:
        rt = build_runtime(make_settings(tmp_path, orchestrator="ibmcloud", ibmcloud_env=ibmcloud_env(fake.url)))
        rt.worker.start()
        d = DR(create_app(runtime=rt).test_client(), rt)
        d.fake = fake  # type: ignore[attr-defined]
        yield d
        rt.worker.stop(10)


def _iam(fake, iid: str) -> tuple[list[str], list[str], list[str]]:
    """The fake IAM's service IDs, API key names and policy descriptions of the instance."""
    tag = Names(iid).tag + "-"
    state = fake.state
    return (sorted(s["name"] for s in state.service_ids.values() if s["name"].startswith(tag)),
            sorted(k["name"] for k in state.api_keys.values() if str(k.get("name", "")).startswith(tag)),
            sorted(p["description"] for p in state.policies.values() if p["description"].startswith(tag)))


def test_ibm_rotation_keeps_the_service_id_and_policies_and_adds_a_key(ibm: DR) -> None:
    fake = ibm.fake  # type: ignore[attr-defined]
    iid, plan = "irot-byok", "ksys-managed-byok"
    names = Names(iid)
    ibm.ready_plan(iid, plan)
    first = bind(ibm, iid, "b1", plan)
    assert first.status_code == 201, first.get_data(as_text=True)
    sids, keys, policies = _iam(fake, iid)
    assert sids == [names.binding("b1")] and keys == [names.binding_key("b1")] and len(policies) == 3

    r = rotate(ibm, iid, "b2", "b1")
    assert r.status_code == 201, r.get_data(as_text=True)
    old, new = first.json["credentials"], r.json["credentials"]
    assert new["iam"]["serviceid_crn"] == old["iam"]["serviceid_crn"] and new["iam"]["apikey"] != old["iam"]["apikey"]
    assert new["kms"]["wrapped_dek"] != old["kms"]["wrapped_dek"] and new["kms"]["aad"] == [iid, "b2"]
    kp = ibm.runtime.orchestrator.kp
    key_id = new["kms"]["root_key_crn"].rsplit(":", 1)[-1]
    assert kp.unwrap(key_id, new["kms"]["wrapped_dek"], [iid, "b2"])["plaintext"]
    assert r.json["metadata"]["expires_at"] and r.json["metadata"]["renew_before"]
    assert _iam(fake, iid) == (sids, sorted([names.binding_key("b1"), names.binding_key("b2")]), policies)

    assert ibm.unbind(iid, "b1", ibm.pid(plan)).status_code == 200
    assert _iam(fake, iid) == (sids, [names.binding_key("b2")], policies)  # only the predecessor's key went
    assert ibm.unbind(iid, "b2", ibm.pid(plan)).status_code == 200
    assert _iam(fake, iid) == ([], [], [])
    contract = requests.get(f"{fake.url}/_fake/contract", timeout=30).json()
    assert contract["exchanges_checked"] > 0 and contract["violations"] == [], contract["violations"]
