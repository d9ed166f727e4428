"""Running ``drbroker client`` as a separate process, as a user or a script does."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from typing import Any

from tests.conftest import PASSWORD, USER, grs_params
from tests.e2e.conftest import drbroker_command


def drbroker(*args: str, env: Mapping[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*drbroker_command(), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=dict(env))


def client(url: str, *args: str, env: Mapping[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``drbroker client <args> --url ... --user ... --password ...``: the options after the subcommand."""
    return drbroker("client", *args, "--url", url, "--user", USER, "--password", PASSWORD, env=env, timeout=timeout)


def params(n: int) -> str:
    """Provision parameters on volumes of their own (``grs_params``), as JSON for ``-c``."""
    return json.dumps(grs_params(100 + n, volumes=1))


def one_json(out: subprocess.CompletedProcess[str]) -> Any:
    """stdout holds exactly one JSON document (and nothing else)."""
    return json.loads(out.stdout)
