"""The ``notifications`` job: fan out new DR events into the outbox, then deliver the due rows.

Every serving process runs it (``broker.jobs``); rows are claimed with leases, so any number of processes
deliver each row once per attempt. ``make_job`` returns None only when ``DRBROKER_NOTIFY_ENABLED=false``:
webhooks need no broker-side setting, so the job always has something it may deliver.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from broker.events.log import get_event
from broker.notifications import fanout, outbox
from broker.notifications.config import NotifyConfig
from broker.notifications.email import SmtpSender
from broker.notifications.errors import DeliveryFailed
from broker.notifications.event_notifications import EventNotificationsSender
from broker.notifications.selection import set_policy, webhook_secret
from broker.notifications.webhook import WebhookSender
from broker.security.redaction import redact
from broker.store.repository import Store
from broker.workflows.periodic import PeriodicJob
from broker.workflows.worker import new_owner_id

log = logging.getLogger(__name__)


class NotificationJob(PeriodicJob):
    job_name = "notifications"
    thread_name = "drbroker-notifications"
    what = "notification delivery"

    def __init__(self, store: Store, config: NotifyConfig, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(config.interval)
        self.store = store
        self.config = config
        self.clock = clock
        self.owner = new_owner_id()
        self.wait = outbox.backoff(config.backoff_initial, config.backoff_max)
        self.webhooks = WebhookSender(config)
        self.smtp = SmtpSender(config.smtp) if config.smtp else None
        self.en = (EventNotificationsSender(config.event_notifications, config.source)
                   if config.event_notifications else None)

    def run_once(self) -> dict[str, int]:
        summary: Counter[str] = Counter()
        while not self.stopping:
            covered = fanout.fan_out(self.store, self.config, now=self.clock())
            summary["events"] += covered
            if covered < self.config.batch:
                break
        summary.update(self.deliver_due())
        return dict(summary)

    def deliver_due(self) -> Counter[str]:
        """Claim and send the due rows, a batch at a time; counts by outcome (sent, retrying, dead)."""
        outcomes: Counter[str] = Counter()
        while not self.stopping:
            rows = outbox.claim(self.store, self.owner, now=self.clock(), lease=self.config.lease_seconds,
                                limit=self.config.batch)
            for row in rows:
                outcomes[self._deliver(row)] += 1
            if len(rows) < self.config.batch:
                break
        return outcomes

    def _deliver(self, row: dict[str, Any]) -> str:
        params, event = self._context(row)
        try:
            if event is None:
                raise DeliveryFailed("the event is no longer in the event log", permanent=True)
            self._send(row, event, params)
        except DeliveryFailed as exc:
            state = outbox.mark_failed(self.store, row, str(exc), now=self.clock(),
                                       max_attempts=self.config.max_attempts, wait=self.wait,
                                       permanent=exc.permanent)
            # the target may be a URL with a token in its query: the redaction drops what it recognises
            log.warning("notification %s (%s, event %s) attempt %d failed: %s; now %s", row["id"], row["channel"],
                        row["event_seq"], row["attempts"], exc, state)
            return "dead" if state == outbox.DEAD else "retrying"
        except Exception as exc:  # a bug must not stop the other deliveries; the row is retried
            log.exception("notification %s failed unexpectedly", row["id"])
            state = outbox.mark_failed(self.store, row, f"internal error: {type(exc).__name__}",
                                       now=self.clock(), max_attempts=self.config.max_attempts, wait=self.wait)
            return "dead" if state == outbox.DEAD else "retrying"
        outbox.mark_sent(self.store, row, now=self.clock())
        return "sent"

    def _context(self, row: Mapping[str, Any]) -> tuple[Mapping[str, Any], dict[str, Any] | None]:
        with self.store.read() as tx:
            event = get_event(tx.conn, row["event_seq"])
            inst = tx.get_instance(row["instance_id"]) if row.get("instance_id") else None
        return (inst.parameters if inst else {}), event

    def _send(self, row: Mapping[str, Any], event: dict[str, Any], params: Mapping[str, Any]) -> None:
        channel, target = row["channel"], row["target"]
        if channel == "webhook":
            secret = webhook_secret(params, target)
            try:
                self.webhooks.send(target, secret, event, now=self.clock())
            except DeliveryFailed as exc:
                raise DeliveryFailed(redact(str(exc), [secret] if secret else []), permanent=exc.permanent) \
                    from None
        elif channel == "email":
            if target not in (params.get("notification_emails") or ()):
                raise DeliveryFailed("the instance no longer lists this address", permanent=True)
            if self.config.email_via == "smtp" and self.smtp is not None:
                self.smtp.send(target, event)
            elif self.config.email_via == "event_notifications" and self.en is not None:
                self.en.send(event, mailto=[target])
            else:
                raise DeliveryFailed("no e-mail transport is configured (DRBROKER_SMTP_HOST or "
                                     "DRBROKER_NOTIFY_EMAIL_VIA)")
        elif channel == "event_notifications":
            if self.en is None:
                raise DeliveryFailed("Event Notifications is not configured (DRBROKER_EVENT_NOTIFICATIONS_URL)")
            self.en.send(event)
        else:
            raise DeliveryFailed(f"unknown channel {channel!r}", permanent=True)

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self.webhooks.close()


def make_job(runtime: Any) -> NotificationJob | None:
    settings = runtime.settings
    config = NotifyConfig.from_env(settings.evidence_env, public_url=settings.public_url,
                                   iam_url=getattr(settings, "iam_url", None) or "https://iam.cloud.ibm.com")
    set_policy(allow_http=config.webhook_allow_http, allow_private=config.webhook_allow_private)
    if not config.enabled:
        return None
    return NotificationJob(runtime.store, config, clock=runtime.service.clock)
