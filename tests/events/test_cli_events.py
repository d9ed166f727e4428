"""``drbroker events list|show`` on a real database (click's runner, the real store)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from broker.app import Runtime
from broker.cli import main
from broker.events.log import DrEvent, record
from tests.conftest import ROOT

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key in [k for k in os.environ if k.startswith("DRBROKER_")]:
        monkeypatch.delenv(key)
    env = {"DRBROKER_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}", "DRBROKER_CATALOG": str(ROOT / "catalog")}
    runner = CliRunner()

    def run(*args: str, code: int = 0, db: Path | None = None) -> Result:
        url = {"DRBROKER_DATABASE_URL": f"sqlite:///{db}"} if db else {}
        result = runner.invoke(main, ["events", *args], env={**env, **url}, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result
    return run


@pytest.fixture
def log(runtime: Runtime) -> list[dict[str, Any]]:
    """Five events an hour apart on two instances."""
    rows = []
    with runtime.store.write() as tx:
        for n, (kind, iid) in enumerate([("instance.provisioned", "i-1"), ("rehearsal.started", "i-1"),
                                         ("rehearsal.passed", "i-1"), ("rpo.breached", "i-2"),
                                         ("binding.issued", "i-2")]):
            rows.append(record(tx.conn, DrEvent(kind, iid, f"{kind} of {iid}", {"n": n},
                                                binding_id="b-1" if kind.startswith("binding") else None),
                               at=T0 + n * 3600))
    return rows


def _seqs(result: Result) -> list[int]:
    return [e["seq"] for e in json.loads(result.output)]


def test_list_shows_the_newest_events_oldest_first_as_a_table_or_json(log: list[dict[str, Any]], cli: Any) -> None:
    lines = cli("list").output.splitlines()
    assert lines[0].split() == ["SEQ", "AT", "TYPE", "SEVERITY", "INSTANCE", "SUMMARY"]
    assert [line.split()[:3] for line in lines[1:3]] == [["1", "2026-03-01T12:00:00.000Z", "instance.provisioned"],
                                                        ["2", "2026-03-01T13:00:00.000Z", "rehearsal.started"]]
    assert len(lines) == 6
    out = json.loads(cli("list", "--json").output)
    assert [e["type"] for e in out] == [e["type"] for e in log]
    assert out[4] == {**log[4], "at": "2026-03-01T16:00:00.000Z"}
    assert _seqs(cli("list", "--limit", "2", "--json")) == [4, 5]  # the newest two


def test_list_filters_by_instance_type_prefix_and_time(log: list[dict[str, Any]], cli: Any) -> None:
    assert _seqs(cli("list", "--instance", "i-2", "--json")) == [4, 5]
    assert _seqs(cli("list", "--type", "rehearsal.*", "--json")) == [2, 3]
    assert _seqs(cli("list", "--type", "rpo.breached", "--type", "instance.provisioned", "--json")) == [1, 4]
    assert _seqs(cli("list", "--since", "2026-03-01T13:00:00Z", "--until", "2026-03-01T15:00:00Z",
                     "--json")) == [2, 3]
    assert _seqs(cli("list", "--since", "2026-03-01T14:00:00+01:00", "--json")) == [2, 3, 4, 5]
    assert cli("list", "--instance", "nobody").output == "no events\n"


@pytest.mark.parametrize(("args", "option"), [
    (["--type", "rehersal.passed"], "--type"),
    (["--type", "nothing.*"], "--type"),
    (["--since", "yesterday"], "--since"),
    (["--until", "2026-13-01"], "--until"),
    (["--since", "2026-03-02", "--until", "2026-03-01"], "--until"),
    (["--limit", "0"], "--limit"),
])
def test_a_bad_filter_is_a_one_line_error_naming_the_option(runtime: Runtime, cli: Any, args: list[str],
                                                            option: str) -> None:
    result = cli("list", *args, code=2)
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and option in error[0], result.output
    assert "Traceback" not in result.output


def test_show_prints_one_event_by_seq_or_id(log: list[dict[str, Any]], cli: Any) -> None:
    text = cli("show", "5").output
    assert "type          binding.issued" in text and "binding_id    b-1" in text
    assert '  n                    4' in text
    assert json.loads(cli("show", log[2]["id"], "--json").output) == {**log[2], "at": "2026-03-01T14:00:00.000Z"}
    missing = cli("show", "99", code=1)
    assert missing.output.strip() == "Error: no event 99 (give its seq or id; see `drbroker events list`)"


def test_without_a_broker_database_it_says_so(tmp_path: Path, cli: Any) -> None:
    assert "no broker database here" in cli("list", code=1, db=tmp_path / "empty.db").output
