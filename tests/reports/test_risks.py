"""Open risks from a constructed instance and the protection status ``assess`` gives it (pure)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from broker.domain.models import Instance, InstanceState
from broker.domain.protocols import ReplicationStatus
from broker.reports.risks import open_risks
from broker.services.protection import assess

NOW = 1_800_000_000.0


def _inst(**kw: Any) -> Instance:
    base = Instance(id="i", service_id="s", plan_id="p", state=InstanceState.READY,
                    parameters={"rpo_target_minutes": 15}, context={}, organization_guid=None, space_guid=None,
                    maintenance_version=None, dashboard_url=None, request_hash="h", enabled=True, last_active=None,
                    created_at=NOW - 86400, updated_at=NOW - 86400,
                    dr_state={"active_site": "primary", "last_rehearsal_at": NOW - 3600})
    return replace(base, **kw)


def _status(state: str = "consistent_copying", lag: float = 60.0) -> ReplicationStatus:
    return ReplicationStatus(state=state, primary_role="master", freeze_time=NOW - lag, consistency_group="rccg-1",
                             cycle_period_seconds=300)


def _codes(inst: Instance, status: ReplicationStatus | None) -> list[str]:
    return [r.code for r in open_risks(inst, assess(inst, status, NOW, None), None, NOW)]


def test_a_protected_recently_rehearsed_instance_has_no_risk() -> None:
    assert _codes(_inst(), _status()) == []


def test_rpo_over_target_now_is_an_rpo_breach() -> None:
    assert _codes(_inst(), _status(lag=2000)) == ["rpo_breached"]


def test_replication_not_copying_is_not_protected_and_critical() -> None:
    inst = _inst()
    risks = open_risks(inst, assess(inst, _status("consistent_stopped"), NOW, None), None, NOW)
    assert [(r.code, r.severity) for r in risks] == [("not_protected", "critical")]
    assert "consistent_stopped" in risks[0].summary


def test_degraded_without_a_breach_disabled_and_never_rehearsed_are_each_named() -> None:
    inst = _inst(enabled=False, dr_state={"active_site": "primary"})
    assert _codes(inst, _status("inconsistent_copying")) == ["rpo_breached", "disabled", "never_rehearsed"]
    assert _codes(inst, None) == ["degraded", "disabled", "never_rehearsed"]


def test_dr_test_schedule_sets_when_a_rehearsal_is_overdue() -> None:
    old = _inst(parameters={"rpo_target_minutes": 15, "dr_test_schedule": "monthly"},
                dr_state={"active_site": "primary", "last_rehearsal_at": NOW - 32 * 86400})
    assert _codes(old, _status()) == ["rehearsal_overdue"]
    assert _codes(replace(old, parameters={"rpo_target_minutes": 15, "dr_test_schedule": "quarterly"}),
                  _status()) == []


def test_a_deprovisioned_instance_has_no_open_risk() -> None:
    assert _codes(_inst(state=InstanceState.GONE), None) == []
