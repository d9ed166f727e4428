"""The shapes themselves and the check built on them: the generator reads go-swagger models as IBM wrote
them, the committed shapes are the pinned commits' facts, the SDK reading agrees with the SDK's own
``from_dict``, and the fake enforces them on the wire (400 for a missing required field, a recorded
violation for an unknown one, lost answers after the effect)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from broker.fakecloud.contracts import HERE, load, sources
from broker.fakecloud.contracts.generate import POWER_COMMIT, parse_go_structs, struct_schemas
from broker.fakecloud.contracts.keyprotect_gen import KP_COMMIT
from broker.fakecloud.contracts.sdk import SERVICES, sdk_shapes
from broker.fakecloud.server import FakeCloudServer
from broker.orchestrators.simulated.seed import DEMO_WORKSPACES, workspace_crn
from tests.ibmfake import start_fake

GO_MODEL = '''
// Base base
type Base struct {

	// the id
	// Required: true
	ID *string `json:"id"`
}

// Thing thing
//
// swagger:model Thing
type Thing struct {
	Base

	// active flag
	IsActive bool `json:"isActive,omitempty"`

	// sticky flag
	Sticky *bool `json:"sticky,omitempty"`

	// state
	// Enum: ["on","off"]
	State string `json:"state,omitempty"`

	// members
	Members []string `json:"members"`

	// Capitalised as IBM spells it
	PoolMap []*Base `json:"PoolMap,omitempty"`

	// skipped
	Internal string `json:"-"`
}
'''


def test_generator_reads_required_enums_allof_and_go_encoding_rules() -> None:
    schema = struct_schemas(parse_go_structs(GO_MODEL))["Thing"]
    assert schema["required"] == ["id"]  # from the embedded (allOf) model
    props = schema["properties"]
    assert set(props) == {"id", "isActive", "sticky", "state", "members", "PoolMap"}
    assert props["state"]["enum"] == ["on", "off"]
    assert props["isActive"].get("x-omitempty") is True      # a plain bool is left out when false
    assert "x-omitempty" not in props["sticky"]               # a pointer to false is sent
    assert props["members"].get("x-nullable") is True         # a nil slice without omitempty is sent as null
    assert props["PoolMap"]["items"] == {"$ref": "#/$defs/Base"}
    assert schema["additionalProperties"] is False


def test_committed_shapes_are_the_pinned_commits() -> None:
    power = json.loads((HERE / "powervs.json").read_text())
    kp = json.loads((HERE / "keyprotect.json").read_text())
    assert power["source"] == {"repo": "IBM-Cloud/power-go-client", "commit": POWER_COMMIT,
                               "paths": ["power/client", "power/models"]}
    assert kp["source"]["commit"] == KP_COMMIT
    defs = power["$defs"]
    # facts of IBM's definition the broker depends on
    assert "volumeIDs" not in defs["VolumeGroup"]["properties"]
    assert "volumeIDs" in defs["VolumeGroupDetails"]["properties"]
    assert defs["VolumeOnboardingCreate"]["required"] == ["Volumes"]
    assert set(defs["VolumeOnboardingCreateResponse"]["properties"]) == {"id", "description"}
    assert "onboardings" in defs["VolumeOnboardings"]["required"]
    assert "targetReplicationEnabled" in defs["VolumesCloneAsyncRequest"]["properties"]
    ops = {(o["method"], o["path"]): o for o in power["operations"]}
    storage = ops[("GET", "/pcloud/v1/cloud-instances/{cloud_instance_id}/volume-groups/{volume_group_id}"
                          "/storage-details")]
    assert "429" in storage["responses"]
    assert len(power["operations"]) >= 150 and len(defs) >= 200


def test_every_service_names_its_source() -> None:
    found = sources()
    assert found["powervs"]["commit"] == POWER_COMMIT
    assert found["kms"]["requests"]["commit"] == KP_COMMIT
    assert found["kms"]["answers"]["package"] == "keyprotect"
    for name in ("iam_identity", "iam_policy", "resource_controller", "global_catalog", "metering", "dra"):
        assert found[name]["version"] and found[name]["package"], name


@pytest.mark.parametrize("svc", SERVICES, ids=[s.name for s in SERVICES])
def test_sdk_reading_agrees_with_the_sdks_own_models(svc) -> None:
    """For every model read from an SDK: a dict with every required property is accepted by the SDK's
    ``from_dict``, and one lacking any of them is refused by both the SDK and our schema."""
    import importlib

    module = importlib.import_module(svc.module)
    shapes = sdk_shapes(svc)
    contract = load()
    checked = 0
    for key, schema in shapes["$defs"].items():
        required = schema.get("required") or []
        cls = getattr(module, key.split(".", 1)[1])
        if not required or any(_nested(schema, r) for r in required):
            continue
        full = {r: _sample(schema["properties"][r]) for r in required}
        cls.from_dict(full)  # the SDK accepts what our schema calls complete
        validator = contract._validator(svc.name, {"$ref": f"#/$defs/{key}"}, answer=True)
        assert not list(validator.iter_errors(full)), key
        for r in required:
            partial = {k: v for k, v in full.items() if k != r}
            with pytest.raises(ValueError):
                cls.from_dict(partial)
            assert list(validator.iter_errors(partial)), (key, r)
        checked += 1
    assert checked >= 1


def _nested(schema: dict, prop: str) -> bool:
    p = schema["properties"].get(prop, {})
    return "$ref" in p or "$ref" in p.get("items", {}) or not p.get("type")


def _sample(prop: dict):
    kind = prop.get("type")
    if "enum" in prop:
        return prop["enum"][0]
    return {"string": "2026-12-01T00:00:00Z", "boolean": True, "integer": 1, "number": 1.0, "array": [],
            "object": {}}[kind]


# the checks on the wire -----------------------------------------------------------------------------------
@pytest.fixture
def fake() -> Iterator[FakeCloudServer]:
    server = start_fake(step_seconds=0.05)
    try:
        yield server
    finally:
        server.stop()


def _token(fake: FakeCloudServer) -> dict[str, str]:
    r = requests.post(f"{fake.url}/identity/token", timeout=10, data={
        "grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": "shape-test"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _ws() -> tuple[str, str]:
    return DEMO_WORKSPACES["dal10"], workspace_crn("dal10")


def test_the_fake_refuses_a_body_without_a_required_field_as_ibm_does(fake: FakeCloudServer) -> None:
    guid, crn = _ws()
    headers = {**_token(fake), "CRN": crn}
    # VolumeOnboardingCreate requires "Volumes"; the lower-case key does not stand in for it
    r = requests.post(f"{fake.url}/pcloud/v1/cloud-instances/{guid}/volumes/onboarding", headers=headers,
                      json={"volumes": [{"sourceCRN": crn, "auxiliaryVolumes": [{"auxVolumeName": "aux"}]}]},
                      timeout=10)
    assert r.status_code == 400 and "'Volumes' is a required property" in r.json()["description"]
    violations = requests.get(f"{fake.url}/_fake/contract", timeout=10).json()["violations"]
    assert any("'volumes' was unexpected" in v["message"] for v in violations)


def test_an_unknown_field_is_ignored_like_ibms_decoder_does_but_recorded(fake: FakeCloudServer) -> None:
    guid, crn = _ws()
    headers = {**_token(fake), "CRN": crn}
    r = requests.post(f"{fake.url}/pcloud/v1/cloud-instances/{guid}/volumes/vol-db-1/action", headers=headers,
                      json={"replicationEnabled": True, "replicationEnabeld": False}, timeout=10)
    assert r.status_code in (200, 202), r.text
    summary = requests.get(f"{fake.url}/_fake/contract", timeout=10).json()
    assert [v["message"] for v in summary["violations"]] == [
        "Additional properties are not allowed ('replicationEnabeld' was unexpected)"]
    assert summary["exchanges_checked"] >= 1


def test_an_operation_ibm_does_not_define_is_a_violation(fake: FakeCloudServer) -> None:
    guid, crn = _ws()
    r = requests.get(f"{fake.url}/pcloud/v1/cloud-instances/{guid}/volume-groups/x/members",
                     headers={**_token(fake), "CRN": crn}, timeout=10)
    assert r.status_code == 404
    violations = requests.get(f"{fake.url}/_fake/contract", timeout=10).json()["violations"]
    assert any("no operation GET" in v["message"] for v in violations)


def _enable(fake: FakeCloudServer, headers: dict[str, str], guid: str, *volumes: str) -> None:
    for vol in volumes:
        r = requests.post(f"{fake.url}/pcloud/v1/cloud-instances/{guid}/volumes/{vol}/action", headers=headers,
                          json={"replicationEnabled": True}, timeout=10)
        assert r.status_code in (200, 202), r.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # enabling replication is asynchronous
        states = [requests.get(f"{fake.url}/pcloud/v1/cloud-instances/{guid}/volumes/{v}", headers=headers,
                               timeout=10).json().get("replicationEnabled") for v in volumes]
        if all(states):
            return
        time.sleep(0.05)
    raise AssertionError(f"replication not enabled on {volumes}")


def _groups(fake: FakeCloudServer, headers: dict[str, str], guid: str) -> set[str]:
    r = requests.get(f"{fake.url}/pcloud/v1/cloud-instances/{guid}/volume-groups", headers=headers, timeout=10)
    return {g["name"] for g in r.json()["volumeGroups"]}


def test_a_lost_answer_takes_effect_first(fake: FakeCloudServer) -> None:
    guid, crn = _ws()
    headers = {**_token(fake), "CRN": crn}
    _enable(fake, headers, guid, "vol-db-1", "vol-db-2")
    groups = f"{fake.url}/pcloud/v1/cloud-instances/{guid}/volume-groups"
    requests.post(f"{fake.url}/_fake/faults", json={"method": "POST", "path": "/volume-groups$", "drop": True},
                  timeout=10)
    with pytest.raises(requests.ConnectionError):
        requests.post(groups, headers=headers, json={"name": "lost-1", "volumeIDs": ["vol-db-1"]}, timeout=10)
    assert "lost-1" in _groups(fake, headers, guid)
    requests.post(f"{fake.url}/_fake/faults", json={"method": "POST", "path": "/volume-groups$", "after": True,
                                                    "status": 503}, timeout=10)
    r = requests.post(groups, headers=headers, json={"name": "lost-2", "volumeIDs": ["vol-db-2"]}, timeout=10)
    assert r.status_code == 503
    assert "lost-2" in _groups(fake, headers, guid)
    # each fault is spent once: the next create is answered normally
    _enable(fake, headers, guid, "vol-app-data-1")
    r = requests.post(groups, headers=headers, json={"name": "kept", "volumeIDs": ["vol-app-data-1"]}, timeout=10)
    assert r.status_code in (202, 206), r.text


# what the client reads ----------------------------------------------------------------------------------
# Names the ibmcloud client reads that are not fields of an API model, each for a reason: IBM's error bodies
# (the SDKs model none; ``errors.py`` reads Key Protect's ``reasons``/``errorMsg`` and IAM's ``errorMessage``),
# response headers, and the query parameters it builds or follows (``next`` links carry ``pagetoken``).
NOT_MODEL_FIELDS = {"reasons": "Key Protect error body", "errorMsg": "Key Protect error body",
                    "errorMessage": "IAM token error body", "Retry-After": "header", "Content-Type": "header",
                    "pagetoken": "query parameter of IAM's next link", "stand_by_redeploy": "DR Automation query"}


def test_every_field_the_ibmcloud_client_reads_is_in_ibms_definitions() -> None:
    """The wire checks hold what is sent and answered; this holds what the client *reads*: every constant key it
    reads (``x.get("k")``, ``x["k"]``) is a property of some IBM model, a key the backend writes itself (its
    step outputs, request bodies), a catalog parameter, a ``DRBROKER_`` setting, or listed above with its reason."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    props: set[str] = set()

    def walk(x: object) -> None:
        if isinstance(x, dict):
            props.update(x.get("properties") or {})
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    for svc in load().services.values():
        walk(svc.defs)
    written: set[str] = set()
    reads: dict[str, str] = {}
    for path in sorted((root / "broker/orchestrators/ibmcloud").glob("*.py")):
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Dict):
                written |= {k.value for k in n.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
                if n.func.attr in ("update", "setdefault", "pop"):
                    written |= {k.arg for k in n.keywords if k.arg}
                if n.func.attr == "get" and n.args and isinstance(n.args[0], ast.Constant) \
                        and isinstance(n.args[0].value, str):
                    reads.setdefault(n.args[0].value, f"{path.name}:{n.lineno}")
            elif isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) \
                    and isinstance(n.slice.value, str):
                if isinstance(n.ctx, ast.Store):
                    written.add(n.slice.value)
                else:
                    reads.setdefault(n.slice.value, f"{path.name}:{n.lineno}")
    catalog = (root / "catalog/powervs-dr.yaml").read_text()
    unknown = {k: where for k, where in reads.items()
               if k not in props and k not in written and k not in NOT_MODEL_FIELDS
               and not k.startswith("DRBROKER_") and f"{k}:" not in catalog}
    assert not unknown, f"read but defined by no IBM model: {unknown}"
    assert props >= {"volumeIDs", "keySetForDeletion", "onboardings"}  # the walk reached the models
