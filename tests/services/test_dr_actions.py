"""Day-2 DR actions through OSB update: each action, each refusal, and the live DR state they leave."""

from __future__ import annotations

import pytest

from broker.orchestrators.simulated.cloud import SEED_OWNER, SimulatedCloud
from tests.conftest import PRIMARY, SECONDARY, SERVICE_ID
from tests.services.conftest import DR


def _run(dr: DR, iid: str, kind: str, mode: str | None = None) -> dict:
    r = dr.action(iid, kind, mode)
    assert r.status_code == 202, r.get_data(as_text=True)
    result = dr.wait(iid)
    assert result["state"] == "succeeded", result
    return result


def _refused(dr: DR, iid: str, kind: str, expected: str, mode: str | None = None, status: int = 422) -> None:
    with dr.runtime.store.read() as tx:
        before = len(tx.list_operations(instance_id=iid))
    r = dr.action(iid, kind, mode)
    assert r.status_code == status, r.get_data(as_text=True)
    assert expected in r.json["description"], r.json["description"]
    with dr.runtime.store.read() as tx:
        assert len(tx.list_operations(instance_id=iid)) == before


def vm_states(dr: DR, iid: str) -> dict[str, dict[str, str]]:
    """The power state of every VM at each site: the customer's VMs in the primary workspace, and the
    instance's backup VMs (its DR copies) in the secondary one."""
    cloud = SimulatedCloud(dr.runtime.store.engine)
    primary = {vm.data["vm_id"]: vm.state for vm in cloud.of_kind("pvm_instance", SEED_OWNER)
               if vm.data["workspace_crn"] == PRIMARY}
    secondary = {vm.data["name"]: vm.state for vm in cloud.of_kind("backup_vm", iid)
                 if vm.data["workspace_crn"] == SECONDARY}
    return {"primary": primary, "secondary": secondary}


def _states(primary: str, secondary: str) -> dict[str, dict[str, str]]:
    return {"primary": {"vm-app-1": primary, "vm-db-1": primary},
            "secondary": {"vm-app-1_BackUp": secondary, "vm-db-1_BackUp": secondary}}


RUNNING_AT_PRIMARY = _states("ACTIVE", "SHUTOFF")


def _steps(dr: DR, op_id: str) -> list:
    with dr.runtime.store.read() as tx:
        return tx.steps(op_id)


def test_test_failover_records_rehearsal_and_rto_then_cleanup_removes_it(tmp_path) -> None:
    from broker.app import build_runtime, create_app
    from tests.conftest import make_settings

    # Steps that take time (0.05 s per step weight), so the RTO has bounds worth checking.
    rt = build_runtime(make_settings(tmp_path, sim_step_seconds=0.05))
    rt.worker.start()
    try:
        dr = DR(create_app(runtime=rt).test_client(), rt)
        dr.ready_plan("d2-test", "ksys-managed")
        r = dr.action("d2-test", "test_failover")
        assert r.status_code == 202, r.get_data(as_text=True)
        result = dr.wait("d2-test")
        assert result["state"] == "succeeded", result
        _check_rehearsal(dr, r.json["operation"], result)
    finally:
        rt.worker.stop(10)


def _check_rehearsal(dr: DR, op_id: str, result: dict) -> None:
    assert "test_failover done" in result["description"]
    assert "achieved RPO" in result["description"]
    attrs = dr.attributes("d2-test")
    assert attrs["test_failover_active"] is True
    assert attrs["last_rehearsal_at"].endswith("Z")
    # The recorded RTO is the rehearsal's own duration: at least from its first step's start to its last
    # step's end, at most from the request to the operation's end.
    with dr.runtime.store.read() as tx:
        op = tx.get_operation(op_id)
    steps = _steps(dr, op_id)
    assert [s.name for s in steps] == ["check_replication", "start_rehearsal", "verify_rehearsal"]
    lower = steps[-1].finished_at - steps[0].started_at
    upper = op.finished_at - op.created_at
    assert lower >= 0.1  # three steps of 0.05 s or more: a zero or a single step's time would not fit
    assert lower - 0.001 <= attrs["last_rehearsal_rto_seconds"] <= upper + 0.001, (lower, upper, attrs)
    assert attrs["active_site"] == "primary"
    assert vm_states(dr, "d2-test") == RUNNING_AT_PRIMARY  # a rehearsal moves no production VM
    rehearsal = [r for r in dr.inventory("d2-test") if r.kind == "rehearsal"]
    assert len(rehearsal) == 1 and rehearsal[0].data["vms"] == ["vm-app-1_DRTest", "vm-db-1_DRTest"]
    _run(dr, "d2-test", "cleanup_test")
    assert dr.attributes("d2-test")["test_failover_active"] is False
    assert not [r for r in dr.inventory("d2-test") if r.kind == "rehearsal"]


@pytest.mark.parametrize("mode", ["planned", "unplanned"])
def test_failover_moves_to_the_secondary_and_failback_returns(dr: DR, mode: str) -> None:
    iid = f"d2-fo-{mode}"
    dr.ready_plan(iid, "ksys-managed")
    assert vm_states(dr, iid) == RUNNING_AT_PRIMARY
    _run(dr, iid, "failover", mode)
    attrs = dr.attributes(iid)
    assert attrs["active_site"] == "secondary"
    assert attrs["replication_state"] == "idling"
    # planned: the primary's VMs were shut down; unplanned: the lost primary is not touched
    assert vm_states(dr, iid) == _states("SHUTOFF" if mode == "planned" else "ACTIVE", "ACTIVE")
    _run(dr, iid, "failback")
    attrs = dr.attributes(iid)
    assert attrs["active_site"] == "primary"
    assert attrs["replication_state"] == "consistent_copying"
    assert attrs["replication_primary_role"] == "master"
    assert vm_states(dr, iid) == RUNNING_AT_PRIMARY


def test_planned_failover_stops_primary_vms_first(dr: DR) -> None:
    dr.ready_plan("d2-steps", "ksys-managed")
    r = dr.action("d2-steps", "failover", "planned")
    op_id = r.json["operation"]
    assert dr.wait("d2-steps")["state"] == "succeeded"
    steps = {s.name: s for s in _steps(dr, op_id)}
    assert list(steps) == ["check_replication", "stop_primary_vms", "failover_replication", "start_secondary_vms"]
    # the primary's VMs were down before replication stopped and before the secondary's VMs started
    assert steps["stop_primary_vms"].finished_at <= steps["failover_replication"].started_at
    assert steps["failover_replication"].finished_at <= steps["start_secondary_vms"].started_at
    assert vm_states(dr, "d2-steps") == _states("SHUTOFF", "ACTIVE")


def test_unplanned_failover_does_not_touch_the_lost_primary(dr: DR) -> None:
    dr.ready_plan("d2-unpl", "ksys-managed")
    op_id = dr.action("d2-unpl", "failover", "unplanned").json["operation"]
    assert dr.wait("d2-unpl")["state"] == "succeeded"
    names = [s.name for s in _steps(dr, op_id)]
    assert names == ["failover_replication", "start_secondary_vms"]
    assert vm_states(dr, "d2-unpl") == _states("ACTIVE", "ACTIVE")


def test_resync_restarts_replication(dr: DR) -> None:
    dr.ready_plan("d2-resync", "grs-async")
    _run(dr, "d2-resync", "resync")
    assert dr.attributes("d2-resync")["replication_state"] == "consistent_copying"


def test_live_rpo_is_reported_against_the_target(dr: DR) -> None:
    dr.ready_plan("d2-rpo", "grs-async")
    attrs = dr.attributes("d2-rpo")
    assert attrs["replication_state"] == "consistent_copying"
    assert 0 <= attrs["achieved_rpo_seconds"] <= attrs["cycle_period_seconds"]
    assert attrs["rpo_target_seconds"] == 15 * 60
    assert attrs["rpo_met"] is True


def test_failback_before_failover_is_refused(dr: DR) -> None:
    dr.ready_plan("d2-nofb", "ksys-managed")
    _refused(dr, "d2-nofb", "failback", "failback needs a failover first")


def test_failover_twice_is_refused(dr: DR) -> None:
    dr.ready_plan("d2-twice", "ksys-managed")
    _run(dr, "d2-twice", "failover", "planned")
    _refused(dr, "d2-twice", "failover", "already failed over")


@pytest.mark.parametrize("kind", ["failover", "failback"])
def test_real_moves_are_refused_on_rehearsal_only(dr: DR, kind: str) -> None:
    dr.ready_plan(f"d2-ro-{kind}", "rehearsal-only")
    _refused(dr, f"d2-ro-{kind}", kind, "does not allow")


def test_rehearsal_only_allows_test_failover_and_cleanup(dr: DR) -> None:
    dr.ready_plan("d2-ro-ok", "rehearsal-only")
    _run(dr, "d2-ro-ok", "test_failover")
    _run(dr, "d2-ro-ok", "cleanup_test")


def test_cleanup_without_a_test_is_refused(dr: DR) -> None:
    dr.ready_plan("d2-noclean", "ksys-managed")
    _refused(dr, "d2-noclean", "cleanup_test", "no test failover is active")


def test_second_test_failover_while_one_is_active_is_refused(dr: DR) -> None:
    dr.ready_plan("d2-2test", "ksys-managed")
    _run(dr, "d2-2test", "test_failover")
    _refused(dr, "d2-2test", "test_failover", "already active")
    _refused(dr, "d2-2test", "failover", "test failover is active")


@pytest.mark.parametrize("kind", ["test_failover", "cleanup_test", "failover", "failback", "resync", "rehearsal"])
def test_every_action_is_refused_on_a_disabled_instance(dr: DR, kind: str) -> None:
    iid = f"d2-dis-{kind}"
    dr.ready_plan(iid, "ksys-managed")
    assert dr.put(f"/bluemix_v1/service_instances/{iid}", {"enabled": False}).status_code == 204
    _refused(dr, iid, kind, "disabled")
    # replication keeps running while disabled
    assert dr.attributes(iid)["replication_state"] == "consistent_copying"


def test_dr_action_mixed_with_parameter_changes_is_refused(dr: DR) -> None:
    dr.ready_plan("d2-mix", "grs-async")
    r = dr.patch("/v2/service_instances/d2-mix?accepts_incomplete=true",
                 {"service_id": SERVICE_ID, "parameters": {"dr_action": {"type": "resync"},
                                                           "rpo_target_minutes": 5}})
    assert r.status_code == 400
    assert "parameters.dr_action" in r.json["description"]


def test_unknown_dr_action_is_refused_by_the_schema(dr: DR) -> None:
    dr.ready_plan("d2-unk", "grs-async")
    _refused(dr, "d2-unk", "explode", "parameters.dr_action.type", status=400)


def test_dr_action_without_accepts_incomplete_is_async_required(dr: DR) -> None:
    dr.ready_plan("d2-async", "grs-async")
    r = dr.patch("/v2/service_instances/d2-async",
                 {"service_id": SERVICE_ID, "parameters": {"dr_action": {"type": "resync"}}})
    assert r.status_code == 422 and r.json["error"] == "AsyncRequired"


def test_failed_dr_action_reports_usable_instance_and_compensates(tmp_path) -> None:
    from broker.app import build_runtime, create_app
    from tests.conftest import make_settings

    rt = build_runtime(make_settings(tmp_path, sim_faults="verify_rehearsal=fail"))
    rt.worker.start()
    try:
        dr = DR(create_app(runtime=rt).test_client(), rt)
        dr.ready_plan("d2-fail", "ksys-managed")
        assert dr.action("d2-fail", "test_failover").status_code == 202
        result = dr.wait("d2-fail")
        assert result["state"] == "failed"
        assert result["instance_usable"] is True
        assert "cleanup_rehearsal" in result["description"]
        assert not [r for r in dr.inventory("d2-fail") if r.kind == "rehearsal"]
        assert dr.attributes("d2-fail")["test_failover_active"] is False
    finally:
        rt.worker.stop(10)
