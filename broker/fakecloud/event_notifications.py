"""The fake Event Notifications API: ``send_notifications`` only, the call the broker makes.

Its shapes come from IBM's generated Python SDK as installed (``ibm-eventnotifications``, read by
``contracts/sdk.py``): ``POST /v1/instances/{instance_id}/notifications`` with a ``NotificationCreate`` body,
answered ``202`` with a ``NotificationResponse``. The path and fields agree with IBM's SDK sources
(IBM/event-notifications-python-admin-sdk ibm_eventnotifications/event_notifications_v1.py at
781df69be73d274818369d25af15745ba97d866c; the Go, Java and Node SDKs use the same path). The recorder holds
every exchange to those shapes; this module adds the checks the model's docstrings state in words: the
CloudEvents ``specversion`` 1.0, and ``ibmenmailto`` as a stringified JSON array of at most 50 addresses.

Not IBM's: ``GET /_fake/event-notifications`` lists what was accepted (for tests), newest last.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import Flask, jsonify

from broker.fakecloud.common import json_body
from broker.fakecloud.state import FakeError, FakeState

MAX_MAILTO = 50


def register(app: Flask, S: FakeState) -> None:
    """Add this service's routes to the fake's ``app``, serving from ``S``."""
    sent: list[dict[str, Any]] = []
    S.event_notifications = sent  # type: ignore[attr-defined]

    @app.post("/v1/instances/<instance_id>/notifications")
    def en_send(instance_id: str) -> Any:
        body = json_body()
        if body.get("specversion") != "1.0":
            raise FakeError(400, "invalid_specversion", "specversion: must be 1.0 (CloudEvents)")
        if body.get("ibmenmailto") is not None:
            try:
                mailto = json.loads(body["ibmenmailto"])
            except (TypeError, ValueError):
                mailto = None
            if not isinstance(mailto, list) or not all(isinstance(a, str) and "@" in a for a in mailto):
                raise FakeError(400, "invalid_ibmenmailto", "ibmenmailto: a stringified JSON array of e-mail "
                                                            "addresses")
            if len(mailto) > MAX_MAILTO:
                raise FakeError(400, "invalid_ibmenmailto", f"ibmenmailto: at most {MAX_MAILTO} addresses")
        notification_id = str(uuid.uuid4())
        sent.append({"instance_id": instance_id, "notification_id": notification_id, "body": body})
        del sent[:-1000]
        return jsonify({"notification_id": notification_id}), 202

    @app.get("/_fake/event-notifications")
    def en_sent() -> Any:
        return jsonify({"notifications": list(sent)})
