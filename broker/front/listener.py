"""The front of one worker process: waitress servers on gunicorn's listening sockets, one event loop, one
request thread pool, the connection cap, and the drain on shutdown."""

from __future__ import annotations

import logging
import os
import select
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from broker.front.channel import SERVING, FrontChannel
from broker.front.loop import EpollLoop
from broker.front.settings import MAX_BODY_BYTES, MAX_HEADER_BYTES, FrontSettings

log = logging.getLogger("drbroker.front")

MAINTENANCE_SECONDS = 0.5  # how often deadlines are checked: a deadline is kept to within this much
TALLY_SECONDS = 60.0  # how often the closed-at-a-deadline counts are logged (only when there are any)


class _QueueDepth:
    """Stands in for waitress's queue logger, which warns on every request that waits for a thread: under
    load that is a log line per request. This says it once a minute, with the deepest queue seen."""

    def __init__(self) -> None:
        self.next_report = 0.0
        self.deepest = 0

    def warning(self, _message: str, depth: int) -> None:
        self.deepest = max(self.deepest, depth)
        now = time.monotonic()
        if now >= self.next_report:
            self.next_report = now + TALLY_SECONDS
            log.warning("front: requests waiting for a request thread (DRBROKER_HTTP_THREADS), up to %d at once",
                        self.deepest)
            self.deepest = 0


class FrontServer(TcpWSGIServer):
    """One listening socket (gunicorn's) feeding the shared loop and thread pool."""

    def __init__(self, front: Front, application: Any, sock: Any, adj: Adjustments,
                 channel_class: type[FrontChannel], ssl_context: ssl.SSLContext | None) -> None:
        self.front = front
        self.channel_class = channel_class
        self.ssl_context = ssl_context
        sockinfo = (sock.family, sock.type, sock.proto, sock.getsockname())
        super().__init__(application, map=front.map, _sock=sock, dispatcher=front.dispatcher, adj=adj,
                         bind_socket=False, sockinfo=sockinfo)

    def readable(self) -> bool:
        # waitress runs its maintenance from here, while poll() is being set up; closing a connection then
        # could hand its descriptor number to a connection accepted in the same round, which would then get
        # the old one's hang-up event. Front.poll() does it before that instead.
        return bool(self.accepting) and not self.front.overflowing

    def pull_trigger(self) -> None:
        """A request thread wakes the loop: about its own connection, whose state it has just changed."""
        channel = getattr(SERVING, "channel", None)
        if channel is not None:
            self.front.loop.touched.append(channel)
        super().pull_trigger()

    def stop_accepting(self) -> None:
        """Close this process's copy of the listening socket (the master and other workers keep theirs)."""
        self.accepting = False
        self.del_channel()
        try:
            self.socket.close()
        except OSError:
            pass


class Front:
    """All of one worker's listening sockets, their connections, and the request threads."""

    def __init__(self, application: Any, sockets: list[Any], settings: FrontSettings, *, backlog: int = 2048,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.map: dict[int, Any] = {}
        self.dispatcher = ThreadedTaskDispatcher()
        self.dispatcher.queue_logger = _QueueDepth()  # type: ignore[assignment]
        self.dispatcher.set_thread_count(settings.threads)
        self.tally: Counter[str] = Counter()
        self.tally_lock = threading.Lock()  # error answers are counted from request threads
        self.tally_since = time.monotonic()
        self.next_maintenance = 0.0
        self.overflowing = False
        adj = Adjustments(
            threads=settings.threads,
            connection_limit=settings.connection_limit,
            max_request_header_size=MAX_HEADER_BYTES,
            # waitress refuses a body that reaches this size: one byte more than the app allows.
            max_request_body_size=MAX_BODY_BYTES + 1,
            backlog=backlog,
            ident="",
            url_scheme="https" if ssl_context else "http",
            # Forwarded headers are not trusted (docs/security.md); the app ignores them, so nothing to strip.
            clear_untrusted_proxy_headers=False,
            # A client that resets its connection is not an error worth a traceback in the log.
            log_socket_errors=False,
            expose_tracebacks=False,
        )
        if ssl_context is None:
            channel_class: type[FrontChannel] = FrontChannel
        else:
            from broker.front.tls import TlsChannel

            channel_class = TlsChannel
        self.loop = EpollLoop(self.map)
        self.servers = [FrontServer(self, application, sock, adj, channel_class, ssl_context) for sock in sockets]
        for server in self.servers:
            self.add_fixed(server, server.trigger)

    def add_fixed(self, *dispatchers: Any) -> None:
        """Dispatchers other than connections, on the loop for good (looked at on every round)."""
        self.loop.fixed.extend(dispatchers)

    # connections --------------------------------------------------------------------------------------
    def channels(self) -> list[FrontChannel]:
        return [c for server in self.servers for c in list(server.active_channels.values())]

    def check_capacity(self) -> bool:
        """Whether to stop accepting: at the cap, after dropping an idle connection for each one waiting."""
        limit = self.settings.connection_limit
        count = sum(len(server.active_channels) for server in self.servers)
        if count >= limit and self._someone_waits():
            now = time.monotonic()
            idle = sorted((c for c in self.channels() if c.is_idle() and c.is_stale(now)),
                          key=lambda c: c.last_activity)
            for channel in idle[:count - limit + 1]:
                channel.abort()
                count -= 1
                self.count("room")
        full = count >= limit
        if full != self.overflowing:
            self.overflowing = full
            if full:
                log.warning("front: %d connections open (DRBROKER_HTTP_CONNECTION_LIMIT), none idle: new "
                            "connections wait in the listen backlog", count)
            else:
                log.info("front: below the connection limit again, accepting")
        return full

    def _someone_waits(self) -> bool:
        """Whether a connection waits in a listen backlog (only asked at the cap)."""
        poller = select.poll()
        for server in self.servers:
            if server.accepting and server.socket is not None:
                poller.register(server.socket.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def count(self, what: str) -> None:
        """One more connection the front closed for ``what`` (a deadline, or the status it answered)."""
        with self.tally_lock:
            self.tally[what] += 1

    def enforce_deadlines(self, server: FrontServer) -> None:
        now, wall = time.monotonic(), time.time()
        if not self.tally:
            self.tally_since = now  # the minute being counted starts with its first close
        for channel in list(server.active_channels.values()):
            which = channel.enforce_deadlines(now, wall, self.settings)
            if which:
                self.count(which)
        if self.tally and now - self.tally_since >= TALLY_SECONDS:
            with self.tally_lock:
                counts, self.tally = self.tally, Counter()
            log.warning("front: in the last %.0f s closed %s", now - self.tally_since,
                        ", ".join(_describe(k, n) for k, n in sorted(counts.items())))
            self.tally_since = now

    # the loop -----------------------------------------------------------------------------------------
    def poll(self, timeout: float) -> None:
        """One round of the event loop, after the deadlines (every MAINTENANCE_SECONDS) and the connection cap."""
        now = time.monotonic()
        everything = now >= self.next_maintenance
        if everything:
            self.next_maintenance = now + MAINTENANCE_SECONDS
            for server in self.servers:
                self.enforce_deadlines(server)
        self.check_capacity()
        timeout = max(0.0, min(timeout, self.next_maintenance - time.monotonic()))
        self.loop.run_once(timeout, everything=everything)

    def drain(self, deadline: float, tick: Callable[[], None]) -> None:
        """Stop accepting, close idle connections, let requests in progress finish until ``deadline``."""
        for server in self.servers:
            server.stop_accepting()
        while time.monotonic() < deadline:
            now = time.monotonic()
            for channel in self.channels():
                if channel.is_idle() and channel.is_stale(now):
                    channel.abort()
            if not self.channels():
                break
            self.poll(0.1)
            tick()
        left = self.channels()
        if left:
            log.warning("front: %d connection(s) still busy at the end of the graceful timeout", len(left))
        self.dispatcher.shutdown(cancel_pending=True, timeout=max(0.1, deadline - time.monotonic()))
        wasyncore.close_all(self.map, ignore_all=True)
        self.loop.close()


def _describe(what: str, n: int) -> str:
    if what in ("header", "body", "send"):
        return f"{n} at the {what} deadline"
    if what == "room":
        return f"{n} idle to make room"
    return f"{n} after answering {what}"


def raise_open_file_limit(connections: int) -> None:
    """Each connection may hold up to three descriptors (socket, spooled request and response bodies)."""
    import resource

    want = 3 * connections + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want or soft == resource.RLIM_INFINITY:
        return
    target = want if hard == resource.RLIM_INFINITY else min(hard, want)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        target = soft
    if target < want:
        log.warning("front: the open-file limit (%d, pid %d) is below the %d that DRBROKER_HTTP_CONNECTION_LIMIT=%d "
                    "may need", target, os.getpid(), want, connections)
