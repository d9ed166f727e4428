"""File modes of the broker's state: a private directory, a private database, and key files nobody else reads.

- The state directory (``./.drbroker`` by default, else the SQLite file's directory) is created 0700; an
  existing one that the group or others can enter is logged as a warning (it may be shared on purpose).
- The SQLite database is created 0600 before SQLite opens it; SQLite gives its ``-wal`` and ``-shm`` files the
  database file's mode, and existing ones that are group/other-accessible are tightened to 0600.
- Key files (``kek.json``, ``dashboard.key``, ``credentials.json``, the TLS private key) are checked every time
  they are read: one the group or others can read is refused with a one-line error naming the ``chmod``.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("drbroker")


class InsecureFileError(Exception):
    """A key file the group or others may read (the message names the file and the chmod to run)."""


def insecure_message(path: Path | str, mode: int) -> str:
    return f"{path} is readable by group or others (mode {mode:04o}); run: chmod 600 {path}"


def check_private(path: Path | str, mode: int | None = None) -> None:
    """Refuse a key file whose mode lets the group or others read or write it (``mode``: from a stat made
    already, to save another)."""
    if mode is None:
        mode = os.stat(path).st_mode
    mode = stat.S_IMODE(mode)
    if mode & 0o077:
        raise InsecureFileError(insecure_message(path, mode))


def private_dir(path: Path | str) -> Path:
    """Create ``path`` (and missing parents) 0700, or warn when an existing one is group/other-accessible."""
    path = Path(path)
    if not path.exists():
        try:
            path.mkdir(mode=0o700, parents=True)
            os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask: say it exactly
        except FileExistsError:
            pass  # another process made it meanwhile
        return path
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("state directory %s is accessible by group or others (mode %04o); run: chmod 700 %s",
                    path, mode, path)
    return path


def private_sqlite(database: Path | str) -> None:
    """Create the SQLite file 0600 (an empty file is an empty database) and tighten existing ones and their
    ``-wal``/``-shm`` files, which SQLite creates with the database file's mode."""
    database = Path(database)
    private_dir(database.parent)
    try:
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for path in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                os.chmod(path, 0o600)
                log.warning("%s was accessible by group or others (mode %04o): made it 0600", path, mode)
        except FileNotFoundError:
            continue
        except PermissionError:
            log.warning("%s is accessible by group or others and cannot be changed: run: chmod 600 %s",
                        path, path)
