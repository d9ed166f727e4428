from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from broker.store import db
from broker.store.tables import metadata


def test_migrations_produce_exactly_the_tables_the_code_uses(db_url: str) -> None:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    assert not db.needs_upgrade(engine)


def test_upgrade_is_idempotent(db_url: str) -> None:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    db.upgrade(engine)
    assert db.current_revision(engine) == "0009"


def test_postgresql_urls_select_psycopg3() -> None:
    assert db.normalise_url("postgresql://u@h/d").startswith("postgresql+psycopg://")
    assert db.normalise_url("postgres://u:p@h:5432/d") == "postgresql+psycopg://u:p@h:5432/d"
    assert db.normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_db_upgrade_command(tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from broker.cli import main

    monkeypatch.setenv("DRBROKER_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    result = CliRunner().invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "revision 0009" in result.output


def test_0006_keeps_rows_and_their_plain_digests_readable(db_url: str, tmp_path: Path) -> None:
    """Rows written before request digests were sealed survive the column change and still compare as they are
    (the store opens a value that was never sealed to itself); ``keys rotate`` seals them later."""
    from alembic import command
    from sqlalchemy import insert

    from broker.security.envelope import Envelope, LocalKeyFile
    from broker.store.repository import Store
    from broker.store.tables import instances

    engine = db.make_engine(db_url)
    if db.current_revision(engine) is None:
        db.upgrade(engine, "0005")
    else:
        with engine.begin() as conn:
            cfg = db.alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0005")
    digest = "a" * 64
    with engine.begin() as conn:
        conn.execute(insert(instances).values(
            id="before-0006", service_id="s", plan_id="p", state="ready", parameters='{"rpo_target_minutes": 15}',
            context="{}", request_hash=digest, enabled=True, created_at=1.0, updated_at=1.0))
    db.upgrade(engine)
    assert db.current_revision(engine) == "0009"
    store = Store(engine, Envelope(LocalKeyFile(tmp_path / "kek.json")))
    with store.read() as tx:
        inst = tx.get_instance("before-0006")
    assert inst is not None and inst.request_hash == digest and inst.parameters == {"rpo_target_minutes": 15}
    with store.write() as tx:  # a new row's digest is longer than the old column allowed
        tx.replace_instance(inst)
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT request_hash FROM instances WHERE id = 'before-0006'").scalar_one()
    assert stored.startswith("enc:") and len(stored) > 64
    engine.dispose()
