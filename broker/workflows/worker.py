"""The operation worker: claims operations through leases, heart-beats them, runs them with the engine.

One ``Worker`` runs per serving process with a few threads. Claims are guarded updates (and
``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so several processes on one database never run the same
operation at once. A lease that is not renewed expires and any worker takes the operation over; a lease
whose owner is a dead process on this same host is taken over at once, so a restart after ``kill -9``
resumes without waiting out the lease.

Between claims the worker also reaps operations still queued past their plan's
``maximum_polling_duration`` (say, a deprovision waiting behind a provision that does not stop): they end
failed with a description. A claimed operation's deadline is the engine's to enforce.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from broker.domain.models import Operation, OperationState
from broker.store.repository import Store, Tx
from broker.workflows.engine import PARKED, Engine, record_failure, timeout_reason

log = logging.getLogger(__name__)

HOST = socket.gethostname()


def new_owner_id() -> str:
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_is_dead_local_process(owner: str | None) -> bool:
    if not owner:
        return True
    if owner == PARKED:
        return False  # waiting for a person until its lease_until (engine._park), not a dead worker
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
                 poll_seconds: float = 0.5, threads: int = 2, reap_seconds: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.thread_count = max(1, threads)
        self.reap_seconds = reap_seconds
        self.clock = clock
        self._next_reap = 0.0
        self._reap_lock = threading.Lock()
        self.owner = new_owner_id()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stop_requested = False  # set from a signal handler: a plain flag, no lock
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
        self._stop_requested = False
        self._hb_stop.clear()
        for i in range(self.thread_count):
            t = threading.Thread(target=self._loop, name=f"drbroker-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="drbroker-heartbeat", daemon=True)
        self._heartbeat.start()
        log.info("operation worker %s started with %d thread(s)", self.owner, self.thread_count)

    def request_stop(self) -> None:
        """Ask the threads to stop at their next step boundary, without waiting: for a SIGTERM handler.

        It only sets a plain flag. ``Event.set()`` takes a lock, and a second signal arriving while the
        handler holds it would deadlock the process; idle threads notice within ``poll_seconds``.
        """
        self._stop_requested = True

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
        return self._stop_requested or self._stop.is_set()

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
        with self.store.read() as tx:
            if not tx.has_claimable(now, self.owner):
                return None
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

    def run_claimed(self, op_id: str, *, stoppable: bool = True) -> None:
        try:
            self.engine.run(op_id, self.owner, should_stop=lambda: stoppable and self.stopping)
        except Exception:
            # An unexpected error must not kill the worker thread; the lease expires and the
            # operation is retried by whoever claims it next.
            log.exception("operation %s: unexpected error; it will be retried after its lease expires", op_id)
        finally:
            with self._held_lock:
                self._held.discard(op_id)

    def run_now(self, op_id: str, timeout: float) -> bool:
        """Run the operation in the calling thread, or wait while another worker runs it: True once it is
        finished, False when ``timeout`` seconds pass first."""

        def finished() -> bool:
            if self.claim(op_id):
                # A request waits for its operation: it runs to the end, also while the process drains
                # (gunicorn lets in-flight requests finish; the worker threads stop at a step boundary).
                self.run_claimed(op_id, stoppable=False)
            with self.store.read() as tx:
                op = tx.get_operation(op_id)
            return op is None or op.state.finished

        poll = Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(0.05),
                        retry=retry_if_result(lambda done: not done), retry_error_callback=lambda _state: False)
        return poll(finished)

    def expected_remaining(self, op: Operation) -> float:
        return self.engine.expected_remaining(op)

    # deadlines ------------------------------------------------------------------------------------
    def reap_expired(self) -> list[str]:
        """End every operation still queued past its deadline, untouched (step 0): failed, with a description,
        its instance or binding left as after any failure. Guarded on ``state = queued``, so a worker that
        claims it at the same moment wins or loses cleanly. Returns the ids reaped."""
        now = self.clock()
        with self.store.read() as tx:
            queued = tx.list_operations(state=OperationState.QUEUED, limit=1000)
        expired = [op for op in queued if op.step_index == 0 and (due := self.engine.deadline(op)) is not None
                   and now >= due]
        if not expired:
            return []
        reaped: list[str] = []
        with self.store.write() as tx:
            for op in expired:
                waiting = f" behind operation {op.blocked_by}" if op.blocked_by else ""
                reason = timeout_reason(self.engine.catalog, op, f"it was still queued{waiting}")
                if tx.update_operation(op.id, expect={"state": OperationState.QUEUED, "step_index": 0},
                                       state=OperationState.FAILED, description=f"failed: {reason}",
                                       error=reason, finished_at=now, lease_owner=None, lease_until=None):
                    record_failure(tx, tx.get_operation(op.id) or op, now)
                    self.engine.tell_failed(tx, op, reason, None, now)
                    reaped.append(op.id)
        for op_id in reaped:
            log.warning("operation %s: still queued past its maximum_polling_duration; failed", op_id)
        return reaped

    def _maybe_reap(self) -> None:
        now = time.monotonic()
        with self._reap_lock:
            if now < self._next_reap:
                return
            self._next_reap = now + self.reap_seconds
        self.reap_expired()

    def _hold(self, op_id: str) -> None:
        with self._held_lock:
            self._held.add(op_id)

    # threads --------------------------------------------------------------------------------------
    def _loop(self) -> None:
        # The worker's scheduler, not a retry loop (so not tenacity): it runs until stopped, and a new
        # operation wakes it at once (``_wake``); the heartbeat below is a periodic job likewise.
        while not self.stopping:
            try:
                self._maybe_reap()
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
