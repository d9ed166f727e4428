"""One client connection of the front: waitress's channel with total deadlines and a lingering close.

waitress reads every request whole on its event loop before a request thread takes it, so a slow client
costs a socket, never a thread. What waitress lacks is a bound on how long a client may take: its
``channel_timeout`` only closes connections that have been *silent* that long, so a client that sends one
byte every few seconds keeps a half-read request open forever. Here each request has two total deadlines,
checked on the event loop twice a second (``Front.poll``):

- the request line and headers within ``header_timeout`` of the first byte of the request (of the accept,
  for the first request of a connection, so a connection that says nothing is closed then too; on TLS this
  includes the handshake);
- the body within ``body_timeout`` of the end of the headers.

A request over a deadline gets a 408 in OSB JSON and the connection is closed; an answer the client does
not read within ``body_timeout`` is dropped with its connection. An idle keep-alive connection is closed
after ``keepalive_timeout``.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser

from broker.front.errors import RequestTimeout, URITooLong, error_response, error_task
from broker.front.settings import LINGER_SECONDS, MAX_TARGET_BYTES

READ = select.POLLIN | select.POLLPRI  # the same bits in poll() and epoll()
WRITE = select.POLLOUT

# Queued answer bytes beyond which the event loop helps a request thread send (see poll_mask).
RELIEF_BYTES = 1024 * 1024

# The connection a request thread is serving, if any.
SERVING = threading.local()

# A connection that has said nothing yet is not dropped to make room before it is this old: it may simply
# not have been read yet.
STALE_SECONDS = 1.0


class FrontParser(HTTPRequestParser):
    """waitress's request parser, refusing an over-long request target (414) before reading any body."""

    def received(self, data: bytes) -> int:
        consumed = super().received(data)
        if self.headers_finished and self.error is None and len(getattr(self, "request_uri", "")) > MAX_TARGET_BYTES:
            # Complete now: the channel dispatches the error and closes; a body that follows is not read.
            self.error = URITooLong("")
            self.completed = True
        return consumed


class FrontChannel(HTTPChannel):
    parser_class = FrontParser
    error_task_class = staticmethod(error_task)
    # Set when the answer is an error that may leave request bytes unread: closing then would reset the
    # connection, and the client could lose the answer. The channel half-closes and reads on instead.
    linger_after_close = False

    def __init__(self, server: Any, sock: socket.socket, addr: Any, adj: Any, map: Any = None) -> None:
        super().__init__(server, sock, addr, adj, map)
        self.headers_since: float | None = time.monotonic()
        self.body_since: float | None = None
        self.flush_since: float | None = None
        self.lingering_until: float | None = None

    # the event loop's bookkeeping (broker.front.loop) -------------------------------------------------
    def add_channel(self, map: Any = None) -> None:
        super().add_channel(map)
        self.server.front.loop.touched.append(self)

    def service(self) -> None:
        SERVING.channel = self  # FrontServer.pull_trigger then knows which connection to look at again
        try:
            super().service()
        finally:
            SERVING.channel = None

    # reading ----------------------------------------------------------------------------------------
    def received(self, data: bytes) -> bool:
        before = self.request
        accepted = super().received(data)
        self._track(before, time.monotonic())
        return accepted

    def _track(self, before: Any, now: float) -> None:
        current = self.request
        if current is None:  # nothing half-read: between requests, the keep-alive timeout applies
            self.headers_since = self.body_since = None
            return
        if current is not before:  # a request began in this data
            if before is not None or self.headers_since is None:
                self.headers_since = now
            self.body_since = None
        if current.headers_finished and self.body_since is None:
            self.body_since = now

    def poll_mask(self) -> int:
        """What the event loop waits for on this connection (broker.front.loop); waitress's ``readable()``
        and ``writable()`` in one call, except while a request thread has the connection."""
        if self.lingering_until is not None:
            return READ
        if self.requests:
            # The request thread sends its own answer as it writes it. waitress would also wait for "writable"
            # whenever part of the answer is queued, and the socket nearly always is writable: the loop then
            # spins, holding the GIL the writing thread needs to finish. It steps in only for an answer that
            # has piled up (a client that reads slowly), before the thread blocks at waitress's high-water mark.
            return WRITE if self.pending_output() >= RELIEF_BYTES else 0
        if self.will_close or self.close_when_flushed or self.pending_output():
            return WRITE
        return READ

    def readable(self) -> bool:
        return bool(self.poll_mask() & READ)

    def writable(self) -> bool:
        return bool(self.poll_mask() & WRITE)

    def handle_read(self) -> None:
        if self.lingering_until is not None:
            self._discard()
            return
        super().handle_read()

    def _discard(self) -> None:
        self.recv_raw(65536)

    def recv_raw(self, size: int) -> bytes | None:
        """What the socket holds now, unparsed; None when it holds nothing yet, or when the peer has gone (the
        channel is then aborted)."""
        try:
            data = self.socket.recv(size)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data = b""
        if not data:
            self.abort()
            return None
        return data

    # closing ----------------------------------------------------------------------------------------
    def pending_output(self) -> int:
        return int(self.total_outbufs_len)

    def handle_close(self) -> None:
        if self.linger_after_close and self.lingering_until is None and self.connected \
                and self.socket is not None and not self.pending_output():
            self.linger_after_close = False
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            else:
                self.lingering_until = time.monotonic() + LINGER_SECONDS
                self.will_close = self.close_when_flushed = False
                return
        self.abort()

    def abort(self) -> None:
        """Close now, whatever is unsent or unread."""
        self.lingering_until = None
        HTTPChannel.handle_close(self)

    # deadlines (on the event loop, Front.poll) ------------------------------------------------------
    def enforce_deadlines(self, now: float, wall: float, front: Any) -> str | None:
        """Act on a passed deadline; returns which one (for the server's tally), else None."""
        if self.lingering_until is not None:
            if now >= self.lingering_until:
                self.abort()
            return None
        if self.requests or not self.connected:
            return None  # a request thread has it; the app's own time is not the client's
        if self.pending_output():
            if self.flush_since is None:
                self.flush_since = now
            elif now - self.flush_since >= front.body_timeout:
                self.abort()
                return "send"
            return None
        self.flush_since = None
        if self.will_close or self.close_when_flushed:
            return None
        request = self.request
        if request is None:
            if self.headers_since is not None:
                if now - self.headers_since >= front.header_timeout:
                    self.abort()  # connected and said nothing: no answer is owed
                    return "header"
            elif wall - self.last_activity >= front.keepalive_timeout:
                self.abort()
            return None
        if not request.headers_finished:
            if self.headers_since is not None and now - self.headers_since >= front.header_timeout:
                self.answer_timeout(request, f"headers: not complete within {front.header_timeout:g} s")
                return "header"
        elif self.body_since is not None and now - self.body_since >= front.body_timeout:
            self.answer_timeout(request, f"body: not complete within {front.body_timeout:g} s")
            return "body"
        return None

    def answer_timeout(self, request: Any, description: str) -> None:
        """408 for the half-read request, written from the event loop (no request thread is involved)."""
        with self.requests_lock:
            if self.request is request:
                self.request = None
            self.headers_since = self.body_since = None
            request.close()
            self.close_when_flushed = True
            self.linger_after_close = True
        data = error_response(RequestTimeout(description), request.version if request.headers_finished else "1.1")
        with self.outbuf_lock:
            self.outbufs[-1].append(data)
            self.current_outbuf_count += len(data)
            self.total_outbufs_len += len(data)

    def is_idle(self) -> bool:
        """Nothing in progress on it: a connection to drop when the front is full or draining."""
        return (not self.requests and self.request is None and not self.pending_output()
                and self.lingering_until is None)

    def is_stale(self, now: float) -> bool:
        """Idle long enough to be dropped for a newcomer: not just accepted and yet to be read."""
        return self.headers_since is None or now - self.headers_since >= STALE_SECONDS
