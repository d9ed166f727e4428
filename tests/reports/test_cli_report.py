"""``drbroker report``: the scope, the period and the format on the command line, and one-line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from broker.cli import main
from tests.conftest import KSYS_PARAMS, KSYS_PLAN, OSB


@pytest.fixture
def cli(osb: OSB, worker: Any, monkeypatch: pytest.MonkeyPatch, settings: Any) -> CliRunner:
    osb.ready("cli-r1", KSYS_PLAN, KSYS_PARAMS)
    monkeypatch.setenv("DRBROKER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DRBROKER_CATALOG", settings.catalog_path)
    return CliRunner()


def _one_line_error(result: Any, *words: str) -> None:
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_report_per_instance_as_json(cli: CliRunner) -> None:
    out = cli.invoke(main, ["report", "--instance", "cli-r1", "--days", "7"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["scope"] == {"kind": "instance", "value": "cli-r1"}
    assert [i["instance_id"] for i in doc["instances"]] == ["cli-r1"]


def test_report_per_account_as_csv_and_all_as_html_to_a_file(cli: CliRunner, tmp_path: Path) -> None:
    account = KSYS_PARAMS["primary_workspace_crn"].split(":a/")[1].split(":")[0]
    out = cli.invoke(main, ["report", "--account", account, "--format", "csv", "--since", "2026-01-01",
                            "--until", "2099-01-01T00:00:00Z"])
    assert out.exit_code == 0, out.output
    (row,) = list(csv.DictReader(io.StringIO(out.output)))
    assert row["instance_id"] == "cli-r1" and row["period_since"] == "2026-01-01T00:00:00.000000Z"
    assert cli.invoke(main, ["report", "--account", "someone-else", "--format", "csv"]).output.count("\n") == 1
    page = tmp_path / "report.html"
    done = cli.invoke(main, ["report", "--all", "--format", "html", "--output", str(page)])
    assert done.exit_code == 0 and done.output == ""
    assert 'data-instance="cli-r1"' in page.read_text()


@pytest.mark.parametrize(("args", "words"), [
    (["--instance", "cli-r1", "--since", "yesterday"], ("--since", "'yesterday'", "ISO 8601")),
    (["--instance", "cli-r1", "--until", "2026-13-01"], ("--until", "'2026-13-01'")),
    (["--instance", "cli-r1", "--days", "many"], ("--days", "'many'")),
    (["--instance", "cli-r1", "--days", "0"], ("--days", "more than 0")),
    (["--instance", "cli-r1", "--days", "3", "--since", "2026-01-01"], ("--days", "not both")),
    (["--instance", "cli-r1", "--since", "2026-02-01", "--until", "2026-01-01"], ("--since", "begin before")),
    (["--instance", "cli-r1", "--all"], ("--instance and --all",)),
    ([], ("--instance ID", "--all")),
    (["--instance", "nope"], ("instance nope does not exist",)),
])
def test_bad_arguments_are_one_line_errors_naming_the_option(cli: CliRunner, args: list[str],
                                                             words: tuple[str, ...]) -> None:
    _one_line_error(cli.invoke(main, ["report", *args]), *words)


def test_an_unwritable_output_file_is_a_one_line_error(cli: CliRunner, tmp_path: Path) -> None:
    _one_line_error(cli.invoke(main, ["report", "--all", "--output", str(tmp_path / "no" / "such" / "r.json")]),
                    "--output", "cannot write")


def test_a_missing_database_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRBROKER_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    _one_line_error(CliRunner().invoke(main, ["report", "--all"]), "no broker database")


def test_a_bad_retention_setting_stops_with_the_variable_named(cli: CliRunner,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRBROKER_RPO_SAMPLE_KEEP_DAYS", "0")
    out = cli.invoke(main, ["report", "--all"])
    assert out.exit_code != 0 and "DRBROKER_RPO_SAMPLE_KEEP_DAYS=0 must be more than 0" in str(out.exception)
