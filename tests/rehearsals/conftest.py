"""A broker runtime with its operation worker, OSB through the Flask app, and rehearsal schedulers whose clock
the test sets (the schedule rows and the operations live in the real database)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.app import Runtime, build_runtime, create_app
from broker.events.log import list_events
from broker.rehearsals import rows
from broker.rehearsals.scheduler import RehearsalScheduler
from tests.conftest import GRS_PARAMS, SERVICE_ID, grs_params, make_settings
from tests.e2e.conftest import broker_factory, client_for  # noqa: F401  (the real-process fixtures)
from tests.services.conftest import DR

EVERY_MINUTE = {"schedule": "* * * * *"}


class Clock:
    """Wall time plus an offset the test moves: the scheduler's "now"."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Rig(DR):
    def __init__(self, runtime: Runtime) -> None:
        super().__init__(create_app(runtime=runtime).test_client(), runtime)
        self.clock = Clock()

    def scheduler(self, runtime: Runtime | None = None) -> RehearsalScheduler:
        rt = runtime or self.runtime
        return RehearsalScheduler(rt.store, rt.service, interval=1.0, lease_seconds=30.0, clock=self.clock,
                                  audit=rt.audit, wake=rt.worker.wake)

    def ready_with(self, iid: str, n: int, rehearsal: dict[str, Any] | None = None, plan: str = "grs-async",
                   **params: Any) -> None:
        base = {**grs_params(n), **params}
        if rehearsal is not None:
            base["rehearsal"] = rehearsal
        self.ready_plan(iid, plan, self._plan_params(plan, base))

    @staticmethod
    def _plan_params(plan: str, base: dict[str, Any]) -> dict[str, Any]:
        from tests.services.conftest import params_for

        return params_for(plan, base)

    def row(self, iid: str) -> dict[str, Any] | None:
        with self.runtime.store.read() as tx:
            return rows.get(tx.conn, iid)

    def skipped(self, iid: str) -> list[dict[str, Any]]:
        with self.runtime.store.read() as tx:
            return list_events(tx.conn, instance_id=iid, types=["rehearsal.skipped"])

    def operations(self, iid: str) -> list[Any]:
        with self.runtime.store.read() as tx:
            return [o for o in tx.list_operations(instance_id=iid)
                    if (o.payload.get("dr_action") or {}).get("type") == "rehearsal"]

    def update(self, iid: str, parameters: dict[str, Any]) -> Any:
        return self.patch(f"/v2/service_instances/{iid}?accepts_incomplete=true",
                          {"service_id": SERVICE_ID, "parameters": parameters})

    def due_now(self, iid: str) -> None:
        """Move the clock just past the row's next due time."""
        row = self.row(iid)
        assert row is not None
        self.clock.offset = max(self.clock.offset, row["next_due_at"] - time.time() + 0.5)


@pytest.fixture
def rig_factory(tmp_path: Path, migrated_state_db: Path) -> Iterator[Callable[..., Rig]]:
    made: list[Runtime] = []

    def make(**settings: Any) -> Rig:
        rt = build_runtime(make_settings(tmp_path, **settings))
        made.append(rt)
        rt.worker.start()
        return Rig(rt)

    yield make
    for rt in made:
        rt.worker.stop(timeout=10)
        rt.store.engine.dispose()


@pytest.fixture
def rig(rig_factory: Callable[..., Rig]) -> Rig:
    return rig_factory()


__all__ = ["EVERY_MINUTE", "GRS_PARAMS", "Rig"]
