"""The delivery outbox (table ``outbox``): claiming due rows with a lease, recording each attempt's outcome,
and what an operator sees and retries.

A row is ``pending`` until a process claims it (``sending``, with ``lease_owner``/``lease_until`` and one
more attempt counted), then ``sent``, ``pending`` again with ``next_attempt_at`` pushed out by the back-off,
or ``dead`` after ``DRBROKER_NOTIFY_MAX_ATTEMPTS`` attempts. A ``sending`` row whose lease ran out (its
process died mid-send) is due again: delivery is at least once, and a receiver drops duplicates by
``webhook-id``. Every transition is a guarded UPDATE checked by its row count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update
from tenacity import RetryCallState, wait_exponential, wait_random

from broker.store.repository import Store
from broker.store.tables import outbox

PENDING, SENDING, SENT, DEAD = "pending", "sending", "sent", "dead"
STATES = (PENDING, SENDING, SENT, DEAD)


def backoff(initial: float, cap: float) -> Callable[[int], float]:
    """Seconds to wait after the n-th failed attempt: ``initial`` doubling up to ``cap``, plus up to
    ``initial`` of jitter (tenacity's strategy, computed here and stored in the row, so it survives)."""
    wait = wait_exponential(multiplier=initial, max=cap, exp_base=2) + wait_random(0, initial)

    def seconds(attempt: int) -> float:
        state = RetryCallState(None, None, (), {})
        state.attempt_number = max(1, attempt)
        return min(cap, float(wait(state)))

    return seconds


def _due(now: float) -> Any:
    return or_(and_(outbox.c.state == PENDING, outbox.c.next_attempt_at <= now),
               and_(outbox.c.state == SENDING, outbox.c.lease_until < now))


def claim(store: Store, owner: str, *, now: float, lease: float, limit: int) -> list[dict[str, Any]]:
    """Take up to ``limit`` due rows for ``owner``; each returned row has its new ``attempts``."""
    with store.write() as tx:
        stmt = select(outbox).where(_due(now)).order_by(outbox.c.next_attempt_at).limit(limit)
        if tx.conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        claimed = []
        for row in tx.conn.execute(stmt).all():
            r = dict(row._mapping)
            done = tx.conn.execute(
                update(outbox).where(outbox.c.id == r["id"], outbox.c.state == r["state"],
                                     outbox.c.attempts == r["attempts"])
                .values(state=SENDING, lease_owner=owner, lease_until=now + lease, attempts=r["attempts"] + 1))
            if done.rowcount == 1:
                claimed.append({**r, "state": SENDING, "attempts": r["attempts"] + 1, "lease_owner": owner})
        return claimed


def _finish(store: Store, row_id: str, owner: str, **values: Any) -> bool:
    with store.write() as tx:
        return tx.conn.execute(update(outbox).where(outbox.c.id == row_id, outbox.c.state == SENDING,
                                                    outbox.c.lease_owner == owner)
                               .values(lease_owner=None, lease_until=None, **values)).rowcount == 1


def mark_sent(store: Store, row: dict[str, Any], *, now: float) -> bool:
    return _finish(store, row["id"], row["lease_owner"], state=SENT, sent_at=now, last_error=None)


def mark_failed(store: Store, row: dict[str, Any], error: str, *, now: float, max_attempts: int,
                wait: Callable[[int], float], permanent: bool = False) -> str:
    """Schedule the next attempt, or bury the row; returns the new state."""
    if permanent or row["attempts"] >= max_attempts:
        reason = error if permanent else f"{error} (gave up after {row['attempts']} attempts)"
        _finish(store, row["id"], row["lease_owner"], state=DEAD, last_error=reason[:1000])
        return DEAD
    _finish(store, row["id"], row["lease_owner"], state=PENDING, last_error=error[:1000],
            next_attempt_at=now + wait(row["attempts"]))
    return PENDING


def list_rows(conn: Connection, *, state: str | None = None, instance_id: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
    stmt = select(outbox).order_by(outbox.c.created_at.desc(), outbox.c.event_seq.desc()).limit(limit)
    if state:
        stmt = stmt.where(outbox.c.state == state)
    if instance_id:
        stmt = stmt.where(outbox.c.instance_id == instance_id)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def retry(store: Store, row_id: str, *, now: float) -> bool:
    """A dead row back to pending with its attempts reset (after the receiver is fixed)."""
    with store.write() as tx:
        return tx.conn.execute(update(outbox).where(outbox.c.id == row_id, outbox.c.state == DEAD)
                               .values(state=PENDING, attempts=0, next_attempt_at=now, last_error=None)
                               ).rowcount == 1


def stats(conn: Connection) -> dict[str, Any]:
    """Rows by state and the creation time of the oldest row not yet sent (pending or sending)."""
    counts = {s: 0 for s in STATES}
    counts.update(dict(conn.execute(select(outbox.c.state, func.count()).group_by(outbox.c.state)).all()))
    oldest = conn.execute(select(func.min(outbox.c.created_at))
                          .where(outbox.c.state.in_((PENDING, SENDING)))).scalar()
    return {"by_state": counts, "oldest_unsent_at": oldest}
