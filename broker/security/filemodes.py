"""File modes of the broker's state: a private directory, a private database, and key files nobody else reads.

- The state directory (``DRBROKER_STATE_DIR``; unset, the SQLite file's directory, else ``./.drbroker``) is
  created 0700; an existing one that the group or others can enter is logged as a warning (it may be shared on
  purpose).
- The SQLite database is created 0600 before SQLite opens it; SQLite gives its ``-wal`` and ``-shm`` files the
  database file's mode, and existing ones that are group/other-accessible are tightened to 0600.
- Key files (``kek.json``, ``dashboard.key``, ``credentials.json``, the TLS private key) are checked every time
  they are read: one the group or others can read is refused with a one-line error naming the ``chmod``.
  One exception: a file owned by root that only this (non-root) process's own group may read, and nobody may
  write but root. That is how Kubernetes mounts a Secret into a pod with ``fsGroup`` (the kubelet makes the
  files ``root:<fsGroup>`` and adds group read to ``defaultMode``); only the pod's processes are in that group
  and the broker cannot change the file. A file the broker's user owns (every file it generates) stays 0600.
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


def _root_share_for_my_group(st: os.stat_result) -> bool:
    mode = stat.S_IMODE(st.st_mode)
    return (st.st_uid == 0 and os.geteuid() != 0 and mode & 0o077 == 0o040
            and st.st_gid in {os.getegid(), *os.getgroups()})


def is_private(st: os.stat_result) -> bool:
    """Whether a key file with this stat is readable by its owner only (or is a Secret mounted for this process's
    group; see the module's docstring)."""
    return not stat.S_IMODE(st.st_mode) & 0o077 or _root_share_for_my_group(st)


def check_private(path: Path | str, st: os.stat_result | None = None) -> None:
    """Refuse a key file that the group or others may read or write (``st``: a stat made already, to save
    another)."""
    if st is None:
        st = os.stat(path)
    if not is_private(st):
        raise InsecureFileError(insecure_message(path, stat.S_IMODE(st.st_mode)))


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
