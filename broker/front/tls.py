"""HTTPS on the same event loop: TLS in memory (``SSLContext.wrap_bio``) over the non-blocking socket.

waitress has no TLS. Wrapping the socket itself would let a client stall a blocking handshake, and an
``SSLSocket`` can hold decrypted bytes that ``poll()`` never reports. With two memory BIOs the event loop
moves raw bytes between the socket and OpenSSL itself, so the handshake is just more reading, under the same
header deadline as the request that follows (``FrontChannel``): a client that stalls its handshake is closed
at that deadline, and it never holds a request thread.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Any

from broker.front.channel import WRITE, FrontChannel

log = logging.getLogger("drbroker.front")

# Encrypted bytes queued for the socket beyond which the channel takes no more plaintext, so a client that
# does not read cannot make a response's TLS records pile up in memory.
RAW_HIGH_WATER = 256 * 1024


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """The certificate (chain) and key, TLS 1.2 or newer, the default ciphers of this OpenSSL."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=certfile, keyfile=keyfile)
    return context


class TlsChannel(FrontChannel):
    def __init__(self, server: Any, sock: socket.socket, addr: Any, adj: Any, map: Any = None) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = server.ssl_context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        # The event loop decrypts; request threads encrypt their responses (waitress flushes from them).
        self._tls_lock = threading.Lock()
        self._raw = bytearray()
        self._handshaken = False
        self._finished = False  # close_notify queued, or the TLS session failed: no more plaintext either way
        self._close_when_raw_sent = False
        super().__init__(server, sock, addr, adj, map)

    # reading: raw -> OpenSSL -> HTTP ------------------------------------------------------------------
    def handle_read(self) -> None:
        if self.lingering_until is not None:
            self._discard()
            return
        raw = self.recv_raw(self.adj.recv_bytes)
        if raw is None:
            return
        with self._tls_lock:
            self._incoming.write(raw)
            plaintext, failure = self._decrypt()
            self._take_outgoing()
        self._send_raw()
        if plaintext:
            self.last_activity = time.time()
            self.received(plaintext)
        if failure is not None:
            log.debug("front: TLS with %s ended: %s", self.addr[0] if self.addr else "?", failure)
            self._finished = True  # no close_notify: send the alert OpenSSL queued, then close
            self.handle_close()

    def _decrypt(self) -> tuple[bytes, str | None]:
        chunks: list[bytes] = []
        try:
            if not self._handshaken:
                self._tls.do_handshake()
                self._handshaken = True
            while True:
                chunk = self._tls.read(65536)
                if not chunk:
                    return b"".join(chunks), "closed by the client"
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            return b"".join(chunks), None
        except ssl.SSLZeroReturnError:
            return b"".join(chunks), "closed by the client"
        except ssl.SSLError as exc:
            # A refused handshake (e.g. TLS 1.1, or plain HTTP on this port): OpenSSL has queued its alert.
            return b"".join(chunks), exc.reason or str(exc)

    # writing: HTTP -> OpenSSL -> raw ------------------------------------------------------------------
    def send(self, data: bytes, do_close: bool = True) -> int:
        """waitress's socket send, for plaintext: encrypts what fits under the high-water mark."""
        with self._tls_lock:
            if self._finished:
                return 0
            if len(self._raw) >= RAW_HIGH_WATER:
                self._send_raw_locked()
                if len(self._raw) >= RAW_HIGH_WATER:
                    return 0
            try:
                sent = self._tls.write(data)
            except ssl.SSLError:
                self._finished = True
                self.will_close = True
                return 0
            self._take_outgoing()
            self._send_raw_locked()
        return sent

    def _take_outgoing(self) -> None:
        pending = self._outgoing.pending
        if pending:
            self._raw += self._outgoing.read(pending)

    def _send_raw(self) -> None:
        with self._tls_lock:
            self._send_raw_locked()

    def _send_raw_locked(self) -> None:
        while self._raw and self.socket is not None:
            try:
                sent = self.socket.send(self._raw)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # The client is gone: nothing queued will ever be delivered.
                self._raw.clear()
                self._finished = True
                self.will_close = True
                return
            del self._raw[:sent]

    def pending_output(self) -> int:
        return int(self.total_outbufs_len) + len(self._raw)

    def poll_mask(self) -> int:
        if self._close_when_raw_sent and self.lingering_until is None:
            return WRITE
        return super().poll_mask()

    def handle_write(self) -> None:
        self._send_raw()
        if self._raw:
            return  # the socket takes no more now; poll() says when it does
        if self._close_when_raw_sent:
            self._close_when_raw_sent = False
            FrontChannel.handle_close(self)
            return
        super().handle_write()

    # closing ------------------------------------------------------------------------------------------
    def handle_close(self) -> None:
        """Send close_notify and whatever TLS records are still queued, then close (or linger)."""
        if not self.connected or self.socket is None:
            self.abort()
            return
        with self._tls_lock:
            if self._handshaken and not self._finished:
                self._finished = True
                try:
                    self._tls.unwrap()
                except ssl.SSLError:
                    pass  # the client's close_notify is not awaited
                self._take_outgoing()
            self._send_raw_locked()
        if self._raw:
            self._close_when_raw_sent = True
            return
        FrontChannel.handle_close(self)
