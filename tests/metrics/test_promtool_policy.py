"""In CI the alert-rule tests must run: a missing promtool fails there; elsewhere it is a skip that says how to
install it."""

from __future__ import annotations

import pytest

from tests.metrics import promtool


def test_a_missing_promtool_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(promtool.shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as outcome:  # a skip must not pass
        promtool.promtool()
    assert outcome.type is pytest.fail.Exception, outcome.value
    assert "CI must run the alert-rule tests: promtool not found" in str(outcome.value)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y --no-install-recommends prometheus"):
        promtool.promtool()
