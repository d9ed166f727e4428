"""Notification gauges of ``/metrics``, read at scrape time from the outbox and the event log.

``drbroker_notifications_outbox{state}`` counts deliveries by state (a growing ``dead`` count needs an SRE:
``drbroker notifications list --state dead``); ``..._oldest_unsent_seconds`` is the outbox lag (age of the
oldest delivery not yet sent, 0 when none waits); ``..._fanout_lag_events`` the events recorded but not yet
turned into deliveries. Labels are bounded: ``state`` is one of four values.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from broker.notifications import fanout, outbox


class NotificationsCollector(Collector):
    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.runtime.service.clock()
        with self.runtime.store.engine.connect() as conn:
            stats = outbox.stats(conn)
            lag = fanout.lag(conn)
        by_state = GaugeMetricFamily("drbroker_notifications_outbox", "Notification deliveries by state "
                                     "(pending, sending, sent, dead)", labels=["state"])
        for state in outbox.STATES:
            by_state.add_metric([state], stats["by_state"].get(state, 0))
        yield by_state
        oldest = stats["oldest_unsent_at"]
        yield GaugeMetricFamily("drbroker_notifications_oldest_unsent_seconds",
                                "Age of the oldest notification delivery not yet sent (0: none waiting)",
                                value=max(0.0, now - oldest) if oldest else 0.0)
        yield GaugeMetricFamily("drbroker_notifications_fanout_lag_events",
                                "DR events recorded but not yet fanned out to their subscribers", value=lag)
