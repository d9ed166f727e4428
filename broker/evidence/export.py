"""The ``cos-export`` job: the DR event log and the audit trail, continuously, to COS; then the audit head's
anchor and the due configuration snapshots.

For each stream, under the cursor's lease:

1. a batch named in ``pending_*`` (a run died after naming it) is finished first: the same records, the same
   bytes, the same key; a HEAD that finds the object with the same ETag skips the PUT;
2. otherwise up to ``DRBROKER_COS_BATCH_RECORDS`` records after ``last_seq`` are named as the pending batch
   in one transaction, *then* PUT (``<prefix>/<stream>/<first>-<last>.jsonl``, 20 digits each), and
   ``last_seq`` advances and the pending batch is cleared in one guarded transaction.

So every record reaches COS at least once (the cursor moves only after the PUT succeeded), in order with no
gap (a batch is the next records after the cursor, which follows ``seq``, committed in order), and never in two
objects (a batch's key and bytes are fixed before its upload, and a retry finds what an earlier try wrote).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from broker.evidence import cursors, snapshots
from broker.evidence.cos import Bucket, CosConfig, CosError
from broker.evidence.streams import ANCHOR, AUDIT, STREAMS, Stream
from broker.security.audit import iso
from broker.store.repository import Store
from broker.workflows.periodic import PeriodicJob
from broker.workflows.worker import new_owner_id

log = logging.getLogger("drbroker.evidence")
MAX_BATCHES_PER_RUN = 50
ANCHOR_FORMAT = "drbroker-audit-anchor/1"


def anchor_key(prefix: str, record_id: int) -> str:
    return f"{prefix}/anchors/audit-{record_id:020d}.json"


def anchor_body(record: dict[str, Any]) -> bytes:
    doc = {"format": ANCHOR_FORMAT, "id": record["id"], "hash": record["hash"], "chain": record["chain"],
           "at": record["at"], "at_iso": iso(record["at"])}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")


class CosExport(PeriodicJob):
    job_name = "cos-export"
    thread_name = "drbroker-cos-export"
    what = "COS export (DR events, audit trail, snapshots)"

    def __init__(self, store: Store, bucket: Bucket, *, clock: Any = time.time) -> None:
        super().__init__(bucket.config.interval)
        self.store = store
        self.bucket = bucket
        self.config: CosConfig = bucket.config
        self.clock = clock
        self.owner = new_owner_id()  # host:pid:nonce, so a restart on this host takes a dead run's leases at once
        self._seeded = False

    # one run --------------------------------------------------------------------------------------
    def run_once(self) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        errors: list[str] = []
        for stream in STREAMS:
            try:
                summary[stream.folder] = self._export(stream)
            except CosError as exc:
                errors.append(f"{stream.folder}: {exc}")
                summary[stream.folder] = {"error": str(exc)}
        try:
            summary["anchor"] = self._anchor()
        except CosError as exc:
            errors.append(f"anchor: {exc}")
            summary["anchor"] = {"error": str(exc)}
        try:
            if not self._seeded:
                snapshots.mark_unsnapshotted(self.store, self.clock())
                self._seeded = True
            summary["snapshots"] = snapshots.export_due(self.store, self.bucket, self.owner, self.clock,
                                                        lease_seconds=self.config.lease_seconds)
        except CosError as exc:
            errors.append(f"snapshots: {exc}")
            summary["snapshots"] = {"error": str(exc)}
        if errors:
            raise CosError("; ".join(errors))
        return summary

    def _export(self, stream: Stream) -> dict[str, Any]:
        now = self.clock()
        cursor = cursors.lease(self.store, stream.name, self.owner, now, self.config.lease_seconds)
        if cursor is None:
            return {"skipped": "another exporter holds the lease"}
        exported = objects = 0
        try:
            for _ in range(MAX_BATCHES_PER_RUN):
                if self.stopping:
                    break
                if cursor.pending_key is not None:
                    assert cursor.pending_start is not None and cursor.pending_end is not None
                    start, end, key = cursor.pending_start, cursor.pending_end, cursor.pending_key
                    with self.store.read() as tx:
                        rows = stream.between(tx.conn, start, end)
                else:
                    with self.store.read() as tx:
                        rows = stream.after(tx.conn, cursor.last_seq, self.config.batch_records)
                    if not rows:
                        break
                    start, end = rows[0][stream.column], rows[-1][stream.column]
                    key = stream.key(self.config.prefix, start, end)
                    if not cursors.set_pending(self.store, stream.name, self.owner, cursor.last_seq, start, end,
                                               key, self.clock()):
                        return {"exported": exported, "objects": objects, "stopped": "lease lost"}
                _check_contiguous(stream, rows, start, end, cursor.last_seq)
                written = self.bucket.put_once(key, stream.body(rows), content_type="application/x-ndjson")
                if not cursors.finish_pending(self.store, stream.name, self.owner, key, end, self.clock()):
                    return {"exported": exported, "objects": objects, "stopped": "lease lost"}
                exported += len(rows)
                objects += int(written)
                log.info("COS export: %s #%d..#%d -> %s%s", stream.folder, start, end, key,
                         "" if written else " (already there)")
                # Renew the lease between batches: a long catch-up must not let another exporter take over.
                renewed = cursors.lease(self.store, stream.name, self.owner, self.clock(), self.config.lease_seconds)
                if renewed is None:
                    return {"exported": exported, "objects": objects, "stopped": "lease lost"}
                cursor = renewed
        except CosError as exc:
            cursors.release(self.store, stream.name, self.owner, self.clock(), error=str(exc))
            raise
        cursors.release(self.store, stream.name, self.owner, self.clock())
        return {"exported": exported, "objects": objects, "last": cursor.last_seq}

    def _anchor(self) -> dict[str, Any]:
        """Anchor the newest exported audit record (``<prefix>/anchors/audit-<id>.json``), once per id."""
        now = self.clock()
        state = cursors.read_all(self.store)
        exported = int((state.get(AUDIT.name) or {}).get("last_seq") or 0)
        anchored = int((state.get(ANCHOR) or {}).get("last_seq") or 0)
        if exported <= anchored:
            return {"id": anchored}
        cursor = cursors.lease(self.store, ANCHOR, self.owner, now, self.config.lease_seconds)
        if cursor is None:
            return {"skipped": "another exporter holds the lease"}
        try:
            with self.store.read() as tx:
                rows = AUDIT.between(tx.conn, exported, exported)
            if not rows:
                raise CosError(f"audit record #{exported} was exported but is no longer in the database")
            self.bucket.put_once(anchor_key(self.config.prefix, exported), anchor_body(rows[0]))
            cursors.advance(self.store, ANCHOR, self.owner, exported, self.clock())
        except CosError as exc:
            cursors.release(self.store, ANCHOR, self.owner, self.clock(), error=str(exc))
            raise
        cursors.release(self.store, ANCHOR, self.owner, self.clock())
        return {"id": exported}


def span(key: str) -> tuple[int, int]:
    """The first and last sequence number in a batch object's name (0, -1 for another name)."""
    name = key.rsplit("/", 1)[-1].removesuffix(".jsonl")
    first, _, last = name.partition("-")
    if not (first.isdigit() and last.isdigit()):
        return 0, -1
    return int(first), int(last)


def _check_contiguous(stream: Stream, rows: list[dict[str, Any]], start: int, end: int, last: int) -> None:
    seqs = [r[stream.column] for r in rows]
    if seqs != list(range(start, end + 1)) or start != last + 1:
        raise CosError(f"{stream.folder} records #{start}..#{end} are not all in the database (found "
                       f"{len(seqs)}): records were deleted before they were exported; nothing was written")


def make_job(runtime: Any) -> CosExport | None:
    """The job when ``DRBROKER_COS_BUCKET`` is set (broker.jobs)."""
    config = CosConfig.from_env(runtime.settings.evidence_env)
    if config is None:
        return None
    return CosExport(runtime.store, Bucket(config))
