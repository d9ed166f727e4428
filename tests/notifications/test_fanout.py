"""Fan-out: the event log after the cursor becomes one outbox row per event and destination, once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from sqlalchemy import func, select

from broker.notifications import fanout
from broker.notifications.config import NotifyConfig
from broker.store.tables import outbox
from tests.conftest import GRS_PARAMS, OSB
from tests.notifications.conftest import Clock, record_event
from tests.notifications.helpers import SECRET

A = "https://a.example.com/hook"
B = "https://b.example.com/hook"
EN_ENV = {"DRBROKER_EVENT_NOTIFICATIONS_URL": "https://en.example.com", "DRBROKER_EVENT_NOTIFICATIONS_INSTANCE_ID":
          "en-1", "DRBROKER_EVENT_NOTIFICATIONS_APIKEY": "k", "DRBROKER_EVENT_NOTIFICATIONS_SOURCE_ID": "src-1"}


def _rows(store) -> set[tuple[int, str, str]]:
    with store.engine.connect() as conn:
        return {(r.event_seq, r.channel, r.target) for r in conn.execute(select(outbox))}


def _subscribe(osb: OSB, iid: str) -> None:
    osb.ready(iid, params={**GRS_PARAMS, "notification_emails": ["sre@example.com", "dr@example.com"],
                           "webhooks": [{"url": A, "secret": SECRET, "event_types": ["rehearsal.*"]},
                                        {"url": B, "secret": SECRET}]})


def test_each_event_goes_to_the_destinations_that_select_it(osb: OSB, worker, clock: Clock) -> None:
    _subscribe(osb, "i-fan")
    store = worker.store
    with store.engine.connect() as conn:
        head = fanout.head_seq(conn)
    passed = record_event(store, "rehearsal.passed", "i-fan", at=clock.now)        # info, A selects rehearsal.*
    failed = record_event(store, "rehearsal.failed", "i-fan", at=clock.now)        # critical
    other = record_event(store, "rehearsal.failed", "i-other", at=clock.now)       # no subscription
    broker_wide = record_event(store, "key.rotated", None, at=clock.now)           # info, no instance
    config = NotifyConfig.from_env({**EN_ENV, "DRBROKER_SMTP_HOST": "127.0.0.1", "DRBROKER_SMTP_FROM": "b@x.io",
                                    "DRBROKER_EVENT_NOTIFICATIONS_EVENT_TYPES": "rehearsal.failed,key.*"})
    assert fanout.fan_out(store, config, now=clock.now) == 4 + head  # the provision's own events too
    assert _rows(store) == {
        (passed["seq"], "webhook", A),
        (failed["seq"], "webhook", A), (failed["seq"], "webhook", B),  # B: the default, warning and critical
        (failed["seq"], "email", "sre@example.com"), (failed["seq"], "email", "dr@example.com"),
        (failed["seq"], "event_notifications", "en-1"), (other["seq"], "event_notifications", "en-1"),
        (broker_wide["seq"], "event_notifications", "en-1"),
    }
    with store.engine.connect() as conn:
        assert fanout.lag(conn) == 0


def test_no_email_rows_without_an_email_transport(osb: OSB, worker, clock: Clock) -> None:
    _subscribe(osb, "i-nomail")
    failed = record_event(worker.store, "rehearsal.failed", "i-nomail", at=clock.now)
    fanout.fan_out(worker.store, NotifyConfig.from_env({}), now=clock.now)
    assert {r for r in _rows(worker.store) if r[0] == failed["seq"]} == {
        (failed["seq"], "webhook", A), (failed["seq"], "webhook", B)}


def test_a_second_run_writes_nothing_and_the_cursor_only_moves_forward(osb: OSB, worker, clock: Clock) -> None:
    _subscribe(osb, "i-twice")
    store, config = worker.store, NotifyConfig.from_env({})
    record_event(store, "rehearsal.failed", "i-twice", at=clock.now)
    fanout.fan_out(store, config, now=clock.now)
    first = _rows(store)
    assert first
    assert fanout.fan_out(store, config, now=clock.now) == 0
    assert _rows(store) == first
    later = record_event(store, "failover.started", "i-twice", at=clock.now)
    assert fanout.fan_out(store, config, now=clock.now) == 1
    assert _rows(store) - first == {(later["seq"], "webhook", B)}


def test_a_batch_fanned_out_again_after_a_lost_cursor_write_adds_no_duplicate(osb: OSB, worker,
                                                                              clock: Clock) -> None:
    """At least once: a process that wrote the rows but whose cursor was set back (a crash, a restored
    backup) writes the same deliveries again, and the unique index keeps one of each."""
    _subscribe(osb, "i-again")
    store, config = worker.store, NotifyConfig.from_env({})
    record_event(store, "rehearsal.failed", "i-again", at=clock.now)
    fanout.fan_out(store, config, now=clock.now)
    first = _rows(store)
    with store.write() as tx:
        tx.conn.execute(fanout.export_cursors.update().values(last_seq=0))
    assert fanout.fan_out(store, config, now=clock.now) > 0
    assert _rows(store) == first
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(outbox)).scalar() == len(first)


SCRIPT = textwrap.dedent("""
    import sys, time
    from broker.app import make_envelope
    from broker.config import Settings
    from broker.notifications import fanout
    from broker.notifications.config import NotifyConfig
    from broker.store import db
    from broker.store.repository import Store

    settings = Settings.from_env(env={{}}, database_url=sys.argv[1], state_directory=sys.argv[2])
    store = Store(db.make_engine(settings.database_url), sealer=make_envelope(settings))
    config = NotifyConfig.from_env({{"DRBROKER_NOTIFY_BATCH": "3"}})
    print("ready", flush=True)
    sys.stdin.readline()  # both start together
    covered = 0
    while True:
        n = fanout.fan_out(store, config, now=time.time())
        covered += n
        with store.engine.connect() as conn:
            if fanout.lag(conn) == 0:
                break
    print(covered, flush=True)
""")


def test_two_processes_fanning_out_one_database_write_each_delivery_once(osb: OSB, worker, clock: Clock,
                                                                         tmp_path: Path) -> None:
    _subscribe(osb, "i-two")
    store = worker.store
    seqs = [record_event(store, "rehearsal.failed", "i-two", at=clock.now)["seq"] for _ in range(60)]
    url = worker.settings.database_url
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT.format(), url, str(worker.settings.state_dir)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    covered = [int(o[0].strip()) for o in outs]
    with store.engine.connect() as conn:
        assert fanout.cursor(conn) == fanout.head_seq(conn)
        rows = conn.execute(select(outbox.c.event_seq, outbox.c.channel, outbox.c.target)).all()
    expected = {(s, "webhook", t) for s in seqs for t in (A, B)}
    assert len(rows) == len(set(rows))
    assert expected <= set(rows)
    # between them they covered every event exactly once: a batch the other process wrote first is not counted
    with store.engine.connect() as conn:
        assert sum(covered) == fanout.head_seq(conn)


def test_on_both_databases_each_due_row_is_claimed_by_one_owner(db_url: str, tmp_path: Path) -> None:
    import threading

    from broker.app import build_runtime
    from broker.notifications import outbox as deliveries
    from tests.conftest import make_settings

    rt = build_runtime(make_settings(tmp_path, database_url=db_url))
    try:
        clock = Clock()
        for _ in range(40):
            record_event(rt.store, "rehearsal.failed", None, at=clock.now)
        config = NotifyConfig.from_env({**EN_ENV, "DRBROKER_NOTIFY_BATCH": "1000"})
        assert fanout.fan_out(rt.store, config, now=clock.now) == 40
        claimed: dict[str, list[str]] = {"a": [], "b": []}
        barrier = threading.Barrier(2)

        def take(owner: str) -> None:
            barrier.wait()
            while rows := deliveries.claim(rt.store, owner, now=clock.now, lease=60, limit=3):
                claimed[owner] += [r["id"] for r in rows]

        threads = [threading.Thread(target=take, args=(o,)) for o in claimed]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        everything = claimed["a"] + claimed["b"]
        assert len(everything) == len(set(everything)) == 40
        with rt.store.engine.connect() as conn:
            owners = dict(conn.execute(select(outbox.c.lease_owner, func.count()).group_by(outbox.c.lease_owner)).all())
        assert sum(owners.values()) == 40 and set(owners) <= {"a", "b"}
    finally:
        rt.worker.stop(timeout=10)
        rt.store.engine.dispose()
