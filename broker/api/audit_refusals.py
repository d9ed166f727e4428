"""How refused requests reach the audit trail: bounded, and at a bounded rate per client.

A mutating request is *refused* when it gets a 4xx before anyone was authenticated: no or wrong credentials
(401), a bad bearer token (403), the authentication back-off (401 with Retry-After), a body over the limit (413,
checked before authentication), a missing API version (412, checked first), and any path or method without a
route (404, 405; no blueprint, so no authentication ran). Such a request costs the client nothing, so its
record must not cost the broker much: it is written in bounded form (``broker.security.audit.bounded``: every
string at most 200 characters, the whole record at most 2 KiB), and per fixed window of ``window`` seconds
(60) each client (its address) gets at most ``per_client`` records of its own and all clients together at most
``total``. Refusals beyond that are counted, and one ``refused_requests_suppressed`` record per window says how
many there were, by status and by client (the ten with most). It is written when the window has closed: by a
timer, or by the next refusal, whichever comes first, or at exit.

So in one window a process writes at most ``total + 1`` refused records of at most 2 KiB each, whatever the
clients send. Requests by an authenticated principal are never suppressed: accepted ones are recorded whole, and
those it gets a 4xx for are recorded bounded.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broker.security.audit import AuditEvent, iso

log = logging.getLogger("drbroker.audit")

SUPPRESSED_ACTION = "refused_requests_suppressed"
_TOP_CLIENTS = 10
_MAX_TRACKED = 10_000  # clients counted one by one per window; further ones share the total budget only


@dataclass
class _Window:
    start: float
    per_client: dict[str, int] = field(default_factory=dict)
    recorded: int = 0
    suppressed: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_client: Counter[str] = field(default_factory=Counter)
    untracked: int = 0


class RefusalLimiter:
    """Decides which refused requests get a record of their own; summarises the others per window."""

    def __init__(self, emit: Callable[[AuditEvent], Any], *, per_client: int = 10, total: int = 60,
                 window: float = 60.0, clock: Callable[[], float] = time.time, timer: bool = True) -> None:
        self.emit = emit
        self.per_client, self.total, self.window = per_client, total, window
        self.clock = clock
        self.timer = timer
        self._lock = threading.Lock()
        self._current: _Window | None = None
        self._pending_timer: threading.Timer | None = None
        self._pid = os.getpid()
        atexit.register(self.close)

    def _start_of(self, now: float) -> float:
        return math.floor(now / self.window) * self.window

    def admit(self, client: str | None, status: int) -> bool:
        """Whether this refusal gets its own record (False: it is counted in the window's summary). A summary
        of a window that has closed is written first."""
        now = self.clock()
        client = (client or "unknown")[:64]
        with self._lock:
            if self._pid != os.getpid():  # a timer started before a fork does not exist in the child
                self._pid, self._pending_timer = os.getpid(), None
            closed = self._roll(now)
            win = self._current
            assert win is not None
            seen = win.per_client.get(client, 0)
            if client not in win.per_client and len(win.per_client) >= _MAX_TRACKED:
                seen = self.per_client  # not tracked: no record of its own
                win.untracked += 1
            admitted = seen < self.per_client and win.recorded < self.total
            if admitted:
                win.per_client[client] = seen + 1
                win.recorded += 1
            else:
                win.suppressed += 1
                win.by_status[str(status)] += 1
                if client in win.per_client:
                    win.by_client[client] += 1
                self._arm_timer(win, now)
        if closed is not None:
            self._emit(closed)
        return admitted

    def _emit(self, summary: AuditEvent) -> None:
        try:
            self.emit(summary)
        except Exception:  # a timer thread or the exit: nobody else would see it
            log.exception("could not append the %s record", SUPPRESSED_ACTION)

    def _roll(self, now: float) -> AuditEvent | None:
        """Start a new window if the current one has closed; its summary, when something was suppressed."""
        start = self._start_of(now)
        win = self._current
        if win is not None and win.start == start:
            return None
        self._current = _Window(start)
        return self._summary(win) if win is not None and win.suppressed else None

    def _arm_timer(self, win: _Window, now: float) -> None:
        if not self.timer or self._pending_timer is not None:
            return
        delay = max(0.0, win.start + self.window - now) + 0.05
        self._pending_timer = threading.Timer(delay, self.flush_due)
        self._pending_timer.daemon = True
        self._pending_timer.start()

    def _summary(self, win: _Window) -> AuditEvent:
        top = win.by_client.most_common(_TOP_CLIENTS)
        detail: dict[str, Any] = {
            "window_start": iso(win.start), "window_seconds": self.window, "suppressed": win.suppressed,
            "by_status": dict(sorted(win.by_status.items())), "clients": dict(top),
            "other_clients_suppressed": win.suppressed - sum(n for _, n in top),
            "limits": {"per_client": self.per_client, "total": self.total},
        }
        return AuditEvent(action=SUPPRESSED_ACTION, outcome="suppressed", detail=detail)

    def flush_due(self) -> None:
        """Write the summary of a window that has closed (the timer's job)."""
        with self._lock:
            self._pending_timer = None
            now = self.clock()
            closed = self._roll(now)
            if closed is None and self._current is not None and self._current.suppressed:
                self._arm_timer(self._current, now)  # woke before the window closed
        if closed is not None:
            self._emit(closed)

    def close(self) -> None:
        """Write the current window's summary now, closed or not (exit)."""
        with self._lock:
            win, self._current = self._current, None
            if self._pending_timer is not None:
                self._pending_timer.cancel()
                self._pending_timer = None
        if win is not None and win.suppressed:
            self._emit(self._summary(win))
