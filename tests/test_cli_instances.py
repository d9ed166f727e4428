"""``drbroker instances list|show`` read the broker's own state (secrets left out), as tables or JSON."""

from __future__ import annotations

import json

from click.testing import CliRunner

from broker.cli import main
from tests.conftest import KSYS_PARAMS, KSYS_PLAN


def test_instances_list_and_show(osb, worker, monkeypatch, settings) -> None:
    osb.ready("cli-a", KSYS_PLAN, KSYS_PARAMS)
    monkeypatch.setenv("DRBROKER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DRBROKER_CATALOG", settings.catalog_path)
    runner = CliRunner()
    out = runner.invoke(main, ["instances", "list", "--json"])
    assert out.exit_code == 0, out.output
    (row,) = json.loads(out.output)
    assert row["id"] == "cli-a" and row["plan"] == "ksys-managed" and row["state"] == "ready"
    text = runner.invoke(main, ["instances", "list"]).output
    assert "cli-a" in text and "ksys-managed" in text
    shown = runner.invoke(main, ["instances", "show", "cli-a", "--json"])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.output)
    assert doc["attributes"]["replication_state"] == "consistent_copying"
    assert "password" not in doc["parameters"]["orchestrator"]
    assert KSYS_PARAMS["orchestrator"]["password"] not in shown.output
    assert doc["operations"][0]["type"] == "provision"
    missing = runner.invoke(main, ["instances", "show", "nope"])
    assert missing.exit_code != 0 and "does not exist" in missing.output
