"""Key Protect held to IBM's definitions: the fake's answers carry only the ``keyprotect`` SDK models' fields,
the client's bodies only keyprotect-go-client's; dual-authorisation delete needs a second identity; lists
are paged; a lost answer to a create is recovered without a duplicate.

IBM's facts these tests pin (ibm-cloud-docs/key-protect, the SDK's docstrings):

- a pending dual-authorisation delete is ``dualAuthDelete: {enabled, keySetForDeletion, authExpiration}`` on
  the key (model ``DualAuthKeyMetadata``); the authorisation lasts seven days;
- ``DELETE /api/v2/keys/{id}`` of a dual-authorisation key that was not set for deletion, or by the same
  identity that set it, is ``409`` with reason ``AUTHORIZATIONS_NOT_MET`` (error-messages.md, "Number of
  authorizations required to delete is not met");
- ``GET /api/v2/keys`` answers 200 keys unless ``limit`` (at most 5000) says otherwise, from ``offset``;
  ``GET /api/v2/key_rings`` 100 rings (the default ring included) unless ``limit``, with ``totalCount`` in
  the metadata when ``totalCount=true``.
"""

from __future__ import annotations

import calendar
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from broker.app import build_runtime, create_app
from broker.fakecloud.state import DEMO_KMS_INSTANCE_ID
from broker.orchestrators.ibmcloud.naming import Names
from broker.orchestrators.simulated.seed import DEMO_ACCOUNT
from tests.conftest import make_settings
from tests.e2e.conftest import wait_until
from tests.ibmfake import FakeAdmin, fake_cloud, ibmcloud_env
from tests.services.conftest import DR, params_for

KEY = "application/vnd.ibm.kms.key+json"
PLAN = "ksys-managed-byok"


@pytest.fixture
def fake() -> Iterator[Any]:
    with fake_cloud() as server:
        yield server


# helpers: IBM's API over HTTP, as another program (or person) would call it ---------------------------
def token(url: str, apikey: str = "test-broker-apikey") -> str:
    r = requests.post(f"{url}/identity/token", data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey",
                                                     "apikey": apikey}, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def other_person(url: str, iam_id: str = "IBMid-2700SECOND") -> str:
    """A token of another identity: an API key of ``iam_id`` made in the fake's IAM, exchanged for a token."""
    r = requests.post(f"{url}/v1/apikeys", json={"name": "second-approver", "iam_id": iam_id,
                                                 "account_id": DEMO_ACCOUNT},
                      headers={"Authorization": f"Bearer {token(url)}"}, timeout=10)
    assert r.status_code == 201, r.text
    return token(url, r.json()["apikey"])


def kms(url: str, method: str, path: str, tok: str, body: Any = None, ctype: str = KEY,
        **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {tok}", "Bluemix-Instance": DEMO_KMS_INSTANCE_ID}
    if body is not None:
        headers["Content-Type"] = ctype
    return requests.request(method, f"{url}/api/v2{path}", json=body, headers=headers, params=params, timeout=30)


def create_key(url: str, tok: str, name: str, dual: bool = True) -> dict[str, Any]:
    body = {"metadata": {"collectionType": KEY, "collectionTotal": 1},
            "resources": [{"type": KEY, "name": name, "extractable": False, "dualAuthDelete": {"enabled": dual}}]}
    r = kms(url, "POST", "/keys_with_policy_overrides", tok, body)
    assert r.status_code == 201, r.text
    return dict(r.json()["resources"][0])


def get_key(url: str, tok: str, key_id: str) -> dict[str, Any]:
    r = kms(url, "GET", f"/keys/{key_id}", tok)
    assert r.status_code == 200, r.text
    return dict(r.json()["resources"][0])


def reason(r: requests.Response) -> tuple[int, str]:
    return r.status_code, r.json()["resources"][0]["reasons"][0]["code"]


def seed_keys(fake: Any, n: int, prefix: str = "00000000") -> None:
    """``n`` active root keys in the default ring whose ids sort before any uuid4 (Key Protect lists by id)."""
    S = fake.state
    with S.lock:
        for i in range(n):
            key = S.create_key(DEMO_KMS_INSTANCE_ID, "default", {"name": f"filler-{i}", "extractable": False})
            keys = S.kms[DEMO_KMS_INSTANCE_ID]["keys"]
            del keys[key["id"]]
            kid = f"{prefix}-0000-4000-8000-{i:012d}"
            key.update(id=kid, crn=key["crn"].rsplit(":", 1)[0] + f":{kid}")
            keys[kid] = key


def kms_violations(url: str) -> list[str]:
    summary = requests.get(f"{url}/_fake/contract", timeout=30).json()
    return [v["text"] for v in summary["violations"] if v["service"] == "kms"]


# the fake's own behaviour ----------------------------------------------------------------------------
def test_dual_auth_pending_state_is_the_keys_dualAuthDelete_object(fake: Any) -> None:
    tok = token(fake.url)
    key = create_key(fake.url, tok, "dual-1")
    assert key["dualAuthDelete"]["enabled"] is True and not key["dualAuthDelete"].get("keySetForDeletion")
    r = kms(fake.url, "POST", f"/keys/{key['id']}/actions/setKeyForDeletion", tok, {},
            "application/vnd.ibm.kms.key_action+json")
    assert r.status_code == 204, r.text
    seen = get_key(fake.url, tok, key["id"])
    dual = seen["dualAuthDelete"]
    assert "deletionAuthorized" not in seen
    assert dual["enabled"] is True and dual["keySetForDeletion"] is True
    expires = calendar.timegm(time.strptime(dual["authExpiration"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(expires - (time.time() + 7 * 86400)) < 120
    assert kms_violations(fake.url) == []


def test_dual_auth_delete_needs_a_second_identity(fake: Any) -> None:
    tok = token(fake.url)
    key = create_key(fake.url, tok, "dual-2")
    # not set for deletion: nobody may delete it
    assert reason(kms(fake.url, "DELETE", f"/keys/{key['id']}", tok)) == (409, "AUTHORIZATIONS_NOT_MET")
    r = kms(fake.url, "POST", f"/keys/{key['id']}/actions/setKeyForDeletion", tok, {},
            "application/vnd.ibm.kms.key_action+json")
    assert r.status_code == 204
    # the first approver's own DELETE is refused as IBM does
    assert reason(kms(fake.url, "DELETE", f"/keys/{key['id']}", tok)) == (409, "AUTHORIZATIONS_NOT_MET")
    assert get_key(fake.url, tok, key["id"])["state"] == 1
    second = other_person(fake.url)
    r = kms(fake.url, "DELETE", f"/keys/{key['id']}", second)
    assert r.status_code == 200, r.text
    gone = get_key(fake.url, tok, key["id"])
    assert gone["state"] == 5 and gone["deleted"] is True and gone["deletedBy"] == "IBMid-2700SECOND"
    assert kms_violations(fake.url) == []


def test_dual_auth_authorisation_expires(fake: Any) -> None:
    tok = token(fake.url)
    requests.post(f"{fake.url}/_fake/config", json={"kms_dual_auth_seconds": 0.2}, timeout=10)
    key = create_key(fake.url, tok, "dual-3")
    kms(fake.url, "POST", f"/keys/{key['id']}/actions/setKeyForDeletion", tok, {},
        "application/vnd.ibm.kms.key_action+json")
    time.sleep(0.3)
    assert not get_key(fake.url, tok, key["id"])["dualAuthDelete"].get("keySetForDeletion")
    assert reason(kms(fake.url, "DELETE", f"/keys/{key['id']}", other_person(fake.url))) == \
        (409, "AUTHORIZATIONS_NOT_MET")


def test_keys_are_listed_in_pages_of_200_sorted_by_id(fake: Any) -> None:
    seed_keys(fake, 450)
    tok = token(fake.url)
    r = kms(fake.url, "GET", "/keys", tok)
    assert r.status_code == 200
    page = r.json()
    assert len(page["resources"]) == 200 and page["metadata"]["collectionTotal"] == 200
    ids = [k["id"] for k in page["resources"]]
    assert ids == sorted(ids) and ids[0].endswith("000000000000")
    rest = kms(fake.url, "GET", "/keys", tok, limit=5000, offset=400).json()
    assert [k["name"] for k in rest["resources"]] == [f"filler-{i}" for i in range(400, 450)]
    assert reason(kms(fake.url, "GET", "/keys", tok, limit=5001))[0] == 400
    assert kms_violations(fake.url) == []


def test_key_rings_are_listed_in_pages_with_a_total_count(fake: Any) -> None:
    tok = token(fake.url)
    for i in range(30):
        assert kms(fake.url, "POST", f"/key_rings/ring-{i:02d}", tok).status_code == 201
    everything = kms(fake.url, "GET", "/key_rings", tok).json()
    assert len(everything["resources"]) == 31  # IBM's default page (100) holds every ring, 'default' too
    page = kms(fake.url, "GET", "/key_rings", tok, limit=10, offset=25, totalCount="true").json()
    assert page["metadata"] == {"collectionType": "application/vnd.ibm.kms.key_ring+json", "collectionTotal": 6,
                                "totalCount": 31}
    assert kms_violations(fake.url) == []


# the client, and the broker through its service layer ----------------------------------------------
def test_client_requests_and_fake_answers_keep_ibms_definitions(fake: Any) -> None:
    from ibm_cloud_sdk_core.authenticators import IAMAuthenticator

    from broker.orchestrators.ibmcloud.keyprotect import KeyProtect

    kp = KeyProtect(IAMAuthenticator("test-broker-apikey", url=fake.url), fake.url, DEMO_KMS_INSTANCE_ID)
    assert kp.create_key_ring("ring-c") is True and kp.create_key_ring("ring-c") is False
    assert kp.key_ring_exists("ring-c")
    key = kp.create_root_key("rk-c", "ring-c", rotation_months=3, dual_auth=True)
    wrapped = kp.wrap(key["id"], ["a", "b"])
    assert kp.unwrap(key["id"], wrapped["ciphertext"], ["a", "b"])["plaintext"]
    kp.rotate(key["id"])
    kp.set_rotation(key["id"], 4)
    kp.set_for_deletion(key["id"])
    assert kp.find_key("rk-c")["dualAuthDelete"]["keySetForDeletion"] is True
    assert kp.delete_key(key["id"]) is False  # the broker cannot be the second approver of its own request
    assert kms_violations(fake.url) == []


def _start(tmp_path: Path, url: str, **extra: str) -> DR:
    rt = build_runtime(make_settings(tmp_path, orchestrator="ibmcloud", ibmcloud_env=ibmcloud_env(url, **extra)))
    rt.worker.start()
    return DR(create_app(runtime=rt).test_client(), rt)


@pytest.fixture
def dr(tmp_path: Path, fake: Any) -> Iterator[DR]:
    d = _start(tmp_path, fake.url, DRBROKER_IBMCLOUD_APPROVAL_POLL_SECONDS="0.2")
    yield d
    d.runtime.worker.stop(10)


def _last(dr: DR, iid: str) -> Any:
    r = dr.get(f"/v2/service_instances/{iid}/last_operation")
    assert r.status_code == 200, r.get_data(as_text=True)
    return r


def _root_keys(fake: Any, iid: str) -> list[dict[str, Any]]:
    return [k for k in FakeAdmin(fake.url).state()["keys"] if k["name"] == Names(iid).root_key]


def test_deprovision_of_a_dual_auth_key_waits_for_a_second_approver(dr: DR, fake: Any) -> None:
    params = params_for(PLAN)
    params["encryption"] = {**params["encryption"], "dual_auth_delete": True}
    dr.ready_plan("c-dual", PLAN, params)
    (key,) = _root_keys(fake, "c-dual")
    r = dr.deprovision("c-dual", plan=dr.pid(PLAN))
    assert r.status_code == 202, r.get_data(as_text=True)
    waiting = wait_until(lambda: (lambda r: r if "second approver" in r.json["description"] else None)(
        _last(dr, "c-dual")), 20, "deprovision reports that a second approver is needed")
    text = waiting.json["description"]
    assert waiting.json["state"] == "in progress", text
    assert key["id"] in text and f"ibmcloud kp key delete {key['id']} -i {DEMO_KMS_INSTANCE_ID}" in text, text
    assert "Manager" in text and "before 20" in text, text
    assert int(waiting.headers["Retry-After"]) >= 1
    # it stays waiting (retried, not failed, not compensated) across several of its retries
    # (between two of them the step runs again and says so: look across the whole span, not at one moment)
    seen = []
    end = time.monotonic() + 0.8
    while time.monotonic() < end:
        seen.append(_last(dr, "c-dual").json)
        time.sleep(0.05)
    assert all(s["state"] == "in progress" for s in seen), seen
    wait_until(lambda: "second approver" in _last(dr, "c-dual").json["description"], 20, "still waiting")
    dual = get_key(fake.url, token(fake.url), key["id"])["dualAuthDelete"]
    assert dual["keySetForDeletion"] is True and dual["authExpiration"]
    # on its retries the broker tried its own DELETE (it may be the second approver of someone else's
    # authorisation), and Key Protect refused it: it is the first approver here
    assert any(x["method"] == "DELETE" and x["path"] == f"/api/v2/keys/{key['id']}" and x["status"] == 409
               for x in FakeAdmin(fake.url).requests())
    # a second person deletes the key with their own identity
    r = kms(fake.url, "DELETE", f"/keys/{key['id']}", other_person(fake.url))
    assert r.status_code == 200, r.text
    done = dr.wait("c-dual", timeout=20)
    assert done["state"] == "succeeded", done
    state = FakeAdmin(fake.url).state()
    assert [k["state"] for k in state["keys"] if k["id"] == key["id"]] == [5]
    assert state["key_rings"] == []
    assert kms_violations(fake.url) == []


def test_dual_auth_wait_sets_an_expired_authorisation_again(dr: DR, fake: Any) -> None:
    requests.post(f"{fake.url}/_fake/config", json={"kms_dual_auth_seconds": 0.3}, timeout=10)
    params = params_for(PLAN)
    params["encryption"] = {**params["encryption"], "dual_auth_delete": True}
    dr.ready_plan("c-exp", PLAN, params)
    (key,) = _root_keys(fake, "c-exp")
    dr.deprovision("c-exp", plan=dr.pid(PLAN))
    wait_until(lambda: "second approver" in _last(dr, "c-exp").json["description"], 20, "waiting for an approver")
    sets = lambda: [x for x in FakeAdmin(fake.url).requests()  # noqa: E731
                    if x["path"] == f"/api/v2/keys/{key['id']}/actions/setKeyForDeletion" and x["status"] == 204]
    wait_until(lambda: len(sets()) >= 2, 10, "the expired authorisation set again")
    r = kms(fake.url, "DELETE", f"/keys/{key['id']}", other_person(fake.url))
    if r.status_code == 409:  # it expired between the broker's retry and this DELETE: wait for the next one
        wait_until(lambda: get_key(fake.url, token(fake.url), key["id"])["dualAuthDelete"].get("keySetForDeletion"),
               5, "set again")
        r = kms(fake.url, "DELETE", f"/keys/{key['id']}", other_person(fake.url, "IBMid-2700THIRD"))
    assert r.status_code == 200, r.text
    assert dr.wait("c-exp", timeout=20)["state"] == "succeeded"


def test_the_broker_finds_its_key_on_a_later_page(dr: DR, fake: Any) -> None:
    seed_keys(fake, 5001)  # more than the largest page (5000), all listed before the broker's key
    dr.ready_plan("c-page", PLAN)
    (key,) = _root_keys(fake, "c-page")  # provisioning's retry-safe look-up found nothing, made exactly one
    lists = [x for x in FakeAdmin(fake.url).requests() if x["path"] == "/api/v2/keys" and x["method"] == "GET"]
    assert len(lists) >= 4  # create_root_key and verify each read both pages
    assert dr.deprovision("c-page", plan=dr.pid(PLAN)).status_code == 202
    assert dr.wait("c-page", timeout=30)["state"] == "succeeded"
    state = FakeAdmin(fake.url).state()
    assert [k["state"] for k in state["keys"] if k["id"] == key["id"]] == [5]
    assert state["key_rings"] == []


# lost answers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [r"^/api/v2/key_rings/[^/]+$", r"^/api/v2/keys_with_policy_overrides$"])
@pytest.mark.parametrize("lost", [{"drop": True}, {"status": 503}], ids=["dropped", "503"])
def test_a_lost_create_answer_is_recovered_without_duplicates(dr: DR, fake: Any, path: str,
                                                              lost: dict[str, Any]) -> None:
    iid = f"c-lost-{uuid.uuid4().hex[:6]}"
    FakeAdmin(fake.url).fault(method="POST", path=path, after=True, **lost)
    dr.ready_plan(iid, PLAN)
    assert [f["hits"] for f in FakeAdmin(fake.url).faults()] == [1]
    assert len(_root_keys(fake, iid)) == 1
    assert dr.deprovision(iid, plan=dr.pid(PLAN)).status_code == 202
    assert dr.wait(iid, timeout=30)["state"] == "succeeded"
    state = FakeAdmin(fake.url).state()
    assert state["key_rings"] == [] and [k["state"] for k in state["keys"]] == [5]
