"""Rotates the simulated Key Protect's root keys at their policy interval, as Key Protect does by itself.

Every serving process runs one (``PeriodicJob``), like the RPO sampler. A round rotates each active root key
whose newest version is at least ``rotation_interval_months`` months old (``SimKeyProtect.due_for_rotation``;
a month is ``DRBROKER_SIM_MONTH_SECONDS``, 30 days unless shortened). A key is rotated once per round however
many intervals passed while no broker ran, and the new version's age starts then, so a key advances one
version per interval, not more. The rotation is a compare-and-set on the key's row: two processes looking at
the same due key rotate it once. Old versions are kept, so data keys wrapped before still unwrap; new bindings
get the new version (``kms.key_version_id``). Each rotation records a ``key.rotated`` DR event for the key's
instance in the transaction that adds the version (key id and version id only, never key material).

On IBM Cloud nothing like this runs in the broker: Key Protect rotates a root key by the rotation policy set
when the key is created (``rotation.interval_month``) or changed by an update (``PUT /keys/{id}/policies``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Connection

from broker.domain.errors import PermanentBackendError
from broker.events.log import DrEvent, record
from broker.orchestrators.simulated.cloud import Resource
from broker.orchestrators.simulated.keyprotect import SimKeyProtect
from broker.workflows.periodic import PeriodicJob

log = logging.getLogger(__name__)


def check_interval(month_seconds: float) -> float:
    """How often a round runs: a simulated day (a thirtieth of a month), at most an hour, at least 0.2 s."""
    return max(0.2, min(3600.0, month_seconds / 30.0))


def _record_rotation(conn: Connection, key: Resource, version_id: str, now: float) -> None:
    months = key.data.get("rotation_interval_months")
    record(conn, DrEvent("key.rotated", key.instance_id, f"root key {key.id} rotated (policy: every {months} "
                         f"month(s)); new version {version_id}",
                         {"key_id": key.id, "version_id": version_id, "rotation_interval_months": months,
                          "by": "rotation policy"}), at=now)


class SimKeyRotation(PeriodicJob):
    thread_name = "drbroker-key-rotation"
    what = "simulated root key rotation"

    def __init__(self, kp: SimKeyProtect, *, interval: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(interval if interval is not None else check_interval(kp.month_seconds))
        self.kp = kp
        self.clock = clock

    def run_once(self) -> int:
        """Rotate every root key that is due; return how many were rotated."""
        now = self.clock()
        rotated = 0
        for key in self.kp.root_keys():
            if self.stopping:
                break
            if not self.kp.due_for_rotation(key, now):
                continue
            try:
                version = self.kp.rotate(key.id, now=now, if_due=True,
                                         also=lambda conn, vid, key=key: _record_rotation(conn, key, vid, now))
            except PermanentBackendError as exc:  # deleted or deactivated since it was listed
                log.info("simulated Key Protect: root key %s not rotated: %s", key.id, exc.description)
                continue
            if version is not None:
                rotated += 1
                log.info("simulated Key Protect: rotated root key %s of %s (every %s month(s)); new version %s",
                         key.id, key.instance_id, key.data.get("rotation_interval_months"), version)
        return rotated
