"""IBM Cloud Event Notifications as a destination, through IBM's SDK (``ibm-eventnotifications``):
``send_notifications`` (``POST /v1/instances/{instance_id}/notifications``) with a ``NotificationCreate``,
authenticated by an IAM token for ``DRBROKER_EVENT_NOTIFICATIONS_APIKEY``. Event Notifications then routes
the notification to its own destinations (e-mail, Slack, PagerDuty, ...) by the rules of its topics; with
``ibmenmailto`` it also e-mails the instance's ``notification_emails`` (``DRBROKER_NOTIFY_EMAIL_VIA``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from ibm_eventnotifications.event_notifications_v1 import EventNotificationsV1, NotificationCreate

from broker.notifications import cloudevent
from broker.notifications.config import EventNotificationsConfig
from broker.notifications.errors import DeliveryFailed


def notification(event: Mapping[str, Any], config: EventNotificationsConfig, source: str, *,
                 mailto: list[str] | None = None) -> NotificationCreate:
    ce = cloudevent.cloudevent(event, source)
    extra: dict[str, Any] = {}
    if mailto:
        # Event Notifications takes the addresses as a stringified JSON array (its model's words)
        extra.update(ibmenmailto=json.dumps(mailto), ibmensubject=cloudevent.subject_line(event))
    return NotificationCreate(
        specversion="1.0", id=ce["id"], source=ce["source"], type=ce["type"],
        time=datetime.fromtimestamp(float(event["at"]), UTC), ibmenseverity=event["severity"].upper(),
        ibmensourceid=config.source_id, ibmendefaultshort=cloudevent.subject_line(event),
        ibmendefaultlong=cloudevent.text(event), subject=ce.get("subject"), data=ce["data"],
        datacontenttype="application/json", **extra)


class EventNotificationsSender:
    def __init__(self, config: EventNotificationsConfig, source: str) -> None:
        self.config = config
        self.source = source
        try:
            authenticator = IAMAuthenticator(config.apikey, url=config.iam_url)
        except ValueError:  # the SDK refuses a key with braces or quotes: a start-up error, not a traceback
            raise SystemExit("DRBROKER_EVENT_NOTIFICATIONS_APIKEY is not an API key") from None
        self.service = EventNotificationsV1(authenticator=authenticator)
        self.service.set_service_url(config.url)
        self.service.set_http_config({"timeout": config.timeout})
        self.service.set_disable_ssl_verification(False)

    def send(self, event: Mapping[str, Any], *, mailto: list[str] | None = None) -> str | None:
        """Send one notification; return its ``notification_id``."""
        try:
            response = self.service.send_notifications(
                self.config.instance_id, body=notification(event, self.config, self.source, mailto=mailto))
        except ApiException as exc:
            # 4xx other than throttling means the request itself is wrong: a retry sends the same
            status = exc.status_code
            permanent = 400 <= status < 500 and status not in (401, 408, 409, 429)
            raise DeliveryFailed(f"Event Notifications HTTP {status}", permanent=permanent) from None
        except Exception as exc:  # the SDK's transport errors (requests' and the IAM token call's)
            raise DeliveryFailed(f"Event Notifications unreachable: {type(exc).__name__}") from None
        result = response.get_result() or {}
        return result.get("notification_id") if isinstance(result, dict) else None
