"""The shipped alert rules (deploy/prometheus/drbroker-alerts.yaml): promtool accepts them, and each fires on
the state it names, judged by Prometheus's rule engine on the /metrics of a real broker in that state.

Every scenario starts from the same healthy broker (an instance provisioned, replicating within its target,
rehearsed on its schedule): nothing may fire there. Then the broker is brought into one bad state, scraped
again, and exactly the alert that names that state must fire, for that instance (or step, or operation type).
"""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.conftest import free_port, wait_until
from tests.metrics import promtool, states
from tests.metrics.promtool import RULES

HEALTHY_MINUTES = 70  # longer than the longest for: (1 h): a rule that fires on healthy values has fired by then
BAD_MINUTES = 70
PLAN = "grs-async"


@pytest.fixture(autouse=True)
def _promtool() -> None:
    """Before a broker is started: without promtool there is nothing to judge its metrics with."""
    promtool.promtool()


def test_promtool_accepts_the_rules() -> None:
    run = subprocess.run([promtool.promtool(), "check", "rules", str(RULES)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS: 7 rules found" in run.stdout, run.stdout
    assert set(promtool.alerts()) == {"DrBrokerNotProtected", "DrBrokerRpoOverTarget", "DrBrokerRehearsalOverdue",
                                      "DrBrokerOperationStuck", "DrBrokerBackendErrors", "DrBrokerNotificationsDead",
                                      "DrBrokerEvidenceExportLagging"}


def test_every_alert_has_a_severity_a_for_and_says_what_to_do() -> None:
    for alert in promtool.alerts().values():
        assert alert.labels.get("severity") in ("critical", "warning"), alert.name
        assert alert.for_minutes > 0, alert.name
        assert {"summary", "description", "runbook"} <= set(alert.annotations), alert.name
        assert alert.annotations["runbook"] == f"docs/operations.md#{alert.name.lower()}", alert.name


def _scenario(broker_factory, client_for, db_path, **env: str):
    broker = broker_factory(db_path, **env)
    c = client_for(broker)
    states.healthy(c)
    return broker, c, states.scrape(broker)


def test_not_protected_fires_after_an_unplanned_failover(tmp_path, broker_factory, client_for, db_path) -> None:
    broker, c, healthy = _scenario(broker_factory, client_for, db_path)
    states.provision(c, "dr-lost", 1)
    states.dr_action(c, "dr-lost", "failover", mode="unplanned")
    bad = states.scrape(broker)
    out = promtool.check(tmp_path, [(healthy, HEALTHY_MINUTES), (bad, BAD_MINUTES)],
                         {"DrBrokerNotProtected": [{"instance_id": "dr-lost", "plan": PLAN}]})
    assert "SUCCESS" in out


def test_rpo_over_target_fires_when_the_storage_lags(tmp_path, broker_factory, client_for, db_path) -> None:
    broker, c, healthy = _scenario(broker_factory, client_for, db_path)
    states.provision(c, "dr-slow", 1)  # RPO target 15 min
    states.lag_replication(db_path, "dr-slow", 50 * 60)
    bad = states.scrape(broker)
    promtool.check(tmp_path, [(healthy, HEALTHY_MINUTES), (bad, BAD_MINUTES)],
                   {"DrBrokerRpoOverTarget": [{"instance_id": "dr-slow", "plan": PLAN}]})


def test_rehearsal_overdue_fires_on_an_old_or_a_missing_rehearsal(tmp_path, broker_factory, client_for,
                                                                  db_path) -> None:
    broker, c, healthy = _scenario(broker_factory, client_for, db_path)
    states.provision(c, "dr-old", 1)  # dr_test_schedule weekly
    states.dr_action(c, "dr-old", "test_failover")
    states.dr_action(c, "dr-old", "cleanup_test")
    states.backdate_rehearsal(db_path, "dr-old", 8 * 86400)
    states.provision(c, "dr-never", 2)
    states.backdate_instance(db_path, "dr-never", 8 * 86400)
    states.provision(c, "dr-new", 3)  # never rehearsed, but a day old only: not due yet
    states.backdate_instance(db_path, "dr-new", 86400)
    bad = states.scrape(broker)
    promtool.check(tmp_path, [(healthy, HEALTHY_MINUTES), (bad, BAD_MINUTES)],
                   {"DrBrokerRehearsalOverdue": [{"instance_id": "dr-never", "plan": PLAN},
                                                 {"instance_id": "dr-old", "plan": PLAN}]})


def test_operation_stuck_fires_on_a_bind_hanging_past_the_deadline(tmp_path, broker_factory, client_for,
                                                                   db_path) -> None:
    broker, c, healthy = _scenario(broker_factory, client_for, db_path,
                                   DRBROKER_SIM_FAULTS="create_service_id=latency:600")
    assert states.bind(c, "healthy-1", "app-1").status_code == 202
    wait_until(lambda: states.in_progress(db_path, "healthy-1") == 1, 30, "the bind in progress")
    assert states.backdate_operations_in_progress(db_path, "healthy-1", 2.5 * 3600) == 1
    bad = states.scrape(broker)
    broker.kill9()  # its bind would hang for another ten minutes
    promtool.check(tmp_path, [(healthy, HEALTHY_MINUTES), (bad, BAD_MINUTES)],
                   {"DrBrokerOperationStuck": [{"type": "bind"}]})


def test_backend_errors_fire_on_a_failed_step_and_on_many_retries(tmp_path, broker_factory, client_for,
                                                                  db_path) -> None:
    broker, c, healthy = _scenario(broker_factory, client_for, db_path,
                                   DRBROKER_SIM_FAULTS="create_service_id=transient:4,issue_credentials=fail")
    for n in range(3):  # 3 x 4 retried errors: over the 10 in 15 minutes; each bind then fails its last step
        bid = f"app-{n}"
        assert states.bind(c, "healthy-1", bid).status_code == 202
        wait_until(lambda bid=bid: c.get(f"/v2/service_instances/healthy-1/service_bindings/{bid}/last_operation")
                   .json().get("state") == "failed", 60, f"bind {bid} failed")
    bad = states.scrape(broker)
    promtool.check(tmp_path, [(healthy, HEALTHY_MINUTES), (bad, BAD_MINUTES)],
                   {"DrBrokerBackendErrors": [{"action": "create_service_id", "kind": "transient"},
                                              {"action": "issue_credentials", "kind": "failed"}]})


def test_a_few_retries_are_not_an_alert(tmp_path, broker_factory, client_for, db_path) -> None:
    broker, c, healthy = _scenario(broker_factory, client_for, db_path,
                                   DRBROKER_SIM_FAULTS="create_service_id=transient:4")
    for n in range(2):  # 8 retried errors, every bind done: under the threshold
        assert states.bind(c, "healthy-1", f"app-{n}").status_code == 202
        wait_until(lambda n=n: c.get(f"/v2/service_instances/healthy-1/service_bindings/app-{n}/last_operation")
                   .json().get("state") == "succeeded", 60, f"bind app-{n}")
    bad = states.scrape(broker)
    assert promtool.samples(bad)[("drbroker_backend_errors_total",
                                  (("action", "create_service_id"), ("kind", "transient")))] == 8
    promtool.check(tmp_path, [(healthy, HEALTHY_MINUTES), (bad, BAD_MINUTES)], {})


def test_notifications_dead_fires_once_a_delivery_gives_up(tmp_path, broker_factory, client_for, db_path) -> None:
    # a webhook on a loopback port nobody listens on: connection refused, one attempt allowed, dead
    closed = free_port()
    broker, c, healthy = _scenario(broker_factory, client_for, db_path, DRBROKER_NOTIFY_MAX_ATTEMPTS="1",
                                   DRBROKER_NOTIFY_INTERVAL_SECONDS="0.1", DRBROKER_WEBHOOK_ALLOW_PRIVATE="true")
    states.provision(c, "dr-hooked", 1, webhooks=[{"url": f"https://127.0.0.1:{closed}/hook",
                                                   "secret": "s" * 32, "event_types": ["*"]}])
    wait_until(lambda: states.outbox_states(db_path).get("dead"), 30, "a dead delivery")
    bad = states.scrape(broker)
    promtool.check(tmp_path, [(healthy, HEALTHY_MINUTES), (bad, BAD_MINUTES)], {"DrBrokerNotificationsDead": [{}]})


def test_evidence_export_lagging_fires_when_cos_is_unreachable(tmp_path, broker_factory, client_for,
                                                               db_path) -> None:
    cos = {"DRBROKER_COS_ENDPOINT": f"http://127.0.0.1:{free_port()}", "DRBROKER_COS_BUCKET": "dr-evidence",
           "DRBROKER_COS_ACCESS_KEY_ID": "test-key", "DRBROKER_COS_SECRET_ACCESS_KEY": "test-secret-key",
           "DRBROKER_COS_EXPORT_SECONDS": "0.2"}
    broker, _c, _ = _scenario(broker_factory, client_for, db_path, **cos)
    failing = ("drbroker_cos_export_failing", (("stream", "events"),))
    # failing, but only seconds behind: no alert yet
    healthy = wait_until(lambda: (text := states.scrape(broker)) and promtool.samples(text)[failing] == 1 and text,
                         60, "the export failing against the closed port")
    states.backdate_events(db_path, 3600)  # the events written an hour ago are still not in COS
    bad = states.scrape(broker)
    promtool.check(tmp_path, [(healthy, HEALTHY_MINUTES), (bad, BAD_MINUTES)],
                   {"DrBrokerEvidenceExportLagging": [{"stream": "events"}]})
