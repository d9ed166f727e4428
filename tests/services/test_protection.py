"""The protection status (broker.services.protection): a pure function of the instance record, the replication
status, the clock and the plan, tested on its own; then through fetch instance on the real app."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

from broker.domain.catalog import Plan, load_catalog
from broker.domain.models import Instance, InstanceState
from broker.domain.protocols import ReplicationStatus
from broker.orchestrators.ibmcloud.replication import COPYING, IDLE, STOPPED
from broker.services.protection import REPLICATION_STATES, ProtectionStatus, assess, when
from tests.conftest import KSYS_PARAMS, ROOT
from tests.services.conftest import DR

# 2026-03-02 12:03:00 UTC
NOW = dt.datetime(2026, 3, 2, 12, 3, tzinfo=dt.UTC).timestamp()
TARGET = 15 * 60
CATALOG = load_catalog(str(ROOT / "catalog"))


def _plan(name: str = "ksys-managed") -> Plan:
    plan = CATALOG.find_plan(name)
    assert plan is not None
    return plan


def _inst(state: InstanceState = InstanceState.READY, **dr_state: Any) -> Instance:
    return Instance(id="p-1", service_id="s", plan_id=_plan().id, state=state, parameters=dict(KSYS_PARAMS),
                    context={}, organization_guid="o", space_guid="s", maintenance_version=None,
                    dashboard_url=None, request_hash="h", enabled=True, last_active=None, created_at=NOW - 86400,
                    updated_at=NOW - 86400, dr_state={"active_site": "primary", **dr_state})


def _status(state: str = "consistent_copying", freeze_ago: float | None = 78,
            role: str = "master") -> ReplicationStatus:
    freeze = None if freeze_ago is None else NOW - freeze_ago
    return ReplicationStatus(state=state, primary_role=role, freeze_time=freeze, cycle_period_seconds=300,
                             consistency_group="rccg-1")


FAILED_OVER = {"active_site": "secondary", "last_action": {"type": "failover", "mode": "unplanned",
                                                           "finished_at": NOW - 3600}}


# --- each case on its own ----------------------------------------------------------------------------------

def test_consistent_copying_within_the_target_is_protected() -> None:
    p = assess(_inst(), _status(), NOW, _plan())
    assert p.status is ProtectionStatus.PROTECTED
    assert p.rpo_met is True and p.achieved_rpo_seconds == 78
    assert p.replicating is True and p.not_replicating_since is None
    assert "consistent_copying" in p.reason and "78 s" in p.reason and "15 min" in p.reason


def test_an_rpo_over_the_target_is_degraded() -> None:
    p = assess(_inst(), _status(freeze_ago=TARGET + 300), NOW, _plan())
    assert p.status is ProtectionStatus.DEGRADED
    assert p.rpo_met is False and p.achieved_rpo_seconds == TARGET + 300
    assert "over the target" in p.reason


def test_copying_that_is_not_consistent_is_degraded_and_never_met() -> None:
    p = assess(_inst(), _status("inconsistent_copying", freeze_ago=10), NOW, _plan())
    assert p.status is ProtectionStatus.DEGRADED
    assert p.rpo_met is False  # a young freeze time does not make an inconsistent copy a recovery point
    assert "inconsistent_copying" in p.reason


def test_replication_stopped_at_the_primary_is_not_protected_and_does_not_count_a_lag() -> None:
    status = _status("idling", freeze_ago=600)
    p = assess(_inst(), status, NOW, _plan())
    assert p.status is ProtectionStatus.NOT_PROTECTED
    assert p.rpo_met is False and p.achieved_rpo_seconds is None and p.replicating is False
    assert p.not_replicating_since == NOW - 600
    assert "dr_action resync" in p.next_step
    later = assess(_inst(), status, NOW + 7200, _plan())
    assert later.achieved_rpo_seconds is None and later.not_replicating_since == NOW - 600


def test_a_failover_is_not_protected_until_failback() -> None:
    p = assess(_inst(**FAILED_OVER), _status("idling", freeze_ago=3700), NOW, _plan())
    assert p.status is ProtectionStatus.NOT_PROTECTED
    assert p.reason.startswith("running on the secondary site since 11:03 UTC (unplanned failover)")
    assert p.next_step == "run dr_action failback when the primary site is back"
    assert p.rpo_met is False and p.achieved_rpo_seconds is None
    assert p.not_replicating_since == NOW - 3600  # the failover, not the last freeze before it
    assert p.recovery_point == NOW - 3700
    assert p.headline == ("Not protected: running on the secondary site since 11:03 UTC (unplanned failover); "
                          "replication is idling; run dr_action failback when the primary site is back")


def test_a_failover_on_a_plan_without_orchestrator_says_who_starts_the_vms() -> None:
    p = assess(_inst(**FAILED_OVER), _status("idling"), NOW, _plan("grs-async"))
    assert p.status is ProtectionStatus.NOT_PROTECTED
    assert "start your VMs at the secondary" in p.next_step and "dr_action failback" in p.next_step


def test_a_reverse_copy_while_failed_over_is_still_not_protected() -> None:
    p = assess(_inst(**FAILED_OVER), _status("consistent_copying", freeze_ago=5, role="aux"), NOW, _plan())
    assert p.status is ProtectionStatus.NOT_PROTECTED
    assert "back to the primary" in p.reason and p.rpo_met is False


def test_an_active_test_failover_is_rehearsing() -> None:
    p = assess(_inst(test_active=True, last_rehearsal_at=NOW - 120), _status(), NOW, _plan())
    assert p.status is ProtectionStatus.REHEARSING
    assert p.rpo_met is True  # production keeps replicating during a rehearsal
    assert "since 12:01 UTC" in p.reason and "dr_action cleanup_test" in p.next_step


def test_a_rehearsal_does_not_hide_stopped_replication() -> None:
    p = assess(_inst(test_active=True), _status("consistent_stopped"), NOW, _plan())
    assert p.status is ProtectionStatus.NOT_PROTECTED
    assert "test failover is also active" in p.reason


def test_an_unknown_state_is_degraded_and_named() -> None:
    p = assess(_inst(), _status("resynchronising_sideways"), NOW, _plan())
    assert p.status is ProtectionStatus.DEGRADED
    assert "'resynchronising_sideways'" in p.reason and p.rpo_met is None


def test_an_unreadable_status_is_degraded() -> None:
    p = assess(_inst(), None, NOW, _plan())
    assert p.status is ProtectionStatus.DEGRADED
    assert "could not be read" in p.reason and p.rpo_met is None


def test_copying_without_a_freeze_time_cannot_be_called_met() -> None:
    p = assess(_inst(), _status(freeze_ago=None), NOW, _plan())
    assert p.status is ProtectionStatus.DEGRADED and p.rpo_met is None
    assert "no freeze time" in p.reason


@pytest.mark.parametrize("state", [InstanceState.PROVISIONING, InstanceState.FAILED, InstanceState.DEPROVISIONING,
                                   InstanceState.GONE])
def test_an_instance_that_is_not_ready_is_not_protected(state: InstanceState) -> None:
    p = assess(_inst(state), _status(), NOW, _plan())
    assert p.status is ProtectionStatus.NOT_PROTECTED and p.rpo_met is None
    assert state.value in p.reason or "provision" in p.reason


EXPECTED = {
    "consistent_copying": ProtectionStatus.PROTECTED,
    "consistent_synchronized": ProtectionStatus.PROTECTED,
    "inconsistent_copying": ProtectionStatus.DEGRADED,
    "inconsistent_stopped": ProtectionStatus.NOT_PROTECTED,
    "consistent_stopped": ProtectionStatus.NOT_PROTECTED,
    "idling": ProtectionStatus.NOT_PROTECTED,
    "idling_disconnected": ProtectionStatus.NOT_PROTECTED,
    "inconsistent_disconnected": ProtectionStatus.NOT_PROTECTED,
    "consistent_disconnected": ProtectionStatus.NOT_PROTECTED,
    "empty": ProtectionStatus.NOT_PROTECTED,
}


def test_every_state_either_backend_reports_is_mapped_explicitly() -> None:
    from_backends = set(COPYING) | set(IDLE) | set(STOPPED) | {"empty", "consistent_copying", "idling",
                                                               "inconsistent_copying"}
    assert from_backends <= set(REPLICATION_STATES)
    assert set(REPLICATION_STATES) == set(EXPECTED)


@pytest.mark.parametrize("state", sorted(EXPECTED))
def test_each_state_gives_its_status_with_a_reason_and_a_next_step(state: str) -> None:
    p = assess(_inst(), _status(state), NOW, _plan())
    assert p.status is EXPECTED[state], (state, p)
    assert state in p.reason and p.next_step
    assert (p.rpo_met is True) == (p.status is ProtectionStatus.PROTECTED)


def test_times_name_the_day_only_when_it_is_not_today() -> None:
    assert when(NOW - 60, NOW) == "12:02 UTC"
    assert when(NOW - 86400, NOW) == "2026-03-01 12:03 UTC"


def test_attributes_carry_the_fields_fetch_instance_shows() -> None:
    attrs = assess(_inst(**FAILED_OVER), _status("idling"), NOW, _plan()).attributes()
    assert attrs["protection_status"] == "not protected"
    assert attrs["next_step"] == "run dr_action failback when the primary site is back"
    assert attrs["rpo_met"] is False and "achieved_rpo_seconds" not in attrs
    assert attrs["not_replicating_since"] == "2026-03-02T11:03:00.000000Z"


def test_the_record_is_not_changed() -> None:
    inst = _inst(**FAILED_OVER)
    before = replace(inst)
    assess(inst, _status("idling"), NOW, _plan())
    assert inst == before


# --- through fetch instance (the real app, worker and simulated backend) ------------------------------------

def _run(dr: DR, iid: str, kind: str, mode: str | None = None) -> None:
    r = dr.action(iid, kind, mode)
    assert r.status_code == 202, r.get_data(as_text=True)
    assert dr.wait(iid)["state"] == "succeeded"


def test_fetch_instance_says_a_healthy_instance_is_protected(dr: DR) -> None:
    dr.ready_plan("pr-ok", "ksys-managed")
    attrs = dr.attributes("pr-ok")
    assert attrs["protection_status"] == "protected", attrs
    assert attrs["rpo_met"] is True and attrs["achieved_rpo_seconds"] <= attrs["cycle_period_seconds"]
    assert "consistent_copying" in attrs["protection_reason"]
    assert "dr_action test_failover" in attrs["next_step"]  # never rehearsed


def test_fetch_instance_says_an_unplanned_failover_is_not_protected(dr: DR) -> None:
    dr.ready_plan("pr-fo", "ksys-managed")
    _run(dr, "pr-fo", "failover", "unplanned")
    attrs = dr.attributes("pr-fo")
    assert attrs["replication_state"] == "idling" and attrs["active_site"] == "secondary"
    assert attrs["protection_status"] == "not protected"
    assert attrs["protection_reason"].startswith("running on the secondary site since ")
    assert attrs["next_step"] == "run dr_action failback when the primary site is back"
    assert attrs["rpo_met"] is False
    assert "achieved_rpo_seconds" not in attrs and attrs["not_replicating_since"]
    _run(dr, "pr-fo", "failback")
    assert dr.attributes("pr-fo")["protection_status"] == "protected"


def test_fetch_instance_says_a_rehearsal_is_rehearsing(dr: DR) -> None:
    dr.ready_plan("pr-re", "ksys-managed")
    _run(dr, "pr-re", "test_failover")
    attrs = dr.attributes("pr-re")
    assert attrs["protection_status"] == "rehearsing" and "dr_action cleanup_test" in attrs["next_step"]
    _run(dr, "pr-re", "cleanup_test")
    after = dr.attributes("pr-re")
    assert after["protection_status"] == "protected" and "test_failover" not in after["next_step"]
