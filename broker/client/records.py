"""What this client created, per broker URL: the local record behind ``drbroker client list``.

OSB has no endpoint listing a broker's instances (a platform keeps its own list), and this broker adds none:
its full list is ``drbroker instances list``, which reads the broker's database where the broker runs. So the
client remembers the instances it provisioned (and the last operation it started on each, to name it later)
in ``$XDG_STATE_HOME/drbroker/client-instances.json`` (default ``~/.local/state``), mode 0600. ``list`` checks
every entry with the broker and forgets those it no longer has.

A record that cannot be read or written never fails a command: the request has been made by then; a warning
says the record was not updated.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click


def record_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "drbroker" / "client-instances.json"


class Records:
    """The instances this machine's client created on one broker (``url``)."""

    def __init__(self, url: str, path: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.path = path or record_path()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The whole record, locked against a concurrent client, written back when the block ends."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            text = fh.read()
            try:
                doc = json.loads(text) if text.strip() else {}
            except ValueError:
                doc = {}
            if not isinstance(doc, dict) or not isinstance(doc.get("brokers"), dict):
                doc = {"version": 1, "brokers": {}}
            before = json.dumps(doc, sort_keys=True)
            yield doc
            after = json.dumps(doc, sort_keys=True, indent=1)
            if after != before:
                fh.seek(0)
                fh.truncate()
                fh.write(after + "\n")

    def _update(self, change: Any) -> None:
        try:
            with self._locked() as doc:
                change(doc["brokers"].setdefault(self.url, {}))
        except OSError as exc:
            click.echo(f"warning: the local record of instances ({self.path}) was not updated: {exc}", err=True)

    def all(self) -> dict[str, dict[str, Any]]:
        try:
            with self._locked() as doc:
                entries = doc["brokers"].get(self.url, {})
                return {k: v for k, v in entries.items() if isinstance(v, dict)}
        except OSError:
            return {}

    def remember(self, instance_id: str, *, service_id: str, plan_id: str) -> None:
        def change(entries: dict[str, Any]) -> None:
            entry = entries.setdefault(instance_id, {})
            entry.update({"service_id": service_id, "plan_id": plan_id})
            entry.setdefault("created_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self._update(change)

    def started(self, instance_id: str, operation: str | None, action: str) -> None:
        """The operation this client just started on an instance it created (others are not recorded)."""
        def change(entries: dict[str, Any]) -> None:
            if instance_id in entries:
                entries[instance_id]["last"] = {"operation": operation, "action": action}
        self._update(change)

    def forget(self, instance_id: str) -> None:
        self._update(lambda entries: entries.pop(instance_id, None))

    def action_of(self, instance_id: str, operation: str | None = None) -> str | None:
        """The action of ``operation`` (or of the last operation this client started) on the instance."""
        last = self.all().get(instance_id, {}).get("last") or {}
        if operation is None or last.get("operation") == operation:
            return last.get("action")
        return None
