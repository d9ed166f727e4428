"""The gunicorn worker class of ``drbroker serve``: gunicorn keeps the master (worker processes, hooks,
signals, restarts); each worker serves gunicorn's listening sockets with the front (broker.front.listener).
"""

from __future__ import annotations

import os
import time

from gunicorn.workers.base import Worker
from waitress import wasyncore

from broker.front.listener import Front, raise_open_file_limit
from broker.front.settings import FrontSettings


class _Wakeup(wasyncore.file_dispatcher):
    """gunicorn's signal pipe on the event loop, so that SIGTERM ends a poll at once."""

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def handle_read(self) -> None:
        try:
            self.recv(64)
        except OSError:
            pass


class FrontWorker(Worker):
    def run(self) -> None:
        settings: FrontSettings = getattr(self.app, "front_settings", None) or FrontSettings.from_env()
        context = None
        tls = getattr(self.app, "tls_files", None)
        if tls:
            from broker.front.tls import server_context

            context = server_context(*tls)
        raise_open_file_limit(settings.connection_limit)
        front = Front(self.wsgi, [s.sock for s in self.sockets], settings, backlog=self.cfg.backlog,
                      ssl_context=context)
        front.add_fixed(_Wakeup(self.PIPE[0], map=front.map))
        notified = 0.0
        while self.alive:
            front.poll(1.0)
            now = time.monotonic()
            if now - notified >= 1.0:  # the master's liveness check, and ours of the master: once a second
                self.notify()
                notified = now
                if self.ppid != os.getppid():
                    self.log.info("Parent changed, shutting down: %s", self)
                    break
        front.drain(time.monotonic() + max(1.0, self.cfg.graceful_timeout - 1.0), self.notify)
