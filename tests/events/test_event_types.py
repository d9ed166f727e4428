"""docs/events.md's table of event types is ``broker.events.types.EVENT_TYPES``, row for row."""

from __future__ import annotations

import re

from broker.events.types import EVENT_TYPES, SEVERITIES
from tests.conftest import ROOT


def _doc_rows() -> list[tuple[str, str, str, tuple[str, ...]]]:
    text = (ROOT / "docs" / "events.md").read_text()
    rows = []
    for line in text.splitlines():
        m = re.fullmatch(r"\| `([a-z_.]+)` \| (\w+) \| (.+) \| (.+) \|", line)
        if m:
            data = () if m[4] == "-" else tuple(re.findall(r"`([^`]+)`", m[4]))
            rows.append((m[1], m[2], m[3], data))
    return rows


def test_the_documented_table_is_the_table_of_event_types() -> None:
    expected = [(t.name, t.severity, t.meaning, t.data) for t in EVENT_TYPES.values()]
    assert _doc_rows() == expected


def test_every_type_has_a_known_severity_and_a_dotted_name() -> None:
    for t in EVENT_TYPES.values():
        assert t.severity in SEVERITIES, t
        assert re.fullmatch(r"[a-z]+\.[a-z_]+", t.name), t


def test_the_evidence_page_links_the_event_log() -> None:
    assert "(events.md)" in (ROOT / "docs" / "evidence.md").read_text()
