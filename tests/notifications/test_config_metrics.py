"""Settings that stop start-up naming the variable, and the notification metrics."""

from __future__ import annotations

import pytest

from broker.app import build_runtime
from broker.notifications import fanout, outbox
from broker.notifications.config import NotifyConfig
from tests.conftest import auth_header, make_settings
from tests.notifications.conftest import Clock, record_event


@pytest.mark.parametrize(("env", "named"), [
    ({"DRBROKER_NOTIFY_MAX_ATTEMPTS": "many"}, "DRBROKER_NOTIFY_MAX_ATTEMPTS='many' is not a number"),
    ({"DRBROKER_NOTIFY_MAX_ATTEMPTS": "0"}, "DRBROKER_NOTIFY_MAX_ATTEMPTS='0' must be between 1 and 100"),
    ({"DRBROKER_WEBHOOK_ALLOW_HTTP": "maybe"}, "DRBROKER_WEBHOOK_ALLOW_HTTP='maybe' must be true or false"),
    ({"DRBROKER_WEBHOOK_CA_FILE": "/nonexistent/ca.pem"}, "DRBROKER_WEBHOOK_CA_FILE='/nonexistent/ca.pem'"),
    ({"DRBROKER_SMTP_HOST": "smtp.example.com"}, "DRBROKER_SMTP_FROM must be"),
    ({"DRBROKER_SMTP_HOST": "h", "DRBROKER_SMTP_FROM": "a@b.c", "DRBROKER_SMTP_USERNAME": "u"},
     "DRBROKER_SMTP_USERNAME and DRBROKER_SMTP_PASSWORD go together"),
    ({"DRBROKER_EVENT_NOTIFICATIONS_URL": "https://en.example.com"},
     "DRBROKER_EVENT_NOTIFICATIONS_INSTANCE_ID, DRBROKER_EVENT_NOTIFICATIONS_APIKEY, "
     "DRBROKER_EVENT_NOTIFICATIONS_SOURCE_ID: needed"),
    ({"DRBROKER_EVENT_NOTIFICATIONS_URL": "http://en.example.com", "DRBROKER_EVENT_NOTIFICATIONS_INSTANCE_ID": "i",
      "DRBROKER_EVENT_NOTIFICATIONS_APIKEY": "k", "DRBROKER_EVENT_NOTIFICATIONS_SOURCE_ID": "s"},
     "must be an https:// URL"),
    ({"DRBROKER_NOTIFY_EMAIL_VIA": "smtp"}, "DRBROKER_NOTIFY_EMAIL_VIA=smtp needs DRBROKER_SMTP_HOST"),
    ({"DRBROKER_NOTIFY_EMAIL_VIA": "pigeon"}, "DRBROKER_NOTIFY_EMAIL_VIA='pigeon' must be"),
])
def test_a_bad_setting_stops_start_up_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SystemExit, match=named.replace("(", r"\(").replace("?", r"\?")):
        NotifyConfig.from_env(env)


def test_a_bad_event_type_setting_names_the_item() -> None:
    env = {"DRBROKER_EVENT_NOTIFICATIONS_URL": "https://en.example.com", "DRBROKER_EVENT_NOTIFICATIONS_INSTANCE_ID":
           "i", "DRBROKER_EVENT_NOTIFICATIONS_APIKEY": "k", "DRBROKER_EVENT_NOTIFICATIONS_SOURCE_ID": "s",
           "DRBROKER_EVENT_NOTIFICATIONS_EVENT_TYPES": "rehearsal.*,rehersal.failed"}
    with pytest.raises(SystemExit, match=r"DRBROKER_EVENT_NOTIFICATIONS_EVENT_TYPES: \[1\]: 'rehersal.failed'"):
        NotifyConfig.from_env(env)


def test_notifications_can_be_switched_off(tmp_path) -> None:
    rt = build_runtime(make_settings(tmp_path, evidence_env={"DRBROKER_NOTIFY_ENABLED": "false"}))
    try:
        assert "notifications" not in [getattr(j, "job_name", "") for j in rt.jobs]
    finally:
        rt.store.engine.dispose()


def _metric(client, name: str) -> str:
    text = client.get("/metrics", headers={"Authorization": auth_header()}).get_data(as_text=True)
    return next(line for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))


def test_the_metrics_show_fanout_lag_and_the_age_of_the_oldest_unsent_delivery(runtime, client) -> None:
    clock = Clock(runtime.service.clock() - 120)
    for _ in range(3):
        record_event(runtime.store, "rehearsal.failed", None, at=clock.now)
    assert _metric(client, "drbroker_notifications_fanout_lag_events").endswith(" 3.0")
    assert _metric(client, "drbroker_notifications_oldest_unsent_seconds").endswith(" 0.0")
    config = NotifyConfig.from_env({"DRBROKER_EVENT_NOTIFICATIONS_URL": "https://en.example.com",
                                    "DRBROKER_EVENT_NOTIFICATIONS_INSTANCE_ID": "en", "DRBROKER_EVENT_NOTIFICATIONS_"
                                    "APIKEY": "k", "DRBROKER_EVENT_NOTIFICATIONS_SOURCE_ID": "s",
                                    "DRBROKER_NOTIFY_BATCH": "2"})
    assert fanout.fan_out(runtime.store, config, now=clock.now) == 2
    assert _metric(client, "drbroker_notifications_fanout_lag_events").endswith(" 1.0")
    assert _metric(client, 'drbroker_notifications_outbox{state="pending"}').endswith(" 2.0")
    age = float(_metric(client, "drbroker_notifications_oldest_unsent_seconds").split()[-1])
    assert 119 <= age < 600
    for row in outbox.claim(runtime.store, "me", now=clock.now, lease=30, limit=10):
        outbox.mark_sent(runtime.store, row, now=clock.now)
    assert _metric(client, "drbroker_notifications_oldest_unsent_seconds").endswith(" 0.0")
    assert _metric(client, 'drbroker_notifications_outbox{state="sent"}').endswith(" 2.0")


def test_the_cli_lists_deliveries_and_retries_only_dead_ones(runtime) -> None:
    from click.testing import CliRunner

    from broker.cli import main

    clock = Clock(runtime.service.clock())
    record_event(runtime.store, "rehearsal.failed", None, at=clock.now)
    config = NotifyConfig.from_env({"DRBROKER_EVENT_NOTIFICATIONS_URL": "https://en.example.com",
                                    "DRBROKER_EVENT_NOTIFICATIONS_INSTANCE_ID": "en", "DRBROKER_EVENT_NOTIFICATIONS_"
                                    "APIKEY": "k", "DRBROKER_EVENT_NOTIFICATIONS_SOURCE_ID": "s"})
    fanout.fan_out(runtime.store, config, now=clock.now)
    (row,) = outbox.claim(runtime.store, "me", now=clock.now, lease=30, limit=10)
    outbox.mark_failed(runtime.store, row, "HTTP 500", now=clock.now, max_attempts=1, wait=lambda n: 1.0)
    env = {"DRBROKER_DATABASE_URL": runtime.settings.database_url}
    listed = CliRunner().invoke(main, ["notifications", "list", "--state", "dead"], env=env)
    assert listed.exit_code == 0 and row["id"] in listed.output and "HTTP 500 (gave up after 1 attempts)" in \
        listed.output
    refused = CliRunner().invoke(main, ["notifications", "retry", "no-such-delivery"], env=env)
    assert refused.exit_code == 1
    assert refused.output.strip() == "Error: no dead delivery no-such-delivery (only dead deliveries can be retried)"
    assert CliRunner().invoke(main, ["notifications", "retry", row["id"]], env=env).exit_code == 0
    with runtime.store.engine.connect() as conn:
        assert outbox.list_rows(conn)[0]["state"] == "pending"
