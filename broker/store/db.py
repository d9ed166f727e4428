"""Engines and schema upgrades.

SQLite is the embedded default. Several processes may share one file, so every connection runs in WAL
mode with a generous busy timeout, and write transactions start with ``BEGIN IMMEDIATE``: a deferred
transaction that later upgrades to a write lock can fail with SQLITE_BUSY without waiting, which would
surface as a spurious 500 under load.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url

from broker.security.filemodes import private_sqlite

_ALEMBIC_INI = Path(__file__).with_name("alembic.ini")


# Every thread of a serving process may hold a connection at once: gunicorn's request threads (8), the
# operation worker's threads and its heartbeat, the RPO sampler. Connections beyond the pool's size are opened
# and closed on each use, which on SQLite repeats the connection set-up (journal mode, busy timeout) per
# request; the pool keeps enough for all of them.
POOL_SIZE = 16
POOL_OVERFLOW = 16


def normalise_url(url: str) -> str:
    """Accept the URLs users write: ``postgresql://`` selects the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            # 0700 directory, 0600 database (and so -wal/-shm): see broker.security.filemodes.
            private_sqlite(parsed.database)
        # hide_parameters: statement values never appear in SQLAlchemy's logs or exception messages.
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               hide_parameters=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW,
                         hide_parameters=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so that BEGIN IMMEDIATE is ours to issue.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        # Straight to the driver: BEGIN needs none of SQLAlchemy's statement machinery, and it runs for
        # every transaction the broker opens. No mode: each statement is its own transaction (the driver is
        # in autocommit mode, and COMMIT with no transaction open is skipped by it).
        if mode is not None:
            conn.connection.dbapi_connection.execute(_BEGIN[mode])


_BEGIN = {"DEFERRED": "BEGIN DEFERRED", "IMMEDIATE": "BEGIN IMMEDIATE"}


_WRITER_LOCKS: dict[int, threading.RLock] = {}
_WRITER_LOCKS_GUARD = threading.Lock()


def writer_lock(engine: Engine) -> AbstractContextManager[Any]:
    """Serialise this process's writers on one SQLite file (a no-op on PostgreSQL).

    SQLite lets one writer in at a time, and a writer that finds the lock taken sleeps in growing steps (up to
    100 ms) before it looks again, so threads racing for it spend most of their time asleep while the lock is
    free. Queuing them on a Python lock first hands the database over at once; other processes still meet
    SQLite's own lock and busy timeout.
    """
    if not is_sqlite(engine):
        return nullcontext()
    with _WRITER_LOCKS_GUARD:
        return _WRITER_LOCKS.setdefault(id(engine), threading.RLock())


def alembic_config() -> Config:
    return Config(str(_ALEMBIC_INI))


# "drmigrat": one advisory lock for every broker's schema upgrade on a PostgreSQL server.
_MIGRATION_LOCK_KEY = 0x6472_6D69_6772_6174


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (Alembic), inside one transaction.

    Replicas and platform start commands run this at once (two Cloud Foundry instances, a Job retried while
    the first attempt still runs): the transaction first takes the database's write lock (SQLite) or an
    advisory lock (PostgreSQL), so the others wait, then find the schema current and do nothing.
    """
    cfg = alembic_config()
    sqlite = is_sqlite(engine)
    with engine.connect().execution_options(**({"sqlite_begin": "IMMEDIATE"} if sqlite else {})) as conn, \
            conn.begin():
        if not sqlite:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def needs_upgrade(engine: Engine) -> bool:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return current_revision(engine) != head


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("instances")
