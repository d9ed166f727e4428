"""Envelope encryption of secrets at rest: AES-256-GCM, a fresh data key per record, wrapped by a KEK.

A sealed value is one line of text::

    enc:v1:{"k": "<KEK id>", "w": "<wrapped data key, base64>", "n": "<nonce, base64>", "c": "<ciphertext, base64>"}

The record's body is encrypted once with its own 256-bit data key (DEK) and an AAD naming where the value
lives (table, column, row key), so a sealed value copied into another row or column does not open there.
Only the DEK is wrapped by the key-encryption key (KEK), under the same AAD; rotating the KEK re-wraps DEKs
and never touches bodies.

KEKs (``KeyEncryptionKey``):

- ``LocalKeyFile``: the default. 256-bit keys in a JSON file (``<state dir>/kek.json``) created with mode
  0600 on first use and refused when group or others can read it. The file holds the active key and,
  during a rotation, the previous ones, which keep opening records until every record is re-wrapped.
  Processes notice a rotation by themselves: every wrap checks whether the file changed (a ``stat``), and an
  unknown key id makes them read it again.
- ``broker.security.keyprotect.KeyProtectKEK``: an IBM Key Protect root key (wrap/unwrap over its REST API).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import functools
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.security.filemodes import insecure_message, is_private, private_dir

PREFIX = "enc:v1:"
FILE_FORMAT = "drbroker-kek/1"


class SecretsError(Exception):
    """A sealed value cannot be opened (unknown KEK, wrong AAD, tampering) or the key file is unusable.

    Messages name key ids and files, never key material or plaintext.
    """


class KeyEncryptionKey(Protocol):
    """Wraps and unwraps data keys. Ids are opaque strings stored beside each wrapped key."""

    name: str

    def active_id(self) -> str:
        """The id new wraps use."""
        ...

    def wrap(self, dek: bytes, aad: bytes) -> tuple[str, bytes]:
        """Wrap ``dek`` under the active key; return (key id, wrapped key)."""
        ...

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        """Unwrap a key wrapped under ``kek_id``; raise SecretsError when that is impossible."""
        ...

    def is_current(self, kek_id: str) -> bool:
        """Whether a key wrapped under ``kek_id`` needs no re-wrap."""
        ...

    def begin_rotation(self) -> str:
        """Make a new key the active one (old ones still unwrap); return its id."""
        ...

    def finish_rotation(self) -> list[str]:
        """Forget the keys nothing is wrapped under any more; return their ids."""
        ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


class LocalKeyFile:
    """KEKs in a local JSON file (mode 0600): ``{"format", "active", "keys": {id: {"key", "created"}}}``."""

    name = "local"

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        # (active id, {id: key}), replaced as a whole so that readers never see half a reload.
        self._state: tuple[str, dict[str, bytes]] = ("", {})
        if not self.path.exists():
            if not create:
                raise SecretsError(f"key file {self.path} does not exist")
            self._create()
        self._reload(force=True)

    # file handling --------------------------------------------------------------------------------
    @staticmethod
    def _new_id() -> str:
        return f"k-{time.strftime('%Y%m%d', time.gmtime())}-{secrets.token_hex(4)}"

    def _create(self) -> None:
        private_dir(self.path.parent)
        kid = self._new_id()
        doc = {"format": FILE_FORMAT, "active": kid,
               "keys": {kid: {"key": _b64(AESGCM.generate_key(bit_length=256)), "created": time.time()}}}
        # O_EXCL: two processes starting at once must not both write a key (one would seal with a key the
        # other overwrote).
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
            fh.flush()
            os.fsync(fh.fileno())

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        # Checked on every stat (each wrap, each reload), not only at start: a chmod changes none of the rest.
        if not is_private(st):
            raise SecretsError(f"key file {insecure_message(self.path, stat.S_IMODE(st.st_mode))}")
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _reload(self, *, force: bool = False) -> None:
        with self._lock:
            try:
                seen = self._stat()
            except FileNotFoundError:
                raise SecretsError(f"key file {self.path} has disappeared") from None
            if not force and seen == self._seen:
                return
            try:
                doc = json.loads(self.path.read_text(encoding="utf-8"))
                keys = {kid: _unb64(entry["key"]) for kid, entry in doc["keys"].items()}
                active = doc["active"]
            except OSError as exc:  # e.g. a Secret mounted for another user: say so, not "invalid"
                raise SecretsError(f"key file {self.path} cannot be read: {exc.strerror}") from None
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise SecretsError(f"key file {self.path} is not a valid {FILE_FORMAT} file") from None
            if doc.get("format") != FILE_FORMAT or active not in keys or \
                    any(len(k) != 32 for k in keys.values()):
                raise SecretsError(f"key file {self.path} is not a valid {FILE_FORMAT} file")
            self._state, self._seen = (active, keys), seen

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write the file under an advisory lock; the new version replaces it atomically."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            yield doc
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(tfd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._reload(force=True)

    # KeyEncryptionKey -----------------------------------------------------------------------------
    def active_id(self) -> str:
        self._reload()
        return self._state[0]

    def key_ids(self) -> list[str]:
        self._reload()
        return sorted(self._state[1])

    def wrap(self, dek: bytes, aad: bytes) -> tuple[str, bytes]:
        # A stat per wrap: a rotation in another process switches this one to the new key at once.
        self._reload()
        kid, keys = self._state
        key = keys[kid]
        nonce = os.urandom(12)
        return kid, nonce + AESGCM(key).encrypt(nonce, dek, kid.encode() + b"\0" + aad)

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        key = self._state[1].get(kek_id)
        if key is None:
            self._reload()
            key = self._state[1].get(kek_id)
        if key is None:
            raise SecretsError(f"key {kek_id} is not in {self.path} (was the key file replaced?)")
        try:
            return AESGCM(key).decrypt(wrapped[:12], wrapped[12:], kek_id.encode() + b"\0" + aad)
        except InvalidTag:
            raise SecretsError(f"a data key wrapped under {kek_id} does not open: wrong record or "
                               "tampered") from None

    def is_current(self, kek_id: str) -> bool:
        return kek_id == self.active_id()

    def begin_rotation(self) -> str:
        kid = self._new_id()
        with self._exclusive() as doc:
            doc["keys"][kid] = {"key": _b64(AESGCM.generate_key(bit_length=256)), "created": time.time()}
            doc["active"] = kid
        return kid

    def finish_rotation(self) -> list[str]:
        with self._exclusive() as doc:
            retired = sorted(k for k in doc["keys"] if k != doc["active"])
            for kid in retired:
                del doc["keys"][kid]
        return retired


class Envelope:
    """Seals text (AES-256-GCM, a data key per value) and opens it again; the store's ``Sealer``."""

    def __init__(self, kek: KeyEncryptionKey, *, cache_size: int = 4096) -> None:
        self.kek = kek
        # Reads open the same few rows again and again (a platform polls last_operation, fetches instances).
        # A sealed value is immutable text (a re-wrap or a new write makes a new string), and its plaintext is
        # in this process's memory whenever it is used anyway, so the opened value is kept for the next read;
        # a tampered value is a different string and is opened, and refused, afresh.
        self._open = functools.lru_cache(maxsize=cache_size)(self._unseal) if cache_size else self._unseal

    @staticmethod
    def is_sealed(value: str | None) -> bool:
        return isinstance(value, str) and value.startswith(PREFIX)

    @staticmethod
    def _parse(value: str) -> dict[str, str]:
        try:
            doc = json.loads(value[len(PREFIX):])
            if not all(isinstance(doc.get(f), str) for f in ("k", "w", "n", "c")):
                raise ValueError
            return doc
        except ValueError:
            raise SecretsError("a sealed value is malformed") from None

    @classmethod
    def kek_id(cls, value: str) -> str:
        return cls._parse(value)["k"]

    def seal(self, plaintext: str, aad: str) -> str:
        dek = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        body = AESGCM(dek).encrypt(nonce, plaintext.encode("utf-8"), aad.encode("utf-8"))
        kid, wrapped = self.kek.wrap(dek, aad.encode("utf-8"))
        doc = {"k": kid, "w": _b64(wrapped), "n": _b64(nonce), "c": _b64(body)}
        return PREFIX + json.dumps(doc, separators=(",", ":"))

    def unseal(self, value: str, aad: str) -> str:
        """The plaintext of a sealed value; a value that was never sealed (written before encryption was
        introduced) is returned as it is, and ``drbroker keys rotate`` seals it."""
        if not self.is_sealed(value):
            return value
        return self._open(value, aad)

    def _unseal(self, value: str, aad: str) -> str:
        doc = self._parse(value)
        try:
            wrapped, nonce, body = _unb64(doc["w"]), _unb64(doc["n"]), _unb64(doc["c"])
        except (binascii.Error, ValueError):
            raise SecretsError("a sealed value is malformed") from None
        dek = self.kek.unwrap(doc["k"], wrapped, aad.encode("utf-8"))
        try:
            return AESGCM(dek).decrypt(nonce, body, aad.encode("utf-8")).decode("utf-8")
        except InvalidTag:
            raise SecretsError("a sealed value does not open: wrong record or tampered") from None

    def rewrap(self, value: str, aad: str) -> str | None:
        """The value with its data key wrapped under the active KEK (a plaintext value gets sealed), or
        None when nothing needs doing. The body ciphertext is kept as it is."""
        if not self.is_sealed(value):
            return self.seal(value, aad)
        doc = self._parse(value)
        if self.kek.is_current(doc["k"]):
            return None
        dek = self.kek.unwrap(doc["k"], _unb64(doc["w"]), aad.encode("utf-8"))
        kid, wrapped = self.kek.wrap(dek, aad.encode("utf-8"))
        return PREFIX + json.dumps({**doc, "k": kid, "w": _b64(wrapped)}, separators=(",", ":"))
