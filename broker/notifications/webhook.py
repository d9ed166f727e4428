"""Webhook deliveries: one signed CloudEvent per POST over HTTPS, verified against the system's CAs (or
``DRBROKER_WEBHOOK_CA_FILE``), with a timeout, no redirect followed, and the answer's body never read."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

from broker.notifications import cloudevent, signing
from broker.notifications.config import NotifyConfig
from broker.notifications.errors import DeliveryFailed
from broker.notifications.selection import internal_address_problem, url_problem


class WebhookSender:
    def __init__(self, config: NotifyConfig) -> None:
        self.config = config
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy or netrc from the environment: the URL is the customer's

    def send(self, url: str, secret: str | None, event: Mapping[str, Any], *, now: float) -> None:
        if not secret:
            raise DeliveryFailed("the instance no longer subscribes this URL", permanent=True)
        problem = url_problem(url, allow_http=self.config.webhook_allow_http,
                              allow_private=self.config.webhook_allow_private)
        if problem:
            raise DeliveryFailed(f"url {problem}", permanent=True)
        if urlsplit(url).scheme == "https":
            self._check_resolution(url)
        payload = cloudevent.body(event, self.config.source)
        headers = {"Content-Type": cloudevent.CONTENT_TYPE, "User-Agent": "powervs-dr-broker",
                   **signing.sign(secret, event["id"], payload, now=now)}
        try:
            with self.session.post(url, data=payload, headers=headers, timeout=self.config.webhook_timeout,
                                   allow_redirects=False, stream=True,
                                   verify=self.config.webhook_ca_file or True) as response:
                status = response.status_code
        except requests.exceptions.SSLError:
            raise DeliveryFailed("TLS: the receiver's certificate did not verify") from None
        except requests.Timeout:
            raise DeliveryFailed(f"no answer within {self.config.webhook_timeout:g} s") from None
        except requests.RequestException as exc:
            raise DeliveryFailed(f"connection failed: {type(exc).__name__}") from None
        if 300 <= status < 400:
            raise DeliveryFailed(f"HTTP {status}: redirects are not followed")
        if not 200 <= status < 300:
            raise DeliveryFailed(f"HTTP {status}")

    def _check_resolution(self, url: str) -> None:
        # A name may resolve to an internal address (or be re-pointed at one later): checked at every delivery.
        # The connection resolves it again, so a name that changes between the two (DNS rebinding) is not
        # caught here; DRBROKER_WEBHOOK_ALLOW_PRIVATE=false plus an egress policy is the complete answer.
        parts = urlsplit(url)
        host = str(parts.hostname)
        try:
            infos = socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
        except OSError:
            raise DeliveryFailed(f"{host} does not resolve") from None
        problem = internal_address_problem(host, [str(info[4][0]) for info in infos],
                                           allow_private=self.config.webhook_allow_private)
        if problem:
            raise DeliveryFailed(problem, permanent=True)

    def close(self) -> None:
        self.session.close()
