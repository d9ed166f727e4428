"""Background jobs that run in every serving process: once at start, then every ``interval`` seconds, until
stopped. A run that fails is logged and the next one comes on schedule; stopping wakes the thread at once."""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class PeriodicJob:
    """Subclasses give ``run_once``, ``thread_name`` and ``what`` (for the log line of a failed run). A run that
    has long loops of its own can watch ``stopping`` to end early."""

    thread_name = "drbroker-periodic"
    what = "periodic job"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> Any:
        raise NotImplementedError

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def pause(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True when the job was stopped meanwhile."""
        return self._stop.wait(seconds)

    def start(self) -> bool:
        """Start the thread; False when it was running already."""
        if self._thread is not None:
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()
        return True

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        # A scheduler, not a retry loop (so not tenacity): it never gives up, a failed run is not retried but
        # followed by the next one on schedule, and ``stop`` must wake it at once (the Event's wait).
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("%s failed; next run in %gs", self.what, self.interval)
            self._stop.wait(self.interval)
