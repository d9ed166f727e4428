"""Each DR validation rule beyond the schema: a 400 whose description names the fields, and no row written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.domain.errors import InvalidParameters
from broker.orchestrators.simulated.seed import OTHER_ACCOUNT, workspace_crn
from broker.services.dr_validation import validate_dr_parameters
from tests.conftest import ACCOUNT, GRS_PARAMS, ROOT, make_settings
from tests.services.conftest import DR, ORCH, params_for

BULK_31 = [f"vol-bulk-{i:03d}" for i in range(1, 32)]
CAP_31 = "parameters.protected_volumes: at most 30 volumes per replication group (31 given)"
KSYS_PLANS = ["ksys-managed", "ksys-managed-ha", "rehearsal-only", "ksys-managed-byok"]


def _lax_catalog(folder: Path) -> Path:
    """The shipped catalog, with a parameter schema that no longer caps protected_volumes nor requires the
    orchestrator and encryption sections: only the DR validation layer can refuse such input then."""
    data = yaml.safe_load((ROOT / "catalog" / "powervs-dr.yaml").read_text())
    loosened: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            volumes = node.get("protected_volumes")
            if isinstance(volumes, dict) and volumes.pop("maxItems", None) is not None:
                loosened.append("maxItems")
            required = node.get("required")
            if isinstance(required, list) and {"orchestrator", "encryption"} & set(required):
                node["required"] = [r for r in required if r not in ("orchestrator", "encryption")]
                loosened.append("required")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    assert "maxItems" in loosened and "required" in loosened, "the shipped catalog changed shape"
    folder.mkdir()
    (folder / "powervs-dr.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


@pytest.fixture
def lax(tmp_path: Path) -> Iterator[DR]:
    """A broker (real app, worker, SQLite file) built from the loosened catalog."""
    from broker.app import build_runtime, create_app

    rt = build_runtime(make_settings(tmp_path / "lax-db", catalog_path=str(_lax_catalog(tmp_path / "lax-catalog"))))
    rt.worker.start()
    try:
        yield DR(create_app(runtime=rt).test_client(), rt)
    finally:
        rt.worker.stop(10)
        rt.store.engine.dispose()


def _refused(dr: DR, iid: str, plan: str, params: dict[str, Any], *fields: str) -> str:
    r = dr.provision_plan(iid, plan, params)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.json["error"] == "InvalidParameters"
    for field in fields:
        assert field in r.json["description"], r.json["description"]
    with dr.runtime.store.read() as tx:
        assert tx.get_instance(iid) is None
        assert tx.list_operations(instance_id=iid) == []
    return r.json["description"]


def test_sites_that_are_not_a_grs_pair_are_refused(dr: DR) -> None:
    params = {**GRS_PARAMS, "secondary_workspace_crn": workspace_crn("dal12")}
    text = _refused(dr, "v-pair", "grs-async", params, "primary_workspace_crn", "secondary_workspace_crn")
    assert "dal10 and dal12 do not form a Global Replication Service pair" in text
    assert "dal10 replicates to: wdc07" in text


def test_same_workspace_twice_is_refused(dr: DR) -> None:
    params = {**GRS_PARAMS, "secondary_workspace_crn": GRS_PARAMS["primary_workspace_crn"]}
    assert "must differ" in _refused(dr, "v-same", "grs-async", params, "secondary_workspace_crn")


def test_workspaces_in_different_accounts_are_refused(dr: DR) -> None:
    params = {**GRS_PARAMS, "secondary_workspace_crn": workspace_crn("wdc07", OTHER_ACCOUNT)}
    assert "same account" in _refused(dr, "v-acct", "grs-async", params, "secondary_workspace_crn")


def test_more_than_30_volumes_are_refused(dr: DR) -> None:
    # Through the shipped catalog: its schema (maxItems) answers first.
    params = {**GRS_PARAMS, "protected_volumes": BULK_31}
    _refused(dr, "v-31", "grs-async", params, "parameters.protected_volumes")


def test_the_30_volume_cap_is_a_dr_rule_of_its_own(dr: DR) -> None:
    # The DR layer alone, with input no schema checked: 31 volumes are refused, 30 pass.
    plan = dr.runtime.catalog.find_plan("grs-async")
    with pytest.raises(InvalidParameters) as refused:
        validate_dr_parameters(plan, {**GRS_PARAMS, "protected_volumes": BULK_31}, dr.runtime.orchestrator)
    assert refused.value.description == CAP_31
    assert validate_dr_parameters(plan, {**GRS_PARAMS, "protected_volumes": BULK_31[:30]},
                                  dr.runtime.orchestrator) == ACCOUNT


def test_the_30_volume_cap_holds_through_the_api_when_the_schema_lets_31_through(lax: DR) -> None:
    text = _refused(lax, "v-31-lax", "grs-async", {**GRS_PARAMS, "protected_volumes": BULK_31},
                    "parameters.protected_volumes")
    assert text == CAP_31


def test_exactly_30_volumes_are_accepted(dr: DR) -> None:
    params = {**GRS_PARAMS, "protected_volumes": [f"vol-bulk-{i:03d}" for i in range(1, 31)]}
    dr.ready_plan("v-30", "grs-async", params)


def test_volumes_in_two_storage_pools_are_refused(dr: DR) -> None:
    params = {**GRS_PARAMS, "protected_volumes": ["vol-app-data-1", "vol-archive-1"]}
    text = _refused(dr, "v-pools", "grs-async", params, "parameters.protected_volumes")
    assert "one storage pool" in text and "Tier3-Flash-2: vol-archive-1" in text


def test_unknown_volume_is_refused(dr: DR) -> None:
    params = {**GRS_PARAMS, "protected_volumes": ["vol-does-not-exist"]}
    assert "vol-does-not-exist does not exist" in _refused(dr, "v-unk", "grs-async", params,
                                                            "parameters.protected_volumes")


def test_unknown_workspace_is_refused(dr: DR) -> None:
    params = {**GRS_PARAMS, "primary_workspace_crn":
              "crn:v1:bluemix:public:power-iaas:dal10:a/0123456789abcdef0123456789abcdef:"
              "00000000-0000-0000-0000-000000000000::"}
    _refused(dr, "v-ws", "grs-async", params, "parameters.primary_workspace_crn", "does not exist")


def test_volume_already_protected_by_another_instance_is_refused(dr: DR) -> None:
    dr.ready_plan("v-first", "grs-async")
    assert "already belongs to replication group" in _refused(dr, "v-second", "grs-async", dict(GRS_PARAMS),
                                                              "vol-app-data-1")


@pytest.mark.parametrize("plan", KSYS_PLANS)
def test_ksys_plans_require_the_orchestrator_section(dr: DR, plan: str) -> None:
    params = params_for(plan)
    params.pop("orchestrator")
    _refused(dr, f"v-orch-{plan}", plan, params, "orchestrator")


@pytest.mark.parametrize("plan", KSYS_PLANS)
def test_the_orchestrator_section_is_a_dr_rule_of_its_own(dr: DR, plan: str) -> None:
    # The DR layer alone, with input no schema checked.
    params = params_for(plan)
    params.pop("orchestrator")
    with pytest.raises(InvalidParameters) as refused:
        validate_dr_parameters(dr.runtime.catalog.find_plan(plan), params, dr.runtime.orchestrator)
    assert refused.value.description == f"parameters.orchestrator: required by plan {plan!r}"
    assert validate_dr_parameters(dr.runtime.catalog.find_plan(plan), params_for(plan),
                                  dr.runtime.orchestrator) == ACCOUNT


@pytest.mark.parametrize("plan", KSYS_PLANS)
def test_the_orchestrator_section_is_required_through_the_api_when_the_schema_does_not(lax: DR, plan: str) -> None:
    params = params_for(plan)
    params.pop("orchestrator")
    assert _refused(lax, f"v-orch-lax-{plan}", plan, params, "orchestrator") == \
        f"parameters.orchestrator: required by plan {plan!r}"


def test_byok_requires_the_encryption_section(dr: DR) -> None:
    params = params_for("ksys-managed-byok")
    params.pop("encryption")
    _refused(dr, "v-enc", "ksys-managed-byok", params, "encryption")


def test_the_encryption_section_is_a_dr_rule_of_its_own(dr: DR) -> None:
    # The DR layer alone, with input no schema checked.
    params = params_for("ksys-managed-byok")
    params.pop("encryption")
    with pytest.raises(InvalidParameters) as refused:
        validate_dr_parameters(dr.runtime.catalog.find_plan("ksys-managed-byok"), params, dr.runtime.orchestrator)
    assert refused.value.description == "parameters.encryption: required by plan 'ksys-managed-byok'"


def test_the_encryption_section_is_required_through_the_api_when_the_schema_does_not(lax: DR) -> None:
    params = params_for("ksys-managed-byok")
    params.pop("encryption")
    assert _refused(lax, "v-enc-lax", "ksys-managed-byok", params, "encryption") == \
        "parameters.encryption: required by plan 'ksys-managed-byok'"


@pytest.mark.parametrize(("primary", "secondary"), [("che03", "in-mum-1"), ("mon01", "tor01")])
def test_sites_in_chennai_or_montreal_need_a_proxy(dr: DR, primary: str, secondary: str) -> None:
    params = {**params_for("ksys-managed"), "primary_workspace_crn": workspace_crn(primary),
              "secondary_workspace_crn": workspace_crn(secondary)}
    assert "proxy" in _refused(dr, f"v-proxy-{primary}", "ksys-managed", params, "parameters.orchestrator.proxy")
    params["orchestrator"] = {**params["orchestrator"], "proxy": "10.0.0.5:3128"}
    dr.ready_plan(f"v-proxy-ok-{primary}", "ksys-managed", params)


def test_account_instance_limit(tmp_path) -> None:
    from broker.app import build_runtime, create_app
    from tests.conftest import grs_params

    rt = build_runtime(make_settings(tmp_path, account_instance_limit=2))
    rt.worker.start()
    try:
        dr = DR(create_app(runtime=rt).test_client(), rt)
        dr.ready_plan("lim-1", "grs-async", grs_params(1))
        dr.ready_plan("lim-2", "grs-async", grs_params(2))
        text = _refused(dr, "lim-3", "grs-async", grs_params(3), "parameters.primary_workspace_crn")
        assert "limit per account" in text
        dr.deprovision("lim-1")
        assert dr.wait("lim-1")["state"] == "succeeded"
        dr.ready_plan("lim-3", "grs-async", grs_params(3))
    finally:
        rt.worker.stop(10)


def test_a_typo_in_a_parameter_is_refused_naming_it(dr: DR) -> None:
    params = {**GRS_PARAMS, "rpo_target_minuts": 10}
    r = dr.provision_plan("v-typo", "grs-async", params)
    assert r.status_code == 400
    assert "rpo_target_minuts" in r.json["description"]


def test_secrets_are_marked_sensitive_and_never_echoed(dr: DR) -> None:
    schema = dr.runtime.catalog.find_plan("ksys-managed").parameter_schema("provision")
    assert schema["properties"]["ibmcloud_api_key"]["writeOnly"] is True
    assert schema["properties"]["orchestrator"]["properties"]["password"]["writeOnly"] is True
    secret_key, secret_pw = "customer-api-key-0xDEADBEEF", "orchestrator-Secret-77"
    params = {**params_for("ksys-managed"), "ibmcloud_api_key": secret_key,
              "orchestrator": {**ORCH, "name": "ksys-prod", "password": secret_pw}}
    dr.ready_plan("v-secret", "ksys-managed", params)
    body = dr.get("/v2/service_instances/v-secret").get_data(as_text=True)
    assert secret_key not in body and secret_pw not in body
    assert '"name": "ksys-prod"' in body.replace('":"', '": "') or "ksys-prod" in body
    bad = {**params_for("ksys-managed"), "orchestrator": {**ORCH, "name": "x", "password": "short"}}
    r = dr.provision_plan("v-secret-2", "ksys-managed", bad)
    assert r.status_code == 400
    assert "short" not in r.json["description"]
    assert "parameters.orchestrator.password" in r.json["description"]
