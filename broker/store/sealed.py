"""Which columns hold secrets, and how the store seals them at the row boundary.

Sealed columns (their JSON text is encrypted as a whole, see ``broker.security.envelope``):

- ``instances.parameters``: may carry ``ibmcloud_api_key`` and ``orchestrator.password`` (``writeOnly`` in
  the plan schemas);
- ``bindings.parameters`` and ``bindings.credentials``: what a consumer was issued (API key, wrapped DEK);
- ``operations.payload``: an update carries its ``target_parameters``, secrets included;
- ``operation_steps.outputs``: a step may hand a later one a wrapped data key;
- ``request_hash`` of instances, bindings and operations: a SHA-256 of the request, parameters included; bare, it
  would let anyone holding the database test guesses of a low-entropy secret (a password) offline.

Each value's AAD names its table, column and row key, so a sealed value moved to another row fails to open.
The repository seals on write and opens on read; nothing above it sees ciphertext.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, and_, select, update

from broker.store.db import is_sqlite
from broker.store.tables import bindings, instances, operation_steps, operations


class Sealer(Protocol):
    def seal(self, plaintext: str, aad: str) -> str: ...

    def unseal(self, value: str, aad: str) -> str: ...

    def rewrap(self, value: str, aad: str) -> str | None: ...


class PlainText:
    """No encryption (unit tests of the store alone). ``broker.app`` always gives the store an Envelope."""

    def seal(self, plaintext: str, aad: str) -> str:
        return plaintext

    def unseal(self, value: str, aad: str) -> str:
        if value.startswith("enc:"):
            raise RuntimeError("a sealed value was read by a store that has no key")
        return value

    def rewrap(self, value: str, aad: str) -> str | None:
        return None


# table name -> (primary key columns, sealed columns)
SEALED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "instances": (("id",), ("parameters", "request_hash")),
    "bindings": (("instance_id", "id"), ("parameters", "credentials", "request_hash")),
    "operations": (("id",), ("payload", "request_hash")),
    "operation_steps": (("operation_id", "idx"), ("outputs",)),
}
_TABLES = {"instances": instances, "bindings": bindings, "operations": operations,
           "operation_steps": operation_steps}


def aad(table: str, column: str, key: tuple[Any, ...]) -> str:
    # Ids cannot hold control characters (the API refuses them), so \x1f separates parts unambiguously.
    return "\x1f".join(("drbroker", table, column, *(str(k) for k in key)))


def seal_values(sealer: Sealer, table: str, values: dict[str, Any], key: tuple[Any, ...]) -> dict[str, Any]:
    """Seal, in place, the sealed columns present in ``values`` (already JSON text)."""
    for column in SEALED[table][1]:
        if values.get(column) is not None:
            values[column] = sealer.seal(values[column], aad(table, column, key))
    return values


def open_values(sealer: Sealer, table: str, values: dict[str, Any]) -> dict[str, Any]:
    """Open, in place, the sealed columns of a row read whole (its key columns are in ``values``)."""
    key_cols, columns = SEALED[table]
    key = tuple(values[k] for k in key_cols)
    for column in columns:
        if values.get(column) is not None:
            values[column] = sealer.unseal(values[column], aad(table, column, key))
    return values


@dataclass
class RewrapStats:
    examined: int = 0
    rewrapped: int = 0
    sealed_plaintext: int = 0
    raced: int = 0
    transactions: int = 0


def rewrap_all(engine: Engine, sealer: Sealer, *, batch: int = 50,
               progress: Callable[[str, RewrapStats], None] | None = None) -> RewrapStats:
    """One pass over every sealed value: re-wrap what is not under the active KEK, seal legacy plaintext.

    Online: each batch of rows is its own short write transaction (``BEGIN IMMEDIATE`` on SQLite), and each
    row is updated only if its value is still the one read (a concurrent writer's newer value is left for the
    next pass, counted in ``raced``). Run passes until one rewraps nothing.
    """
    stats = RewrapStats()
    for name, (key_cols, columns) in SEALED.items():
        table = _TABLES[name]
        keys = [table.c[k] for k in key_cols]
        last: tuple[Any, ...] | None = None
        while True:
            with engine.connect() as conn:
                if is_sqlite(engine):
                    conn = conn.execution_options(sqlite_begin="IMMEDIATE")
                with conn.begin():
                    stmt = select(*keys, *(table.c[c] for c in columns)).order_by(*keys).limit(batch)
                    if last is not None:
                        stmt = stmt.where(_after(keys, last))
                    rows = conn.execute(stmt).all()
                    for row in rows:
                        key = tuple(row[: len(keys)])
                        for i, column in enumerate(columns):
                            value = row[len(keys) + i]
                            if value is None:
                                continue
                            stats.examined += 1
                            new = sealer.rewrap(value, aad(name, column, key))
                            if new is None:
                                continue
                            cond = and_(*(k == v for k, v in zip(keys, key, strict=True)), table.c[column] == value)
                            done = conn.execute(update(table).where(cond).values({column: new})).rowcount
                            if not done:
                                stats.raced += 1
                            elif value.startswith("enc:"):
                                stats.rewrapped += 1
                            else:
                                stats.sealed_plaintext += 1
                    stats.transactions += 1
            if not rows:
                break
            last = tuple(rows[-1][: len(keys)])
            if progress is not None:
                progress(name, stats)
    return stats


def _after(keys: list[Any], last: tuple[Any, ...]) -> Any:
    """Keyset pagination: rows whose key sorts after ``last`` (lexicographic over the key columns)."""
    if len(keys) == 1:
        return keys[0] > last[0]
    return (keys[0] > last[0]) | and_(keys[0] == last[0], _after(keys[1:], last[1:]))


def count_by_kek(engine: Engine, kek_id_of: Callable[[str], str]) -> dict[str, int]:
    """How many sealed values each KEK id wraps (``"plaintext"`` for values never sealed)."""
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        for name, (_key_cols, columns) in SEALED.items():
            table = _TABLES[name]
            for column in columns:
                for (value,) in conn.execute(select(table.c[column]).where(table.c[column].is_not(None))):
                    kid = kek_id_of(value) if value.startswith("enc:") else "plaintext"
                    counts[kid] = counts.get(kid, 0) + 1
    return counts


def sample_by_kek(engine: Engine, kek_id_of: Callable[[str], str], *,
                  per_column: int = 20) -> dict[str, tuple[str, str, str]]:
    """One sealed value per KEK id among the last ``per_column`` rows (by key) of every sealed column:
    ``{kek id: (table, column AAD, value)}``. Cheap enough for every start (a few indexed queries), and a
    replica given another key file finds every id unknown."""
    found: dict[str, tuple[str, str, str]] = {}
    with engine.connect() as conn:
        for name, (key_cols, columns) in SEALED.items():
            table = _TABLES[name]
            keys = [table.c[k] for k in key_cols]
            for column in columns:
                stmt = (select(*keys, table.c[column]).where(table.c[column].like("enc:%"))
                        .order_by(*(k.desc() for k in keys)).limit(per_column))
                for row in conn.execute(stmt):
                    value = row[len(keys)]
                    try:
                        kid = kek_id_of(value)
                    except Exception:  # noqa: S112 - a malformed value is reported when it is read
                        continue
                    found.setdefault(kid, (name, aad(name, column, tuple(row[: len(keys)])), value))
    return found
