"""What each plan's texts (description, displayName, bullets) promise, checked against what the plan really is.

Every number in a plan's texts must be one this test knows how to check (an unknown number fails, so a new
claim needs a check here): the RPO target against the provision schema's ``rpo_target_minutes`` default, the
RTO target against the plan's ``rto_target_minutes`` feature, the volume limit against ``protected_volumes``'
``maxItems``. Claims in words are checked against the features (standby, byok, rehearsal_only, the KSYS
orchestrator) and the bind schema (a wrapped data key per binding is the default ``purpose``).
"""

from __future__ import annotations

import re

import pytest

from broker.domain.catalog import Plan, load_catalog
from tests.conftest import ROOT

CATALOG = load_catalog(ROOT / "catalog", env={})
PLANS = [p for s in CATALOG.services for p in s.plans]

_UNITS = {"min": 1, "h": 60}
RPO = re.compile(r"RPO target (\d+) (min|h)\b")
RTO = re.compile(r"RTO target (\d+) (min|h)\b")
VOLUMES = re.compile(r"[Uu]p to (\d+) volumes")


def _texts(plan: Plan) -> list[str]:
    meta = plan.raw.get("metadata") or {}
    return [plan.raw["description"], str(meta.get("displayName") or ""), *[str(b) for b in meta.get("bullets") or []]]


def _provision_property(plan: Plan, name: str) -> dict:
    return (plan.parameter_schema("provision") or {})["properties"][name]


def _bind_default(plan: Plan) -> str | None:
    return ((plan.parameter_schema("bind") or {}).get("properties") or {}).get("purpose", {}).get("default")


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p.name)
def test_every_number_in_a_plans_texts_is_its_real_value(plan: Plan) -> None:
    for text in _texts(plan):
        checked = []
        for m in RPO.finditer(text):
            minutes = int(m.group(1)) * _UNITS[m.group(2)]
            default = _provision_property(plan, "rpo_target_minutes")["default"]
            assert minutes == default, f"{plan.name}: {text!r} says RPO {minutes} min, the default is {default} min"
            checked.append(m.span())
        for m in RTO.finditer(text):
            minutes = int(m.group(1)) * _UNITS[m.group(2)]
            target = plan.features.get("rto_target_minutes")
            assert minutes == target, f"{plan.name}: {text!r} says RTO {minutes} min, the plan's target is {target}"
            checked.append(m.span())
        for m in VOLUMES.finditer(text):
            limit = _provision_property(plan, "protected_volumes")["maxItems"]
            assert int(m.group(1)) == limit, f"{plan.name}: {text!r}, the schema allows {limit} volumes"
            checked.append(m.span())
        for n in re.finditer(r"\d+", text):
            assert any(a <= n.start() < b for a, b in checked), \
                f"{plan.name}: {text!r}: the number {n.group()} is checked against nothing"


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p.name)
def test_every_claim_in_words_matches_the_plans_features(plan: Plan) -> None:
    f = plan.features
    words = " ".join(_texts(plan)).lower()
    assert bool(re.search(r"standby orchestrator|\bha\b", words)) == bool(f.get("standby")), plan.name
    assert ("key protect" in words) == bool(f.get("byok")), plan.name
    if "wrapped data key per binding" in words or "each binding gets a wrapped data key" in words:
        assert f.get("byok") and _bind_default(plan) == "kms-dek", \
            f"{plan.name}: promises a wrapped data key per binding, the default bind purpose is {_bind_default(plan)}"
    assert bool(re.search(r"no real failover|real moves are refused", words)) == bool(f.get("rehearsal_only"))
    assert ("ksys" in words or "orchestrator" in words) == (f.get("orchestrator") == "ksys"), plan.name
    if f.get("orchestrator") != "ksys":
        assert "you own the standby vms" in words or "you start the standby vms" in words, plan.name
    if f.get("rto_target_minutes") is not None and not f.get("rehearsal_only"):
        assert RTO.search(" ".join(_texts(plan))), f"{plan.name}: an RTO target the texts do not state"


def test_the_rpo_default_is_stated_on_every_plan_that_states_an_rpo() -> None:
    stated = [p.name for p in PLANS if any(RPO.search(t) for t in _texts(p))]
    assert stated == ["grs-async", "ksys-managed", "ksys-managed-ha", "ksys-managed-byok"]
