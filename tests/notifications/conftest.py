"""Fixtures of the notification tests: a private CA, an HTTPS receiver, an SMTP server, and a way to record
DR events and run the notifications job with a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from broker.config import Settings
from broker.events.log import DrEvent, record
from broker.notifications.config import NotifyConfig
from broker.notifications.job import NotificationJob
from tests.conftest import make_settings
from tests.notifications.helpers import Mailbox, Receiver, Tls, free_port, make_tls


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The shared runtime's settings, with webhooks to internal addresses allowed: the receivers of these tests
    listen on 127.0.0.1 (``test_parameters`` checks the refusal without it)."""
    return make_settings(tmp_path, evidence_env={"DRBROKER_WEBHOOK_ALLOW_PRIVATE": "true"})


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def receiver(tls: Tls) -> Iterator[Receiver]:
    r = Receiver(tls)
    yield r
    r.stop()


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Mailbox]]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, box
    controller.stop()


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def record_event(store: Any, type_: str, instance_id: str | None, *, at: float, summary: str = "",
                 data: dict[str, Any] | None = None) -> dict[str, Any]:
    with store.write() as tx:
        return record(tx.conn, DrEvent(type_, instance_id, summary or f"{type_} happened", data or {}), at=at)


def job_for(runtime: Any, clock: Clock, **env: str) -> NotificationJob:
    # the test receivers listen on 127.0.0.1, an internal address the broker refuses by default
    config = NotifyConfig.from_env({"DRBROKER_NOTIFY_BACKOFF_SECONDS": "10", "DRBROKER_WEBHOOK_ALLOW_PRIVATE": "true",
                                    **env})
    return NotificationJob(runtime.store, config, clock=clock)
