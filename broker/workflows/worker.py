"""The operation worker: claims operations through leases, heart-beats them, runs them with the engine.

One ``Worker`` runs per serving process with a few threads. Claims are guarded updates (and
``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so several processes on one database never run the same
operation at once. A lease that is not renewed expires and any worker takes the operation over; a lease
whose owner is a dead process on this same host is taken over at once, so a restart after ``kill -9``
resumes without waiting out the lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from broker.domain.models import Operation, OperationState
from broker.store.repository import Store, Tx
from broker.workflows.engine import Engine

log = logging.getLogger(__name__)

HOST = socket.gethostname()


def new_owner_id() -> str:
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_is_dead_local_process(owner: str | None) -> bool:
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # ours: only a live thread of this process can hold it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Worker:
    def __init__(self, store: Store, engine: Engine, *, lease_seconds: float = 15.0,
                 poll_seconds: float = 0.5, threads: int = 2,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.thread_count = max(1, threads)
        self.clock = clock
        self.owner = new_owner_id()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._hb_stop = threading.Event()
        self._held: set[str] = set()
        self._held_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._heartbeat: threading.Thread | None = None

    # lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        self._hb_stop.clear()
        for i in range(self.thread_count):
            t = threading.Thread(target=self._loop, name=f"drbroker-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="drbroker-heartbeat", daemon=True)
        self._heartbeat.start()
        log.info("operation worker %s started with %d thread(s)", self.owner, self.thread_count)

    def stop(self, timeout: float | None = None) -> None:
        """Stop at the next step boundary: running steps finish, their operations are released."""
        self._stop.set()
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]
        # Leases stay renewed until the last step has finished and been released.
        self._hb_stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wake(self) -> None:
        self._wake.set()

    # claiming -------------------------------------------------------------------------------------
    def _claimable(self, tx: Tx, op: Operation, now: float) -> bool:
        if op.blocked_by:
            blocker = tx.get_operation(op.blocked_by)
            if blocker is not None and not blocker.state.finished:
                return False
        if op.state == OperationState.IN_PROGRESS and op.lease_until and op.lease_until >= now:
            return _owner_is_dead_local_process(op.lease_owner)
        return True

    def _take(self, tx: Tx, op: Operation, now: float, owner: str) -> bool:
        expect: dict[str, object] = {"state": op.state}
        if op.state == OperationState.IN_PROGRESS:
            expect["lease_owner"] = op.lease_owner
        fields: dict[str, object] = dict(state=OperationState.IN_PROGRESS, lease_owner=owner,
                                         lease_until=now + self.lease_seconds, heartbeat_at=now,
                                         attempts=op.attempts + 1)
        if op.started_at is None:
            fields["started_at"] = now
        return tx.update_operation(op.id, expect=expect, **fields)

    def claim_next(self) -> str | None:
        now = self.clock()
        with self.store.write() as tx:
            candidates = tx.claimable_operations(now)
            candidates += [o for o in tx.held_operations(now) if _owner_is_dead_local_process(o.lease_owner)]
            for op in candidates:
                if self._claimable(tx, op, now) and self._take(tx, op, now, self.owner):
                    self._hold(op.id)
                    return op.id
        return None

    def claim(self, op_id: str) -> bool:
        """Claim one given operation (the synchronous bind path runs it in the request thread)."""
        now = self.clock()
        with self.store.write() as tx:
            op = tx.get_operation(op_id)
            if op is None or op.state.finished or not self._claimable(tx, op, now):
                return False
            if op.state == OperationState.IN_PROGRESS and op.lease_until and op.lease_until >= now \
                    and not _owner_is_dead_local_process(op.lease_owner):
                return False
            if not self._take(tx, op, now, self.owner):
                return False
        self._hold(op_id)
        return True

    def run_claimed(self, op_id: str) -> None:
        try:
            self.engine.run(op_id, self.owner, should_stop=lambda: self._stop.is_set())
        except Exception:
            # An unexpected error must not kill the worker thread; the lease expires and the
            # operation is retried by whoever claims it next.
            log.exception("operation %s: unexpected error; it will be retried after its lease expires", op_id)
        finally:
            with self._held_lock:
                self._held.discard(op_id)

    def run_now(self, op_id: str, timeout: float) -> bool:
        """Run the operation in the calling thread, or wait while another worker runs it."""
        deadline = time.monotonic() + timeout
        while True:
            if self.claim(op_id):
                self.run_claimed(op_id)
            with self.store.read() as tx:
                op = tx.get_operation(op_id)
            if op is None or op.state.finished:
                return True
            if time.monotonic() >= deadline or self._stop.is_set():
                return False
            time.sleep(0.05)

    def expected_remaining(self, op: Operation) -> float:
        return self.engine.expected_remaining(op)

    def _hold(self, op_id: str) -> None:
        with self._held_lock:
            self._held.add(op_id)

    # threads --------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                op_id = self.claim_next()
            except Exception:
                log.exception("claiming operations failed; retrying")
                op_id = None
            if op_id is None:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
                continue
            self.run_claimed(op_id)

    def _heartbeat_loop(self) -> None:
        interval = max(0.05, self.lease_seconds / 3)
        while not self._hb_stop.wait(interval):
            self.heartbeat()

    def heartbeat(self) -> None:
        with self._held_lock:
            held = list(self._held)
        if not held:
            return
        now = self.clock()
        try:
            with self.store.write() as tx:
                for op_id in held:
                    tx.update_operation(op_id, expect={"lease_owner": self.owner,
                                                       "state": OperationState.IN_PROGRESS},
                                        lease_until=now + self.lease_seconds, heartbeat_at=now)
        except Exception:
            log.exception("heartbeat failed; leases may expire")
