"""DR events from what the RPO sampler sees each round: ``replication.state_changed``, ``rpo.breached`` /
``rpo.recovered`` and ``instance.not_protected`` / ``instance.protected``.

What was last seen of an instance is kept durably in its ``dr_state["observed"]`` (replication state, whether
the RPO was over target, whether it was protected). An instance with none yet is taken to be as a finished
provision leaves it (``BASELINE``: replication ``consistent_copying``, RPO within target, protected), so a
healthy instance costs no write. A change is written as a compare-and-set inside one write transaction with
its events: the changed rows are read again under the writer lock (``BEGIN IMMEDIATE``; ``FOR UPDATE`` on
PostgreSQL, in id order) and each is updated only if its ``observed`` is still what this round read. Two
processes sampling the same change therefore record it once, and a restarted process finds what was seen and
emits nothing again.

"Protected" is ``broker.services.protection.assess`` saying ``protected`` or ``rehearsing``; ``degraded``
(RPO over target, secondary not consistent yet, unknown state) and ``not protected`` are not. The RPO is
judged only while replication copies (as ``assess`` does): when it stops, the breach flag keeps its last
value and ``instance.not_protected`` says what happened.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, select, update

from broker.domain.models import Instance, InstanceState
from broker.domain.protocols import ReplicationStatus
from broker.events.log import DrEvent, record_many
from broker.services.protection import ProtectionStatus, assess, seconds_text
from broker.store.repository import Store
from broker.store.tables import instances

OBSERVED = "observed"
BASELINE: Mapping[str, Any] = {"replication_state": "consistent_copying", "rpo_breached": False, "protected": True}
_PROTECTED = (ProtectionStatus.PROTECTED, ProtectionStatus.REHEARSING)
_SET_DR_STATE = (update(instances).where(instances.c.id == bindparam("k_id"))
                 .values(dr_state=bindparam("dr_state")))


def _target(inst: Instance) -> float | None:
    minutes = inst.parameters.get("rpo_target_minutes")
    return float(minutes) * 60 if minutes else None


def observe(inst: Instance, status: ReplicationStatus, now: float,
            last: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What is seen now (to store) and the facts the events report."""
    protection = assess(inst, status, now, None)
    target = _target(inst)
    breached = last["rpo_breached"]
    if protection.replicating and protection.achieved_rpo_seconds is not None:
        breached = target is not None and protection.achieved_rpo_seconds > target
    seen = {"replication_state": status.state, "rpo_breached": bool(breached),
            "protected": protection.status in _PROTECTED}
    facts = {"status": protection.status.value, "reason": protection.reason,
             "achieved_rpo_seconds": protection.achieved_rpo_seconds, "rpo_target_seconds": target,
             "consistency_group": status.consistency_group}
    return seen, facts


def events_for(iid: str, last: Mapping[str, Any], seen: Mapping[str, Any], facts: Mapping[str, Any]) -> list[DrEvent]:
    """The events of going from ``last`` to ``seen``: replication first, then RPO, then protection."""
    out: list[DrEvent] = []
    state = seen["replication_state"]
    if state != last["replication_state"]:
        out.append(DrEvent("replication.state_changed", iid, f"replication {last['replication_state']} -> {state}",
                           {"from": last["replication_state"], "to": state,
                            "consistency_group": facts["consistency_group"]}))
    rpo = {"achieved_rpo_seconds": facts["achieved_rpo_seconds"], "rpo_target_seconds": facts["rpo_target_seconds"],
           "replication_state": state}
    if seen["rpo_breached"] != last["rpo_breached"]:
        achieved, target = facts["achieved_rpo_seconds"], facts["rpo_target_seconds"]
        numbers = (f"{seconds_text(achieved)} against the target {seconds_text(target)}"
                   if achieved is not None and target is not None else "no RPO to compare")
        if seen["rpo_breached"]:
            out.append(DrEvent("rpo.breached", iid, f"achieved RPO over target: {numbers}", rpo))
        else:
            out.append(DrEvent("rpo.recovered", iid, f"achieved RPO within target again: {numbers}", rpo))
    if seen["protected"] != last["protected"]:
        data = {"status": facts["status"], "reason": facts["reason"], "replication_state": state}
        kind = "instance.protected" if seen["protected"] else "instance.not_protected"
        out.append(DrEvent(kind, iid, f"{facts['status']}: {facts['reason']}"[:300], data))
    return out


def record_changes(store: Store, page: Sequence[Instance], statuses: Mapping[str, ReplicationStatus],
                   now: float) -> int:
    """Record the events of a sampled page's changes in one write transaction; return how many were written.
    A healthy, unchanged page costs no statement."""
    changed = []
    for inst in page:
        status = statuses.get(inst.id)
        if status is None:
            continue
        stored = (inst.dr_state or {}).get(OBSERVED)
        last = {**BASELINE, **(stored or {})}
        seen, facts = observe(inst, status, now, last)
        if seen != last:
            changed.append((inst.id, stored, last, seen, facts))
    if not changed:
        return 0
    ids = [c[0] for c in changed]
    written: list[DrEvent] = []
    with store.write() as tx:
        # One locked read of the changed rows (FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE holds the
        # writer lock): each is written only if its ``observed`` is still what this round read.
        stmt = select(instances.c.id, instances.c.state, instances.c.dr_state).where(instances.c.id.in_(ids))
        if tx.conn.dialect.name == "postgresql":
            stmt = stmt.order_by(instances.c.id).with_for_update()
        now_rows = {r.id: (r.state, json.loads(r.dr_state or "{}")) for r in tx.conn.execute(stmt)}
        updates = []
        for iid, stored, last, seen, facts in changed:
            state, dr_state = now_rows.get(iid, (None, {}))
            if state != InstanceState.READY.value or dr_state.get(OBSERVED) != stored:
                continue  # another process recorded this change first (or the instance moved on)
            updates.append({"k_id": iid, "dr_state": json.dumps({**dr_state, OBSERVED: seen}, sort_keys=True)})
            written += events_for(iid, last, seen, facts)
        if updates:  # one executemany for the page, not a statement per instance
            tx.conn.execute(_SET_DR_STATE, updates)
        record_many(tx.conn, written, at=now)
    return len(written)
