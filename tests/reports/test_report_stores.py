"""The same report from SQLite and PostgreSQL: the queries (samples, events by instance, schedules) run on both."""

from __future__ import annotations

import time
from pathlib import Path

from broker.app import build_runtime, create_app
from broker.reports.build import Scope
from tests.conftest import KSYS_PARAMS, KSYS_PLAN, OSB, SERVICE_ID, make_settings
from tests.reports.conftest import DAY, add_event, add_samples, report


def test_the_report_reads_the_same_on_both_stores(db_url: str, tmp_path: Path) -> None:
    rt = build_runtime(make_settings(tmp_path, database_url=db_url))
    rt.worker.start()
    try:
        osb = OSB(create_app(runtime=rt).test_client())
        osb.ready("st-1", KSYS_PLAN, KSYS_PARAMS)
        r = osb.patch("/v2/service_instances/st-1?accepts_incomplete=true",
                      {"service_id": SERVICE_ID, "parameters": {"dr_action": {"type": "test_failover"}}})
        assert r.status_code == 202 and osb.wait("st-1")["state"] == "succeeded"
        now = time.time()
        add_samples(rt, "st-1", [(now - 120, 10.0, "consistent_copying"), (now - 60, 5000.0, "consistent_copying")])
        add_event(rt, "rehearsal.skipped", "st-1", now - 30, data={"reason": "busy", "scheduled": True})
        inst = report(rt, Scope("all"), now - DAY, now + 1, now=now).instances[0]
        assert [h.outcome for h in inst.rehearsals] == ["skipped", "passed"]  # by time: the skip is older
        assert inst.rehearsals[1].rto_met is True
        assert (inst.rpo.samples, inst.rpo.within_target, inst.rpo.breach_minutes) == (2, 1, 1.0)
        assert [k.code for k in inst.risks] == ["test_failover_active"]
    finally:
        rt.worker.stop(timeout=10)
        rt.store.engine.dispose()
