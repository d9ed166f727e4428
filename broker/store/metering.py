"""The ``metering_records`` table: one row per (instance, hour) of usage the broker reports to IBM.

The usage meter (``broker.orchestrators.ibmcloud.metering``) claims, updates and lists its rows only through
these functions, each inside a transaction the caller opened with ``Store.write()`` or ``Store.read()``, so
the orchestrators stay free of tables and SQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from broker.store.repository import Tx
from broker.store.tables import metering_records


def _key(instance_id: str, hour_start: int) -> Any:
    return and_(metering_records.c.instance_id == instance_id, metering_records.c.hour_start == hour_start)


def claim_hour(tx: Tx, *, instance_id: str, hour_start: int, plan_id: str, resource_instance_id: str, now: float,
               lease_until: float) -> bool:
    """Take the hour for sending: a new row (state ``sending``), or one whose sender's lease ran out."""
    key = _key(instance_id, hour_start)
    row = tx.conn.execute(select(metering_records.c.state).where(key)).first()
    if row is None:
        try:
            tx.conn.execute(insert(metering_records).values(
                instance_id=instance_id, hour_start=hour_start, plan_id=plan_id,
                resource_instance_id=resource_instance_id, state="sending", attempts=0,
                lease_until=lease_until, updated_at=now))
            return True
        except IntegrityError:
            return False
    # Taken over only when a sender's lease ran out (it died, or every retry failed).
    taken = tx.conn.execute(update(metering_records).where(and_(key, metering_records.c.state == "sending",
                            or_(metering_records.c.lease_until.is_(None),
                                metering_records.c.lease_until < now)))
                            .values(lease_until=lease_until, updated_at=now))
    return taken.rowcount == 1


def update_record(tx: Tx, instance_id: str, hour_start: int, *, attempts: int, now: float, **values: Any) -> None:
    """Add ``attempts`` to the hour's count and set the other columns given."""
    tx.conn.execute(update(metering_records).where(_key(instance_id, hour_start)).values(
        attempts=metering_records.c.attempts + attempts, updated_at=now, **values))


def list_records(tx: Tx) -> list[dict[str, Any]]:
    """Every metering row, by instance and hour."""
    return [dict(r._mapping) for r in tx.conn.execute(
        select(metering_records).order_by(metering_records.c.instance_id, metering_records.c.hour_start))]
