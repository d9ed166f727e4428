"""The audit chain's head, kept outside the database (``DRBROKER_AUDIT_CHECKPOINT``).

A MAC stops someone without the KEK from rewriting records, but not from deleting the newest ones: what is left
is still a valid chain. The checkpoint file remembers the newest head this host's brokers appended (its id and
MAC), so ``drbroker audit verify`` can tell that records it names are gone. The file is one JSON object::

    {"format": "drbroker-audit-checkpoint/1", "id": 1234, "mac": "<64 hex>", "chain": "hmac-sha256", "at": ...}

written atomically (a 0600 temporary file in the same directory, fsync, rename, fsync of the directory) under
an advisory lock shared by the host's processes, and only forward: a process never replaces a newer head with
an older one, and never replaces a head that is no longer in the table (that is the evidence of a truncation;
the file stays as it is until someone looks). Each process writes at most once per ``interval`` seconds: the
newest head it appended is written at once when the last write is older than that, else by a timer when the
interval has passed, and at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from broker.security.filemodes import private_dir

FORMAT = "drbroker-audit-checkpoint/1"

log = logging.getLogger("drbroker.audit")


class CheckpointError(Exception):
    """The checkpoint file cannot be read or is not one."""


@dataclass(frozen=True)
class Checkpoint:
    id: int
    mac: str
    chain: str
    at: float = 0.0


def read(path: Path) -> Checkpoint:
    """The checkpoint in ``path``; FileNotFoundError when there is none, CheckpointError when it is not one."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT:
            raise ValueError
        checkpoint = Checkpoint(int(doc["id"]), str(doc["mac"]), str(doc["chain"]), float(doc.get("at") or 0))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path} is not a {FORMAT} file ({type(exc).__name__})") from None
    if checkpoint.id < 0 or len(checkpoint.mac) != 64:
        raise CheckpointError(f"{path} is not a {FORMAT} file")
    return checkpoint


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _replace(path: Path, checkpoint: Checkpoint) -> None:
    doc = {"format": FORMAT, "id": checkpoint.id, "mac": checkpoint.mac, "chain": checkpoint.chain,
           "at": checkpoint.at}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write(path: Path, checkpoint: Checkpoint, still_there: Callable[[Checkpoint], bool]) -> bool:
    """Replace the file's head with ``checkpoint`` if it is newer and the file's head is still in the table
    (``still_there``); True when the file was written."""
    private_dir(path.parent)
    with _locked(path):
        try:
            current: Checkpoint | None = read(path)
        except FileNotFoundError:
            current = None
        except CheckpointError:
            log.error("audit checkpoint %s is unreadable; it is left for `drbroker audit verify` to report", path)
            return False
        if current is not None:
            if current.id >= checkpoint.id:
                return False
            if current.id > 0 and not still_there(current):
                log.error("audit checkpoint %s names record #%d, which is no longer in the audit trail "
                          "(records were removed); the checkpoint is kept as it is: run `drbroker audit verify`",
                          path, current.id)
                return False
        _replace(path, checkpoint)
        return True


class CheckpointWriter:
    """Writes the newest head this process appended, at most once per ``interval`` seconds."""

    def __init__(self, path: Path | str, still_there: Callable[[Checkpoint], bool], *, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.interval = interval
        self.clock = clock
        self._still_there = still_there
        self._lock = threading.Lock()
        self._pending: Checkpoint | None = None
        self._last_write = float("-inf")
        self._timer: threading.Timer | None = None
        self._pid = os.getpid()
        atexit.register(self.flush)

    def _after_fork(self) -> None:
        # A timer started before a fork does not exist in the child.
        if self._pid != os.getpid():
            self._pid, self._timer, self._last_write = os.getpid(), None, float("-inf")

    def note(self, checkpoint: Checkpoint) -> None:
        """A record was appended: write it now, or when the interval has passed."""
        with self._lock:
            self._after_fork()
            if self._pending is None or checkpoint.id > self._pending.id:
                self._pending = checkpoint
            wait = self._last_write + self.interval - self.clock()
            if wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._on_timer)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self.flush()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write the pending head, if any (also at exit)."""
        with self._lock:
            self._after_fork()
            pending, self._pending = self._pending, None
            if pending is None:
                return
            self._last_write = self.clock()
            try:
                write(self.path, pending, self._still_there)
            except Exception:
                # The audit record is in the database; only its copy outside is late. Never the client's error.
                log.exception("could not write the audit checkpoint %s", self.path)
