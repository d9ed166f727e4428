from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _current_schema(migrated_state_db: Path) -> None:
    """Every runtime built here on ``tmp_path`` starts on a database already at head (tests/conftest.py)."""
