"""DRBROKER_STATE_DIR: the one directory every file the broker writes goes to (kek.json, dashboard.key, the
generated credentials.json, and the SQLite database unless DRBROKER_DATABASE_URL says otherwise)."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner

from broker.app import build_runtime
from broker.cli import main
from broker.config import Settings
from tests.conftest import ROOT


def test_the_state_dir_setting_moves_the_key_files_and_the_default_database() -> None:
    s = Settings.from_env(env={"DRBROKER_STATE_DIR": "/var/lib/drbroker/state"})
    assert s.state_dir == Path("/var/lib/drbroker/state")
    assert s.kek_path == Path("/var/lib/drbroker/state/kek.json")
    assert s.database_url == "sqlite:////var/lib/drbroker/state/state.db"
    # An explicit database stays where it is; the files the broker generates still go to the state dir.
    s = Settings.from_env(env={"DRBROKER_STATE_DIR": "/srv/state", "DRBROKER_DATABASE_URL": "sqlite:////db/x.db"})
    assert s.database_url == "sqlite:////db/x.db" and s.state_dir == Path("/srv/state")
    s = Settings.from_env(env={"DRBROKER_STATE_DIR": "/srv/state", "DRBROKER_DATABASE_URL": "postgresql://h/db"})
    assert s.state_dir == Path("/srv/state")


def test_without_it_the_state_dir_is_the_sqlite_files_directory_else_dot_drbroker() -> None:
    assert Settings.from_env(env={}).state_dir == Path(".drbroker")
    assert Settings.from_env(env={"DRBROKER_DATABASE_URL": "sqlite:////db/x.db"}).state_dir == Path("/db")
    assert Settings.from_env(env={"DRBROKER_DATABASE_URL": "postgresql://h/db"}).state_dir == Path(".drbroker")


def test_generated_credentials_kek_and_link_key_land_in_the_state_dir_not_beside_the_database(
        tmp_path: Path) -> None:
    state, db = tmp_path / "state", tmp_path / "db"
    env = {"DRBROKER_STATE_DIR": str(state), "DRBROKER_DATABASE_URL": f"sqlite:///{db / 'state.db'}",
           "DRBROKER_CATALOG": str(ROOT / "catalog")}
    runtime = build_runtime(Settings.from_env(env=env))
    try:
        assert runtime.generated_password  # no configured pair: one generated, kept (hashed) in the state dir
    finally:
        runtime.store.engine.dispose()
    result = CliRunner().invoke(main, ["dashboard", "link", "i-1", "--base-url", "https://b.example"], env=env)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in state.iterdir()) == ["credentials.json", "dashboard.key", "kek.json"]
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in state.iterdir())
    assert sorted(p.name for p in db.iterdir() if not p.name.startswith("state.db")) == []


def test_dashboard_link_says_what_to_set_when_the_state_dir_cannot_be_written(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    env = {"DRBROKER_STATE_DIR": str(blocked / "state"), "DRBROKER_DATABASE_URL": "postgresql://h/db"}
    result = CliRunner().invoke(main, ["dashboard", "link", "i-1", "--base-url", "https://b.example"], env=env)
    assert result.exit_code == 1
    assert "DRBROKER_DASHBOARD_SECRET" in result.output and "DRBROKER_STATE_DIR" in result.output
    assert "Traceback" not in result.output
