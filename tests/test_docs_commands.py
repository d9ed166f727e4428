"""Every command the CLI has is listed in docs/commands.md, which the README links; no document points outside
the repository."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click

from broker.cli import main
from tests.conftest import ROOT


def _commands(cmd: click.Command, path: list[str]) -> Iterator[str]:
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from _commands(sub, [*path, name])
    else:
        yield " ".join(path)


def test_every_command_is_listed_in_docs_commands() -> None:
    text = (ROOT / "docs" / "commands.md").read_text()
    commands = list(_commands(main, ["drbroker"]))
    assert len(commands) > 20
    missing = []
    for command in commands:
        words = command.split()
        if words[1] == "client":  # the client's subcommands are listed together, by name
            if f"`{words[2]}`" not in text:
                missing.append(command)
        elif f"`{command}" not in text:
            missing.append(command)
    assert not missing, missing
    assert "(docs/commands.md)" in (ROOT / "README.md").read_text()


def test_no_document_points_outside_the_repository() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        assert not re.search(r"\.\./shared|osb-checklist\.md|design\.md", text), path.name
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert (path.parent / target).exists(), f"{path.name} links to {target}, which does not exist"
