"""In CI (``CI`` set) the PostgreSQL and browser halves of the suite must run: a missing server or browser
fails there; elsewhere it is a skip that says why (tests/conftest.py, tests/dashboard/test_dashboard.py)."""

from __future__ import annotations

import pytest

import tests.conftest as shared


def test_a_missing_postgresql_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared, "_PG_REASON", ["no PostgreSQL at postgresql://nowhere (test)"])
    monkeypatch.setenv("CI", "true")
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as outcome:  # a skip must not pass
        shared.postgres_url_or_skip()
    assert outcome.type is pytest.fail.Exception, outcome.value
    assert "CI must run the PostgreSQL tests: no PostgreSQL at" in str(outcome.value)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL at postgresql://nowhere"):
        shared.postgres_url_or_skip()
