"""Key files mounted from a Kubernetes Secret: the kubelet makes them ``root:<fsGroup>`` with group read, which
the broker (uid 10001, in that group) accepts; every other group- or world-readable key file is still refused,
its own generated files included (broker/security/filemodes.py). Checked as uid 10001 in the sandbox."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from broker.security.filemodes import InsecureFileError, check_private
from tests.conftest import required_in_ci
from tests.deploy import sandbox
from tests.deploy.pods import container_base_env
from tests.deploy.sandbox import Mount, Sandbox

CASES = {  # file name: (owner, group, mode, accepted for uid 10001 in group 10001)
    "secret-mount": (0, 10001, 0o440, True),
    "root-only": (0, 10001, 0o400, True),
    "own-0600": (10001, 10001, 0o600, True),
    "own-group-readable": (10001, 10001, 0o440, False),
    "world-readable": (0, 10001, 0o444, False),
    "group-writable": (0, 10001, 0o460, False),
    "another-group": (0, 10002, 0o440, False),
}

CHECK = textwrap.dedent("""
    import json, sys
    from broker.security.filemodes import InsecureFileError, check_private
    out = {}
    for name in sys.argv[1:]:
        try:
            check_private("/keys/" + name)
            out[name] = True
        except InsecureFileError as exc:
            out[name] = str(exc)
    print(json.dumps(out))
""")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    folder = tmp_path / "keys"
    folder.mkdir()
    os.chmod(folder, 0o755)  # noqa: S103 (the files carry the modes under test)
    for name, (uid, gid, mode, _) in CASES.items():
        path = folder / name
        path.write_text("key material")
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    return folder


def test_only_a_root_owned_file_readable_by_the_brokers_own_group_is_admitted(keys: Path, tmp_path: Path) -> None:
    reason = sandbox.available()
    if reason:
        required_in_ci("read-only deployment", reason)
    box = Sandbox(["python3", "-c", CHECK, *CASES], container_base_env(), 10001, 10001, [10001],
                  [Mount(keys, "/keys", readonly=True)], tmp_path / "box", name="modes")
    run = box.run()
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    for name, (*_, accepted) in CASES.items():
        if accepted:
            assert result[name] is True, (name, result[name])
        else:
            assert result[name] != True and f"/keys/{name} is readable by group or others" in result[name], name  # noqa: E712


def test_a_root_process_gets_no_such_exception(keys: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs a root process")
    with pytest.raises(InsecureFileError, match="run: chmod 600"):
        check_private(keys / "secret-mount")
