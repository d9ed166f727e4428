"""The front's event loop: waitress's dispatchers on one persistent ``epoll`` set.

waitress's own ``poll()`` loop builds a new poll set on every round, asking every dispatcher ``readable()``
and ``writable()`` through two or three method calls each, and it waits for "writable" on a connection
whose request thread is still writing, so that it spins while that thread waits for the GIL (nine rounds
per request in the read benchmark). Here the set persists, and a round looks again only at the connections
that may have changed since the last: those it handled an event of, those accepted, and those a request
thread woke the loop for (``FrontServer.pull_trigger``); every connection's mask (``FrontChannel.poll_mask``)
is checked on the twice-a-second maintenance pass all the same. A round so costs the same with a thousand
idle connections open as with none.
"""

from __future__ import annotations

import collections
import select
from collections.abc import Iterable
from typing import Any

from waitress import wasyncore

from broker.front.channel import READ, WRITE, FrontChannel


def dispatcher_mask(obj: Any) -> int:
    """What to wait for on a dispatcher other than a connection (listener, trigger, signal pipe)."""
    mask = READ if obj.readable() else 0
    if not obj.accepting and obj.writable():
        mask |= WRITE
    return mask


class EpollLoop:
    def __init__(self, map: dict[int, Any]) -> None:
        self.map = map
        self.epoll = select.epoll()
        # fd -> (dispatcher, mask) as registered; a closed descriptor leaves the kernel's set by itself, and a
        # new connection may get its number, so an entry counts only for the very dispatcher it names.
        self.registered: dict[int, tuple[Any, int]] = {}
        # Connections to look at again in the next round; appended to from request threads too.
        self.touched: collections.deque[Any] = collections.deque()
        self.fixed: list[Any] = []  # listeners, triggers, the signal pipe: looked at every round

    def run_once(self, timeout: float, *, everything: bool = False) -> None:
        if everything:
            self.touched.clear()
            self._update(list(self.map.values()))
            for fd in [fd for fd, (obj, _) in self.registered.items() if self.map.get(fd) is not obj]:
                self._forget(fd)
        else:
            touched = self.touched
            seen: list[Any] = []
            while touched:
                seen.append(touched.popleft())
            self._update(self.fixed)
            self._update(seen)
        try:
            events = self.epoll.poll(timeout)
        except InterruptedError:
            return
        registered = self.registered
        for fd, flags in events:
            known = registered.get(fd)
            obj = self.map.get(fd)
            if obj is None or known is None or known[0] is not obj:
                continue  # closed during this round; its number may already belong to a new connection
            wasyncore.readwrite(obj, flags)
            if isinstance(obj, FrontChannel):
                self.touched.append(obj)

    def _update(self, dispatchers: Iterable[Any]) -> None:
        epoll, registered, map_ = self.epoll, self.registered, self.map
        for obj in dispatchers:
            fd = obj._fileno
            if fd is None or map_.get(fd) is not obj:
                continue  # closed: the kernel dropped it, and its entry goes when the number is reused
            mask = obj.poll_mask() if isinstance(obj, FrontChannel) else dispatcher_mask(obj)
            known = registered.get(fd)
            if known is not None and known[0] is obj:
                if known[1] == mask:
                    continue
                if mask:
                    epoll.modify(fd, mask)
                    registered[fd] = (obj, mask)
                else:
                    self._forget(fd)
                continue
            if known is not None:
                self._forget(fd)
            if mask:
                try:
                    epoll.register(fd, mask)
                except FileExistsError:
                    epoll.modify(fd, mask)
                registered[fd] = (obj, mask)

    def _forget(self, fd: int) -> None:
        self.registered.pop(fd, None)
        try:
            self.epoll.unregister(fd)
        except OSError:
            pass  # already closed, and so already gone from the set

    def close(self) -> None:
        self.epoll.close()
