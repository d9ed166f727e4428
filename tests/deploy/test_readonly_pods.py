"""The deployment manifests' own commands, run the way their platforms run them (tests/deploy/sandbox.py): a
read-only root filesystem, only the declared volumes writable, as uid/gid 10001, against the real PostgreSQL
(a fresh schema per test) and, for Key Protect, the fake IBM Cloud.

- Helm: the migration Job's command, then two replicas of the Deployment's, taken from ``helm template``;
- Cloud Foundry: the manifest's start command on two instances at once, on an empty database;
- Code Engine: what deploy.sh asks ``ibmcloud ce`` for (a recording stand-in for the CLI), job then app;
- the image alone (Dockerfile): SQLite and every generated file in its state directory.

Each checks a catalog fetch with the deployment's credentials, a provision whose secrets the KEK seals, a
``drbroker dashboard link`` signed in one replica opening on another, and that nothing was written outside the
volumes. The first tests show the old defaults failing there.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from broker.fakecloud.state import DEMO_KMS_INSTANCE_ID
from broker.security.envelope import LocalKeyFile
from tests.conftest import KSYS_PARAMS, KSYS_PLAN, ROOT, SERVICE_ID, postgres_url_or_skip, required_in_ci
from tests.deploy import sandbox
from tests.deploy.helm import one, secret_data, template
from tests.deploy.pods import Cluster, container_base_env, image_user, image_workdir, tree, with_port
from tests.deploy.sandbox import Mount, Sandbox
from tests.e2e.conftest import Client, free_port, wait_until
from tests.ibmfake import create_root_key, fake_cloud

pytestmark = pytest.mark.timeout(300)

KEK_APIKEY = "deploy-test-kek-apikey"


@pytest.fixture(autouse=True)
def _sandbox_available() -> None:
    reason = sandbox.available()
    if reason:
        required_in_ci("read-only deployment", reason)


@pytest.fixture
def pg() -> str:
    return postgres_url_or_skip()


@pytest.fixture
def key_protect() -> Iterator[tuple[str, str]]:
    """(fake IBM Cloud URL, a root key created in its Key Protect through the REST API)."""
    with fake_cloud() as server:
        yield server.url, create_root_key(server.url, KEK_APIKEY)


@pytest.fixture
def stopped() -> Iterator[list[Sandbox]]:
    """Sandboxes a test starts: stopped at its end, also when it fails."""
    boxes: list[Sandbox] = []
    yield boxes
    for box in boxes:
        box.stop()


def kek_file_content(tmp_path: Path) -> str:
    path = tmp_path / "made-by-operator" / "kek.json"
    LocalKeyFile(path)
    return path.read_text()


# The chart ---------------------------------------------------------------------------------------------------

def chart_cluster(tmp_path: Path, pg_url: str, public_port: int, **values: Any) -> tuple[Cluster, list[dict]]:
    """``helm template`` with a real database URL and a KEK Secret, and the Secrets/ConfigMaps it refers to."""
    docs = template({"database": {"url": pg_url}, "kek": {"existingSecret": "drbroker-kek"},
                     "broker": {"simStepSeconds": "0.05", "publicUrl": f"http://127.0.0.1:{public_port}"},
                     "extraEnv": [{"name": "DRBROKER_POLL_SECONDS", "value": "0.1"},
                                  {"name": "DRBROKER_LEASE_SECONDS", "value": "3"}],
                     "envFrom": [{"secretRef": {"name": "drbroker-more"}}], **values}, "minimal.yaml")
    cluster = Cluster(tmp_path / "cluster")
    cluster.secrets["drbroker-kek"] = {"kek.json": kek_file_content(tmp_path)}
    cluster.secrets["drbroker-more"] = {"DRBROKER_LOG_FORMAT": "json"}
    for doc in docs:
        if doc["kind"] == "Secret":
            cluster.secrets[doc["metadata"]["name"]] = secret_data(doc)
        elif doc["kind"] == "ConfigMap":
            cluster.configmaps[doc["metadata"]["name"]] = doc["data"]
    return cluster, docs


def platform_credentials(cluster: Cluster, docs: list[dict]) -> tuple[str, str]:
    data = cluster.secrets[one(docs, "Secret")["metadata"]["name"]]
    return data["username"], data["password"]


def provision_sealed(client: Client, iid: str) -> None:
    """A KSYS provision: its orchestrator password is sealed under the KEK before the broker answers."""
    r = client.put(f"/v2/service_instances/{iid}?accepts_incomplete=true", {
        "service_id": SERVICE_ID, "plan_id": KSYS_PLAN, "organization_guid": "org-1", "space_guid": "space-1",
        "parameters": KSYS_PARAMS})
    assert r.status_code == 202, r.text
    assert client.wait(iid, timeout=120)["state"] == "succeeded"


def open_link(link: str, base: str) -> requests.Response:
    """The signed link, opened on ``base`` (another replica) without any credentials."""
    parts = urlsplit(link)
    return requests.get(f"{base}{parts.path}?{parts.query}", timeout=30)


def test_old_chart_defaults_crash_on_a_read_only_root(tmp_path: Path, pg: str) -> None:
    """The bug (issue 14): without a state directory the broker writes ./.drbroker under /app, read-only in the
    pod; without a shared link key ``drbroker dashboard link`` writes there too; a Secret mounted 0400 without
    fsGroup is root's alone."""
    cluster, docs = chart_cluster(tmp_path, pg, free_port())
    assert cluster.pod(one(docs, "Job"), "job").sandbox.run().returncode == 0
    dep = copy.deepcopy(one(docs, "Deployment"))
    container = dep["spec"]["template"]["spec"]["containers"][0]
    # What the old chart set: no DRBROKER_STATE_DIR, no KEK setting, no dashboard secret.
    container["env"] = [e for e in container["env"] if e["name"] not in
                        ("DRBROKER_STATE_DIR", "DRBROKER_KEK", "DRBROKER_KEK_FILE", "DRBROKER_DASHBOARD_SECRET")]
    old = cluster.pod(dep, "old-defaults")
    old.sandbox.env.pop("DRBROKER_STATE_DIR", None)  # the image did not set one either
    run = old.sandbox.run(timeout=60)
    assert run.returncode != 0
    assert "Read-only file system" in run.stdout + run.stderr and ".drbroker" in run.stdout + run.stderr
    link = old.exec("drbroker", "dashboard", "link", "i-1")
    assert link.returncode != 0 and "Read-only file system" in link.stderr
    # The old KEK mount: defaultMode 0400 and no fsGroup, so the file is root's and uid 10001 cannot read it.
    dep = copy.deepcopy(one(docs, "Deployment"))
    spec = dep["spec"]["template"]["spec"]
    del spec["securityContext"]["fsGroup"]
    next(v for v in spec["volumes"] if v["name"] == "kek")["secret"]["defaultMode"] = 0o400
    run = cluster.pod(dep, "old-kek-mount").sandbox.run(timeout=60)
    assert run.returncode != 0 and "kek.json cannot be read: Permission denied" in run.stdout + run.stderr


def test_chart_job_then_two_replicas_serve_sharing_one_kek_and_one_link_key(tmp_path: Path, pg: str,
                                                                           stopped: list[Sandbox]) -> None:
    port_a, port_b = free_port(), free_port()
    cluster, docs = chart_cluster(tmp_path, pg, port_a)
    auth = platform_credentials(cluster, docs)
    deployment = one(docs, "Deployment")

    # The Deployment never migrates: on the empty schema a replica refuses to start.
    early = cluster.pod(deployment, "before-the-job", port=free_port()).sandbox.run(timeout=60)
    assert early.returncode != 0 and "drbroker db upgrade" in early.stdout + early.stderr

    job = cluster.pod(one(docs, "Job"), "job")
    done = job.sandbox.run()
    assert done.returncode == 0 and "database at revision" in done.stdout, done.stdout + done.stderr
    assert job.sandbox.written_outside_volumes() == []

    a = cluster.pod(deployment, "replica-a", port=port_a)
    assert a.security_context["readOnlyRootFilesystem"] is True and a.sandbox.uid == 10001
    assert {m.target for m in a.mounts if not m.readonly} == {"/var/lib/drbroker", "/tmp"}
    stopped.append(a.sandbox.start())
    a.sandbox.wait_healthy(a.url)
    client_a = Client(a.url, auth=auth)
    assert client_a.get("/v2/catalog").status_code == 200
    assert Client(a.url, auth=(auth[0], "not-the-password")).get("/v2/catalog").status_code == 401
    provision_sealed(client_a, "chart-1")

    # The second replica opens the first one's sealed data keys (it would refuse to start with another KEK).
    b = cluster.pod(deployment, "replica-b", port=port_b)
    stopped.append(b.sandbox.start())
    b.sandbox.wait_healthy(b.url)
    client_b = Client(b.url, auth=auth)
    assert client_b.get("/v2/service_instances/chart-1").status_code == 200

    link = a.exec("drbroker", "dashboard", "link", "chart-1")  # kubectl exec into replica a
    assert link.returncode == 0, link.stderr
    url = link.stdout.strip()
    assert url.startswith(f"http://127.0.0.1:{port_a}/dashboard/instances/chart-1?")
    assert open_link(url, b.url).status_code == 200  # signed in a, opened on b: one shared link key
    assert open_link(url.replace("sig=", "sig=x"), b.url).status_code in (401, 403)

    for box in (a.sandbox, b.sandbox):
        box.stop()
        assert box.written_outside_volumes() == []
    # envFrom reached the broker (its JSON log lines), and no pod generated a key of its own.
    assert any(line.startswith("{") for line in a.sandbox.log().splitlines())
    for pod in ("replica-a", "replica-b", "job"):
        files = tree(cluster.root / pod / "volumes")
        assert not [f for f in files if Path(f).name in ("kek.json", "dashboard.key", "credentials.json")
                    and not f.startswith("kek/")], files


# Cloud Foundry ---------------------------------------------------------------------------------------------

def cf_manifest() -> dict[str, Any]:
    (app,) = yaml.safe_load((ROOT / "deploy" / "cloudfoundry" / "manifest.yml").read_text())["applications"]
    return app


def cf_env(app: dict[str, Any], variables: dict[str, str]) -> dict[str, str]:
    """The manifest's env with each ``((var))`` substituted, as ``cf push --vars-file`` does."""
    def sub(value: Any) -> str:
        return re.sub(r"\(\(([a-z-]+)\)\)", lambda m: variables[m.group(1)], str(value))
    return {k: sub(v) for k, v in app["env"].items()}


def image_volumes(root: Path) -> list[Mount]:
    """What a container of the image may write without a volume of its platform: the state directory's parent
    (the image's user owns it) and /tmp."""
    uid, gid = image_user()
    state = root / "var-lib-drbroker"
    state.mkdir(parents=True)
    os.chown(state, uid, gid)
    os.chmod(state, 0o700)
    tmp = root / "tmp"
    tmp.mkdir()
    os.chmod(tmp, 0o1777)  # noqa: S103 (a container's /tmp)
    from tests.deploy.pods import image_contents
    return [*image_contents(), Mount(state, "/var/lib/drbroker"), Mount(tmp, "/tmp")]


def image_box(argv: list[str], env: dict[str, str], root: Path, name: str) -> Sandbox:
    uid, gid = image_user()
    return Sandbox(argv, env, uid, gid, [gid], image_volumes(root / name / "volumes"), root / name,
                   cwd=image_workdir(), name=name)


def test_old_cloud_foundry_command_exits_on_an_empty_postgresql(tmp_path: Path, pg: str) -> None:
    """The bug: the old manifest started ``drbroker serve`` directly, and nothing ever migrated."""
    env = {**container_base_env(), "DRBROKER_DATABASE_URL": pg, "PORT": str(free_port()),
           "DRBROKER_USERNAME": "platform", "DRBROKER_PASSWORD": "pw"}
    run = image_box(["sh", "-c", "drbroker serve --host 0.0.0.0 --port $PORT --workers 2"], env, tmp_path,
                    "old-cf").run(timeout=60)
    assert run.returncode != 0 and "run `drbroker db upgrade`" in run.stdout + run.stderr


def test_cloud_foundry_instances_migrate_at_once_on_an_empty_database_and_share_kek_and_link_key(
        tmp_path: Path, pg: str, key_protect: tuple[str, str], stopped: list[Sandbox]) -> None:
    fake, root_key = key_protect
    app = cf_manifest()
    ports = [free_port() for _ in range(app["instances"])]
    variables = {"image": "unused here", "broker-password": "cf-platform-pass", "database-url": pg,
                 "public-url": f"http://127.0.0.1:{ports[0]}", "dashboard-secret": "cf-shared-link-key-0123456789",
                 "kek-keyprotect-url": fake, "kek-instance-id": DEMO_KMS_INSTANCE_ID, "kek-root-key-id": root_key,
                 "kek-apikey": KEK_APIKEY}
    # The fake IBM Cloud stands in for IAM too; the rest only makes the simulated steps fast.
    test_only = {"DRBROKER_IAM_URL": fake, "DRBROKER_SIM_STEP_SECONDS": "0.05", "DRBROKER_POLL_SECONDS": "0.1"}
    instances = []
    for i, port in enumerate(ports):
        env = {**container_base_env(), **cf_env(app, variables), **test_only, "PORT": str(port),
               "CF_INSTANCE_INDEX": str(i)}
        box = image_box(["sh", "-c", app["command"]], env, tmp_path, f"cf-{i}")
        instances.append((box, f"http://127.0.0.1:{port}"))
    for box, _ in instances:  # at once: both run db upgrade on the same empty schema
        stopped.append(box.start())
    for box, url in instances:
        box.wait_healthy(url, timeout=90)
        assert "database at revision" in box.log()
    (box_a, url_a), (_, url_b) = instances[0], instances[1]
    auth = ("platform", "cf-platform-pass")
    assert Client(url_b, auth=auth).get("/v2/catalog").status_code == 200
    provision_sealed(Client(url_a, auth=auth), "cf-1")
    assert Client(url_b, auth=auth).get("/v2/service_instances/cf-1").status_code == 200
    # cf ssh into instance 0: the same environment, a signed link that opens on instance 1.
    link = Sandbox(["drbroker", "dashboard", "link", "cf-1"], box_a.env, box_a.uid, box_a.gid, box_a.groups,
                   box_a.mounts, box_a.workdir, cwd=box_a.cwd, name="cf-ssh").run()
    assert link.returncode == 0, link.stderr
    assert open_link(link.stdout.strip(), url_b).status_code == 200
    for box, _ in instances:
        box.stop()
        assert box.written_outside_volumes() == []
        state = box.mounts[-2].source
        assert not any(state.rglob("*")), tree(state)  # nothing generated on an instance's own disk


# Code Engine -----------------------------------------------------------------------------------------------

STUB = """#!/bin/sh
# Stands in for the ibmcloud CLI (no IBM Cloud here): records each call, answers `app get --output url`.
python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@" >> "$IBMCLOUD_CALLS"
case "$*" in *"application get"*"--output url"*) echo "$IBMCLOUD_APP_URL";; esac
"""


def deploy_sh_calls(tmp_path: Path, env: dict[str, str]) -> list[list[str]]:
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    (bin_dir / "ibmcloud").write_text(STUB)
    (bin_dir / "ibmcloud").chmod(0o755)
    calls = tmp_path / "ibmcloud-calls.jsonl"
    run = subprocess.run(["bash", str(ROOT / "deploy" / "codeengine" / "deploy.sh")], capture_output=True,
                         text=True, timeout=60, env={**env, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                                                     "IBMCLOUD_CALLS": str(calls)})
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in calls.read_text().splitlines()]


def ce_command(call: list[str]) -> list[str]:
    """--command X --argument A --argument B ... as the container's argv."""
    argv = []
    for flag, value in itertools.pairwise(call):
        if flag in ("--command", "--argument"):
            argv.append(value)
    return argv


def flag_values(call: list[str], flag: str) -> list[str]:
    return [v for f, v in itertools.pairwise(call) if f == flag]


def test_code_engine_deploy_sh_migrates_with_a_job_then_serves_from_its_secret(
        tmp_path: Path, pg: str, key_protect: tuple[str, str], stopped: list[Sandbox]) -> None:
    fake, root_key = key_protect
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    calls = deploy_sh_calls(tmp_path, {
        "BROKER_PASSWORD": "ce-platform-pass", "DATABASE_URL": pg, "DASHBOARD_SECRET": "ce-shared-link-key-012345",
        "KEK_INSTANCE_ID": DEMO_KMS_INSTANCE_ID, "KEK_ROOT_KEY_ID": root_key, "KEK_APIKEY": KEK_APIKEY,
        "KEK_KEYPROTECT_URL": fake, "IBMCLOUD_APP_URL": app_url})
    verbs = [" ".join(c[:3]) for c in calls]
    assert verbs.index("ce secret create") < verbs.index("ce jobrun submit") < verbs.index("ce application create")
    secret_call = calls[verbs.index("ce secret create")]
    secret = dict(v.split("=", 1) for v in flag_values(secret_call, "--from-literal"))
    name = flag_values(secret_call, "--name")[0]
    job = calls[verbs.index("ce job create")]
    assert flag_values(job, "--env-from-secret") == [name]
    assert "--wait" in calls[verbs.index("ce jobrun submit")]
    app = calls[verbs.index("ce application create")]
    assert flag_values(app, "--env-from-secret") == [name]
    updates = [c for c in calls if c[:3] == ["ce", "application", "update"]]
    public = [v for c in updates for v in flag_values(c, "--env")]
    assert public == [f"DRBROKER_PUBLIC_URL={app_url}"]
    # The secret holds everything an instance needs from the others: the KEK is Key Protect, the link key given.
    assert secret["DRBROKER_KEK"] == "keyprotect" and secret["DRBROKER_DASHBOARD_SECRET"]

    test_only = {"DRBROKER_IAM_URL": fake, "DRBROKER_SIM_STEP_SECONDS": "0.05", "DRBROKER_POLL_SECONDS": "0.1"}
    base = {**container_base_env(), **secret, **test_only}
    migrate = image_box(ce_command(job), base, tmp_path, "ce-job").run()
    assert migrate.returncode == 0 and "database at revision" in migrate.stdout, migrate.stderr
    env = {**base, **dict(v.split("=", 1) for v in flag_values(app, "--env")), "DRBROKER_PUBLIC_URL": app_url}
    box = image_box(with_port(ce_command(app), port), env, tmp_path, "ce-app")
    stopped.append(box.start())
    box.wait_healthy(app_url)
    client = Client(app_url, auth=("platform", "ce-platform-pass"))
    assert client.get("/v2/catalog").status_code == 200
    provision_sealed(client, "ce-1")
    link = Sandbox(["drbroker", "dashboard", "link", "ce-1"], env, box.uid, box.gid, box.groups, box.mounts,
                   box.workdir, cwd=box.cwd, name="ce-exec").run()
    assert link.returncode == 0, link.stderr
    assert open_link(link.stdout.strip(), app_url).status_code == 200
    box.stop()
    assert box.written_outside_volumes() == []
    # app.yaml (the same application as a Knative Service) runs the same command from the same secret.
    knative = yaml.safe_load((ROOT / "deploy" / "codeengine" / "app.yaml").read_text())
    (container,) = knative["spec"]["template"]["spec"]["containers"]
    assert container["command"] + container["args"] == ce_command(app)
    assert container["envFrom"] == [{"secretRef": {"name": name}}]


# The image alone -------------------------------------------------------------------------------------------

def dockerfile_argv() -> list[str]:
    from tests.deploy.pods import dockerfile

    lines = dockerfile()
    return json.loads(next(v for k, v in lines if k == "ENTRYPOINT")) + json.loads(next(v for k, v in lines
                                                                                      if k == "CMD"))


def test_the_image_alone_keeps_every_file_it_writes_in_its_state_directory(tmp_path: Path,
                                                                          stopped: list[Sandbox]) -> None:
    """``docker run --read-only --tmpfs /tmp -v drbroker:/var/lib/drbroker``: SQLite, the generated password,
    KEK and link key, all 0600 in one 0700 directory, and nothing anywhere else."""
    port = free_port()
    env = {**container_base_env(), "DRBROKER_SIM_STEP_SECONDS": "0.05", "DRBROKER_POLL_SECONDS": "0.1"}
    box = image_box(with_port(dockerfile_argv(), port), env, tmp_path, "image")
    stopped.append(box.start())
    url = f"http://127.0.0.1:{port}"
    box.wait_healthy(url)
    password = wait_until(lambda: re.search(r"password: (\S+)", box.log()), 10, "the generated password").group(1)
    client = Client(url, auth=("broker", password))
    assert client.get("/v2/catalog").status_code == 200
    provision_sealed(client, "img-1")
    link = Sandbox(["drbroker", "dashboard", "link", "img-1", "--base-url", url], box.env, box.uid, box.gid,
                   box.groups, box.mounts, box.workdir, cwd=box.cwd, name="image-exec").run()
    assert link.returncode == 0, link.stderr
    assert open_link(link.stdout.strip(), url).status_code == 200
    box.stop()
    assert box.written_outside_volumes() == []
    volume = box.mounts[-2].source
    state = Path(env["DRBROKER_STATE_DIR"]).relative_to("/var/lib/drbroker")
    files = tree(volume)
    assert files[str(state)] == "10001:10001 0o700"
    for name in ("state.db", "kek.json", "credentials.json", "dashboard.key"):
        assert files[f"{state}/{name}"] == "10001:10001 0o600", files
    assert all(f == str(state) or f.startswith(f"{state}/") for f in files), files
    assert shlex.join(dockerfile_argv()).startswith("drbroker serve")
