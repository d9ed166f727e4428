"""A rendered pod (Deployment, Job, Knative Service) or a platform manifest, run here in ``sandbox.Sandbox``:
the image's environment from deploy/Dockerfile, then the manifest's ``envFrom`` and ``env`` resolved against
the Secrets and ConfigMaps given, its volumes as host directories laid out the way the kubelet lays them out
(emptyDir ``root:<fsGroup>`` 2777; Secret files behind ``..data`` symlinks, root-owned, ``defaultMode`` plus
group read for the ``fsGroup``), its user and groups from the securityContext."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import ROOT
from tests.deploy.sandbox import Mount, Sandbox
from tests.e2e.conftest import free_port

DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, rest) of the final stage, continuation lines joined, comments dropped."""
    lines, cur = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.strip().startswith("#") or not raw.strip():
            continue
        cur += raw.rstrip("\\").rstrip() + " "
        if not raw.rstrip().endswith("\\"):
            word, _, rest = cur.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
            cur = ""
    last_from = max(i for i, (k, _) in enumerate(lines) if k == "FROM")
    return lines[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for k, v in dockerfile():
        if k == "ENV":
            env.update(dict(item.split("=", 1) for item in shlex.split(v)))
    return env


def image_user() -> tuple[int, int]:
    user = [v for k, v in dockerfile() if k == "USER"][-1]
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


def image_workdir() -> str:
    return [v for k, v in dockerfile() if k == "WORKDIR"][-1]


def image_contents() -> list[Mount]:
    """What the image COPYs from this repository that this machine has elsewhere (the installed package and
    its ``drbroker`` script are the project's virtualenv, on the PATH)."""
    out = []
    for k, v in dockerfile():
        if k == "COPY" and not v.startswith("--from"):
            src, dest = v.split()
            out.append(Mount(ROOT / src, dest, readonly=True))
    return out


def container_base_env() -> dict[str, str]:
    """The image's environment. HOME is / as for a uid the image's passwd does not name (the container
    runtime's default): nothing may be written there."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": "/", "LANG": "C.UTF-8",
            **image_env()}


def with_port(argv: Sequence[str], port: int) -> list[str]:
    """The manifest's argv with its ``--port`` value replaced: every sandbox shares this machine's network."""
    out = list(argv)
    i = out.index("--port")
    out[i + 1] = str(port)
    return out


@dataclass
class Cluster:
    """The Secrets and ConfigMaps a pod's references resolve against, and where its volumes live."""

    root: Path
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    configmaps: dict[str, dict[str, str]] = field(default_factory=dict)

    # volumes the way the kubelet makes them ---------------------------------------------------------
    def empty_dir(self, path: Path, fs_group: int | None) -> Path:
        path.mkdir(parents=True)
        os.chown(path, 0, fs_group if fs_group is not None else 0)
        os.chmod(path, 0o2777 if fs_group is not None else 0o777)
        return path

    def projected(self, path: Path, files: Mapping[str, str], mode: int, fs_group: int | None) -> Path:
        """Secret/ConfigMap volume: ``..<timestamp>/FILE``, ``..data`` -> it, ``FILE`` -> ``..data/FILE``."""
        stamp = path / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.1"
        stamp.mkdir(parents=True)
        for name, content in files.items():
            real = stamp / name
            real.write_text(content)
            os.chown(real, 0, fs_group if fs_group is not None else 0)
            # With an fsGroup the kubelet adds group read to the mode of a read-only volume's files.
            os.chmod(real, mode | (0o440 if fs_group is not None else 0))
            (path / name).symlink_to(f"..data/{name}")
        (path / "..data").symlink_to(stamp.name)
        for d in (path, stamp):
            os.chown(d, 0, fs_group if fs_group is not None else 0)
            os.chmod(d, 0o755)  # noqa: S103 (as the kubelet makes them: the files inside are 0440)
        return path

    # a container of a rendered pod -----------------------------------------------------------------
    def env_of(self, container: Mapping[str, Any], extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = container_base_env()
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                env.update(self.configmaps[source["configMapRef"]["name"]])
            else:
                env.update(self.secrets[source["secretRef"]["name"]])
        for entry in container.get("env") or []:
            if "value" in entry:
                env[entry["name"]] = str(entry["value"])
                continue
            ref = entry["valueFrom"]
            if "secretKeyRef" in ref:
                env[entry["name"]] = self.secrets[ref["secretKeyRef"]["name"]][ref["secretKeyRef"]["key"]]
            else:
                env[entry["name"]] = self.configmaps[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
        env.update(extra or {})
        return env

    def pod(self, workload: Mapping[str, Any], name: str, *, port: int | None = None,
            env: Mapping[str, str] | None = None) -> PodContainer:
        """The first container of a Deployment/Job/Knative Service, its volumes made under ``root/name``."""
        spec = workload["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        pod_sc = spec.get("securityContext") or {}
        sc = {**pod_sc, **(container.get("securityContext") or {})}
        image_uid, image_gid = image_user()
        uid, gid = int(sc.get("runAsUser", image_uid)), int(sc.get("runAsGroup", image_gid))
        fs_group = pod_sc.get("fsGroup")
        groups = sorted({gid, *([fs_group] if fs_group is not None else []), *pod_sc.get("supplementalGroups", [])})
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        mounts = list(image_contents())
        for vm in container.get("volumeMounts") or []:
            vol = volumes[vm["name"]]
            host = self.root / name / "volumes" / vm["name"]
            if "emptyDir" in vol:
                self.empty_dir(host, fs_group)
            elif "secret" in vol:
                data = self.secrets[vol["secret"]["secretName"]]
                items = vol["secret"].get("items") or [{"key": k, "path": k} for k in data]
                self.projected(host, {i["path"]: data[i["key"]] for i in items},
                               int(vol["secret"].get("defaultMode", 0o644)), fs_group)
            elif "configMap" in vol:
                self.projected(host, self.configmaps[vol["configMap"]["name"]], 0o644, fs_group)
            else:
                raise AssertionError(f"volume kind not emulated: {vol}")
            mounts = [m for m in mounts if m.target != vm["mountPath"]]
            mounts.append(Mount(host, vm["mountPath"], readonly=bool(vm.get("readOnly")) or "emptyDir" not in vol))
        argv = list(container.get("command") or []) + list(container.get("args") or [])
        port = port if port is not None else (free_port() if "--port" in argv else None)
        if port is not None:
            argv = with_port(argv, port)
        return PodContainer(Sandbox(argv, self.env_of(container, env), uid, gid, groups, mounts, self.root / name,
                                    cwd=container.get("workingDir") or image_workdir(), name=name),
                            port=port, security_context=sc, mounts=mounts)

    def volume(self, pod: str, volume: str) -> Path:
        return self.root / pod / "volumes" / volume


@dataclass
class PodContainer:
    sandbox: Sandbox
    port: int | None
    security_context: dict[str, Any]
    mounts: list[Mount]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def exec(self, *argv: str, timeout: float = 120) -> Any:
        """``kubectl exec``: another process in the same container (same env, user, volumes)."""
        box = self.sandbox
        other = Sandbox(list(argv), box.env, box.uid, box.gid, box.groups, box.mounts, box.workdir,
                        cwd=box.cwd, name=f"{box.name}-exec-{time.monotonic_ns()}")
        return other.run(timeout=timeout)


def tree(path: Path) -> dict[str, str]:
    """Every entry under ``path`` (symlinks not followed) with its owner, group and mode, for assertions."""
    out = {}
    for p in sorted(path.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(path))] = f"{st.st_uid}:{st.st_gid} {oct(st.st_mode & 0o7777)}"
    return out


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
