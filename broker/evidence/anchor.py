"""``drbroker audit verify --against-cos``: the database's audit trail held to what was exported to COS.

The exporter writes the audit records in batches (``<prefix>/audit/<first>-<last>.jsonl``) and anchors the
newest exported record (``<prefix>/anchors/audit-<id>.json``: id, MAC, chain) in an object-locked bucket where
the bucket has object lock. Someone who can rewrite the database (and even holds the KEK, so the MACs of a
rewritten chain verify) cannot rewrite those objects: every record up to the newest anchor must still be in
the database with exactly the exported content, and the anchored head must still be there with its MAC.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from broker.evidence.cos import Bucket, CosError
from broker.evidence.export import ANCHOR_FORMAT, span
from broker.store.repository import Store
from broker.store.tables import audit_events

_PAGE = 1000


@dataclass(frozen=True)
class CosCheck:
    ok: bool
    anchor_id: int
    records: int
    problem: str | None = None


def latest_anchor(bucket: Bucket) -> dict[str, Any] | None:
    keys = [k for k in bucket.list(f"{bucket.config.prefix}/anchors/audit-") if k.endswith(".json")]
    if not keys:
        return None
    key = max(keys)  # 20-digit ids: key order is id order
    try:
        doc = json.loads(bucket.get(key))
    except ValueError:
        raise CosError(f"{bucket.name}/{key} is not an anchor (not JSON)") from None
    if doc.get("format") != ANCHOR_FORMAT or not isinstance(doc.get("id"), int):
        raise CosError(f"{bucket.name}/{key} is not a {ANCHOR_FORMAT} anchor")
    doc["_key"] = key
    return doc


def _exported(bucket: Bucket, upto: int) -> tuple[dict[int, dict[str, Any]], dict[int, str], str | None]:
    """The exported audit records with ids up to ``upto``, the object each came from, and a gap if any."""
    records: dict[int, dict[str, Any]] = {}
    where: dict[int, str] = {}
    expected = 1
    for key in bucket.list(f"{bucket.config.prefix}/audit/"):
        start, end = span(key)
        if start > upto or end < start:
            continue
        if start != expected:
            return records, where, (f"COS holds no audit records #{expected}..#{start - 1} (objects missing "
                                    f"before {key})")
        for line in bucket.get(key).decode("ascii").splitlines():
            rec = json.loads(line)
            records[int(rec["id"])] = rec
            where[int(rec["id"])] = key
        expected = end + 1
    if expected <= upto:
        return records, where, f"COS holds no audit records #{expected}..#{upto} (objects missing)"
    return records, where, None


def verify_against_cos(store: Store, bucket: Bucket) -> CosCheck:
    """Every record up to the newest anchor: in the database, equal to its exported copy, the anchor's MAC."""
    anchor = latest_anchor(bucket)
    if anchor is None:
        return CosCheck(False, 0, 0, f"no audit anchor in {bucket.name}/{bucket.config.prefix}/anchors/ yet (the "
                                     "cos-export job writes one after its first audit batch)")
    upto = int(anchor["id"])
    exported, where, gap = _exported(bucket, upto)
    if gap:
        return CosCheck(False, upto, 0, gap)
    fields = [c.name for c in audit_events.columns]
    checked = 0
    last = 0
    while last < upto:
        with store.read() as tx:
            rows = {r.id: dict(r._mapping) for r in tx.conn.execute(
                select(audit_events).where(audit_events.c.id > last, audit_events.c.id <= upto)
                .order_by(audit_events.c.id).limit(_PAGE))}
        page_end = min(upto, last + _PAGE)
        for rid in range(last + 1, page_end + 1):
            copy = exported[rid]
            row = rows.get(rid)
            if row is None:
                return CosCheck(False, upto, checked,
                                f"record #{rid} is exported to COS ({where[rid]}) but missing from the database: "
                                f"records were deleted (the anchor {anchor['_key']} names #{upto})")
            changed = [f for f in fields if row.get(f) != copy.get(f)]
            if changed:
                return CosCheck(False, upto, checked,
                                f"record #{rid} differs from its copy in COS ({where[rid]}): "
                                f"{', '.join(changed)} changed: the database was rewritten")
            checked += 1
        last = page_end
    head = exported[upto]
    if not hmac.compare_digest(str(head.get("hash")), str(anchor.get("hash"))):
        return CosCheck(False, upto, checked, f"the anchor {anchor['_key']} names record #{upto} with MAC "
                                              f"{str(anchor.get('hash'))[:16]}..., but the exported record's "
                                              "MAC differs")
    return CosCheck(True, upto, checked)
