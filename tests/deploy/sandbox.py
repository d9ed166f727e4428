"""Run one container's command the way its platform would: a read-only root filesystem, only the volumes the
manifest declares writable, as the manifest's (non-root) user and groups.

Run as root, in a private mount namespace (``unshare -m``), ``python sandbox.py SPEC.json``:

- the root is an overlay of this machine's ``/`` with an upper layer on a tmpfs of the namespace, remounted
  read-only: the process sees the machine's files (the project and its virtualenv stand in for the image's
  contents) and can write none of them; the host is never touched (mount points are made in the upper layer);
- each mount of the spec is a bind of a host directory (the test's stand-in for an emptyDir or a Secret
  volume) at its target, read-only when the manifest says so;
- the command runs chrooted there, after ``setgroups``/``setgid``/``setuid`` to the spec's ids;
- afterwards the upper layer is listed into the spec's report, so a test can check nothing else was written.

``Sandbox`` (below) is the test side: it writes the spec, starts the launcher in its own process group, and
stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    readonly: bool = False


def untraversable_dirs(*paths: Path) -> list[str]:
    """Directories on the way to ``paths`` that others may not enter (here: the interpreter under /root). The
    launcher gives them o+x in its upper layer only, as an image would simply have its Python elsewhere."""
    out: list[str] = []
    for path in paths:
        for parent in [path, *path.parents]:
            if parent.is_dir() and not parent.stat().st_mode & stat.S_IXOTH and str(parent) not in out:
                out.append(str(parent))
    return out


def available() -> str | None:
    """Why the sandbox cannot run here, or None."""
    if os.geteuid() != 0:
        return "the read-only sandbox needs root (mount namespaces, chroot, setuid)"
    if not shutil.which("unshare"):
        return "unshare(1) is missing"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        return f"unshare -m fails here: {probe.stderr.decode(errors='replace').strip()}"
    return None


def _uncovered(mounts: Sequence[Mount]) -> list[dict[str, Any]]:
    """The checkout and its virtualenv stand for the image's code: when a volume hides them (a checkout under
    /tmp, where the chart mounts an emptyDir), bind them back read-only on top, as the image would have them."""
    out = []
    for path in dict.fromkeys([Path(__file__).resolve().parents[2], Path(sys.prefix).resolve()]):
        if any(path == Path(m.target) or Path(m.target) in path.parents for m in mounts):
            out.append({"source": str(path), "target": str(path), "readonly": True})
    return out


@dataclass
class Sandbox:
    """One container: ``argv`` with ``env`` in ``cwd``, as ``uid``/``gid``/``groups``, with ``mounts``."""

    argv: Sequence[str]
    env: Mapping[str, str]
    uid: int
    gid: int
    groups: Sequence[int]
    mounts: Sequence[Mount]
    workdir: Path
    cwd: str = "/"
    name: str = "container"
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"
        self.report_path = self.workdir / f"{self.name}.report.json"

    def _spec(self) -> Path:
        python = Path(os.path.realpath(sys.executable))
        spec = {"argv": list(self.argv), "env": dict(self.env), "uid": self.uid, "gid": self.gid,
                "groups": list(self.groups), "cwd": self.cwd, "report": str(self.report_path),
                "scratch": tempfile.mkdtemp(prefix="sandbox-", dir=self.workdir),
                "traverse": untraversable_dirs(python.parent, Path(__file__).resolve().parent),
                "mounts": [{"source": str(m.source), "target": m.target, "readonly": m.readonly}
                           for m in self.mounts] + _uncovered(self.mounts)}
        path = self.workdir / f"{self.name}.spec.json"
        path.write_text(json.dumps(spec))
        return path

    def _command(self) -> list[str]:
        return ["unshare", "-m", "--propagation", "private", sys.executable, __file__, str(self._spec())]

    def run(self, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run to completion (a Job, a ``kubectl exec``): its output and exit code. On a timeout the whole
        group goes (a server that should have exited must not outlive the test)."""
        argv = self._command()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"{self.name} still running after {timeout}s:\n{out}\n{err}") from None
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def start(self) -> Sandbox:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_healthy(self, url: str, timeout: float = 40.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not become healthy:\n{self.log()}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 40.0) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # whatever of the group is left (the launcher waited for its child, so normally nothing)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log(self, chars: int = 8000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def written_outside_volumes(self) -> list[str]:
        """What the last run left in the root's upper layer besides the launcher's own mount points and
        traversal fixes: files the process managed to write outside its volumes (there should be none)."""
        report = json.loads(self.report_path.read_text())
        return report["unexpected"]


# The launcher (runs as root inside the new mount namespace) ------------------------------------------------

def _sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True)


def _launch(spec: dict[str, Any]) -> int:
    scratch = Path(spec["scratch"])
    _sh("mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", str(scratch))
    upper, work, root = scratch / "upper", scratch / "work", scratch / "root"
    for d in (upper, work, root):
        d.mkdir()
    _sh("mount", "-t", "overlay", "overlay", "-o", f"lowerdir=/,upperdir={upper},workdir={work}", str(root))
    expected = {"dev", "proc"}
    for d in spec["traverse"]:
        target = root / d.lstrip("/")
        os.chmod(target, stat.S_IMODE(target.stat().st_mode) | stat.S_IXOTH)
        expected.add(d.strip("/"))
    for target in [m["target"] for m in spec["mounts"]] + [spec["cwd"]]:
        path = root / target.lstrip("/")
        path.mkdir(parents=True, exist_ok=True)
        rel = target.strip("/")
        while rel:
            expected.add(rel)
            rel = os.path.dirname(rel)
    _sh("mount", "--rbind", "/dev", str(root / "dev"))
    _sh("mount", "-t", "proc", "proc", str(root / "proc"))
    _sh("mount", "-o", "remount,ro", str(root))
    for m in spec["mounts"]:
        target = str(root / m["target"].lstrip("/"))
        os.makedirs(target, exist_ok=True)  # a checkout under /tmp: its mount point lies in the /tmp volume
        _sh("mount", "--bind", m["source"], target)
        if m["readonly"]:
            _sh("mount", "-o", "remount,bind,ro", target)
    pid = os.fork()
    if pid == 0:  # the container's process
        try:
            os.chroot(root)
            os.chdir(spec["cwd"])
            os.setgroups(spec["groups"])
            os.setgid(spec["gid"])
            os.setuid(spec["uid"])
            os.execvpe(spec["argv"][0], spec["argv"], spec["env"])  # noqa: S606 (the container's argv)
        except BaseException as exc:  # report any failure to start, then leave the child
            print(f"sandbox: cannot start {spec['argv'][0]}: {exc}", file=sys.stderr, flush=True)
        os._exit(127)
    # Set after the fork: the child must keep the default disposition. The test stops the whole group, child
    # included; the launcher outlives it to write the report.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _, status = os.waitpid(pid, 0)
    found = sorted(str(p.relative_to(upper)) for p in upper.rglob("*"))
    Path(spec["report"]).write_text(json.dumps({"upper": found,
                                                "unexpected": [p for p in found if p not in expected]}))
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(_launch(json.loads(Path(sys.argv[1]).read_text())))
