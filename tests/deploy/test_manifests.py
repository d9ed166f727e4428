"""Every deployment manifest parses (the Helm chart renders) and agrees with the code: ports, environment
variable names, probes, the image command and the catalog export."""

from __future__ import annotations

import functools
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from broker.app import build_runtime, create_app
from broker.cli import main
from broker.config import Settings
from broker.domain.catalog import load_catalog
from broker.orchestrators.ibmcloud.config import IbmCloudConfig
from tests.conftest import ROOT, make_settings
from tests.deploy.gotemplate import Renderer
from tests.e2e.conftest import base_env, drbroker_command

DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "powervs-dr-broker"


class _ReadingEnv(dict):
    """An environment that notes every name the code looks up in it."""

    def __init__(self, **values: str) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


@functools.cache
def known_env_vars() -> frozenset[str]:
    """Every DRBROKER_* name the broker actually reads at start-up: what ``Settings.from_env`` looks up, what
    the ibmcloud backend's config looks up, and what the shipped catalog interpolates, each recorded while
    the real code reads an environment (not found by searching the source text)."""
    names: set[str] = set()
    env = _ReadingEnv()
    Settings.from_env(env=env)
    names |= env.read
    env = _ReadingEnv(DRBROKER_IBMCLOUD_APIKEY="an-api-key")  # without one it refuses to start
    IbmCloudConfig.from_env(env)
    names |= env.read
    env = _ReadingEnv()
    load_catalog(ROOT / "catalog", env=env)
    names |= env.read
    return frozenset(n for n in names if n.startswith("DRBROKER_"))


def test_the_env_names_are_the_ones_the_code_reads() -> None:
    names = known_env_vars()
    assert {"DRBROKER_DATABASE_URL", "DRBROKER_USERNAME", "DRBROKER_PASSWORD", "DRBROKER_CATALOG",
            "DRBROKER_KEK_FILE", "DRBROKER_IBMCLOUD_APIKEY", "DRBROKER_SERVICE_ID"} <= names
    assert "DRBROKER_NOT_A_SETTING" not in names


def _help(*args: str) -> str:
    out = subprocess.run([*drbroker_command(), *args, "--help"], capture_output=True, text=True, timeout=60,
                         env=base_env(None))
    assert out.returncode == 0, out.stderr
    return out.stdout


@functools.cache
def cli_commands(*group: str) -> frozenset[str]:
    """The commands ``drbroker [group] --help`` lists (the installed console script, as the images run it)."""
    text = _help(*group).split("Commands:", 1)[1]
    return frozenset(m.group(1) for m in re.finditer(r"^  ([a-z][a-z0-9-]*)\s", text, re.M))


@functools.cache
def serve_options() -> frozenset[str]:
    """The options ``drbroker serve --help`` documents."""
    return frozenset(re.findall(r"^\s+(--[a-z][a-z-]*)", _help("serve"), re.M))


@functools.cache
def served_paths() -> frozenset[str]:
    """The paths the real Flask app routes."""
    return frozenset(rule.rule for rule in _app().url_map.iter_rules())


@functools.cache
def _app() -> Any:
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="drbroker-manifests-"))
    return create_app(runtime=build_runtime(make_settings(folder)))


def assert_health_path(path: str) -> None:
    """The probes' path is one the broker serves, and it answers 200 without credentials."""
    assert path in served_paths(), sorted(served_paths())
    assert _app().test_client().get(path).status_code == 200


def render_chart(values_override: dict[str, Any] | None = None, release: str = "powervs-dr") -> list[dict]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key, value in (values_override or {}).items():
        values[key] = value
    templates = {p.name: p.read_text() for p in (CHART / "templates").iterdir()}
    renderer = Renderer(templates)
    ctx = {"Values": values, "Release": {"Name": release, "Namespace": "powervs-dr"},
           "Chart": yaml.safe_load((CHART / "Chart.yaml").read_text())}
    docs = []
    for name in templates:
        if name.startswith("_"):
            continue
        text = renderer.render(name, ctx)
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _check_serve_args(argv: list[str]) -> dict[str, str]:
    assert argv[0] == "drbroker" and argv[1] == "serve", argv
    assert "serve" in cli_commands()
    opts = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert set(opts) <= serve_options(), set(opts) - serve_options()
    assert opts.get("--host") == "0.0.0.0", opts  # noqa: S104 (reachable from outside the container)
    port = opts["--port"]
    assert port == "$PORT" or 1 <= int(port) <= 65535, port
    return opts


def test_chart_renders_every_kind_it_needs() -> None:
    kinds = sorted(d["kind"] for d in render_chart())
    assert kinds == ["ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "Secret", "Service"]


def test_deployment_runs_several_replicas_with_probes_on_healthz_and_known_settings() -> None:
    docs = render_chart()
    dep = by_kind(docs, "Deployment")[0]
    assert dep["spec"]["replicas"] >= 2
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    opts = _check_serve_args(container["command"] + container["args"])
    port = int(opts["--port"])
    assert container["ports"][0] == {"name": "http", "containerPort": port}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert_health_path(container[probe]["httpGet"]["path"])
    env_names = {e["name"] for e in container["env"]}
    assert env_names <= known_env_vars()
    assert {"DRBROKER_USERNAME", "DRBROKER_PASSWORD", "DRBROKER_DATABASE_URL"} <= env_names
    secret = by_kind(docs, "Secret")[0]
    for entry in container["env"]:
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    configmap = by_kind(docs, "ConfigMap")[0]
    assert container["envFrom"][0]["configMapRef"]["name"] == configmap["metadata"]["name"]
    assert set(configmap["data"]) <= known_env_vars()
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_service_and_pdb_select_the_broker_pods() -> None:
    docs = render_chart()
    labels = by_kind(docs, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    service = by_kind(docs, "Service")[0]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = by_kind(docs, "PodDisruptionBudget")[0]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < by_kind(docs, "Deployment")[0]["spec"]["replicas"]


def test_migration_job_runs_db_upgrade_before_install_and_upgrade() -> None:
    docs = render_chart()
    job = by_kind(docs, "Job")[0]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] + container["args"] == ["drbroker", "db", "upgrade"]
    assert "db" in cli_commands() and "upgrade" in cli_commands("db")
    secret = by_kind(docs, "Secret")[0]
    # The Secret is a hook too, with a lower weight, so it exists when the Job runs.
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < \
        int(job["metadata"]["annotations"]["helm.sh/hook-weight"])


def test_postgres_url_can_come_from_an_existing_secret() -> None:
    docs = render_chart({"database": {"url": "", "existingSecret": "pg-creds", "existingSecretKey": "url"}})
    env = {e["name"]: e for e in by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DRBROKER_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "pg-creds", "key": "url"}


def test_custom_catalog_is_mounted_from_a_configmap_and_valid(tmp_path: Path) -> None:
    shipped = (ROOT / "catalog" / "powervs-dr.yaml").read_text()
    docs = render_chart({"catalog": {"powervs-dr.yaml": shipped}})
    catalog_cm = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-catalog"))
    env_cm = next(d for d in by_kind(docs, "ConfigMap") if not d["metadata"]["name"].endswith("-catalog"))
    dep = by_kind(docs, "Deployment")[0]
    mounts = {m["name"]: m["mountPath"] for m in dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["catalog"] == env_cm["data"]["DRBROKER_CATALOG"]
    (tmp_path / "powervs-dr.yaml").write_text(catalog_cm["data"]["powervs-dr.yaml"])
    result = CliRunner().invoke(main, ["catalog", "validate", str(tmp_path)])
    assert result.exit_code == 0, result.output


def _dockerfile() -> list[tuple[str, str]]:
    lines, cur = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        if raw.strip().startswith("#") or not raw.strip():
            continue
        cur += raw.rstrip("\\").rstrip() + " "
        if not raw.rstrip().endswith("\\"):
            word, _, rest = cur.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
            cur = ""
    return lines


def test_dockerfile_is_slim_non_root_with_a_healthcheck_matching_the_command() -> None:
    lines = _dockerfile()
    froms = [v for k, v in lines if k == "FROM"]
    assert all("slim" in f for f in froms)
    user = [v for k, v in lines if k == "USER"][-1]
    assert not user.startswith(("0", "root"))
    argv = json.loads(next(v for k, v in lines if k == "ENTRYPOINT")) + \
        json.loads(next(v for k, v in lines if k == "CMD"))
    opts = _check_serve_args(argv)
    assert next(v for k, v in lines if k == "EXPOSE") == opts["--port"]
    health = next(v for k, v in lines if k == "HEALTHCHECK")
    assert f"127.0.0.1:{opts['--port']}/healthz" in health
    assert_health_path("/healthz")
    envs = " ".join(v for k, v in lines if k == "ENV")
    assert set(re.findall(r"DRBROKER_[A-Z_]+", envs)) <= known_env_vars()


def test_cloud_foundry_manifest_agrees_with_the_code() -> None:
    manifest = yaml.safe_load((DEPLOY / "cloudfoundry" / "manifest.yml").read_text())
    (app,) = manifest["applications"]
    assert app["instances"] >= 2
    assert app["health-check-http-endpoint"] == "/healthz"
    assert_health_path(app["health-check-http-endpoint"])
    opts = _check_serve_args(shlex.split(app["command"]))
    assert opts["--port"] == "$PORT"
    assert set(app["env"]) <= known_env_vars()
    text = (DEPLOY / "cloudfoundry" / "manifest.yml").read_text()
    assert "cf create-service-broker" in text and "cf enable-service-access powervs-dr" in text


def test_code_engine_app_agrees_with_the_code() -> None:
    app = yaml.safe_load((DEPLOY / "codeengine" / "app.yaml").read_text())
    (container,) = app["spec"]["template"]["spec"]["containers"]
    opts = _check_serve_args(container["command"] + container["args"])
    assert container["ports"][0]["containerPort"] == int(opts["--port"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": int(opts["--port"])}
        assert_health_path(container[probe]["httpGet"]["path"])
    assert {e["name"] for e in container["env"]} <= known_env_vars()
    script = (DEPLOY / "codeengine" / "deploy.sh").read_text()
    for entry in container["env"]:
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert f"{ref['key']}=" in script  # the secret the script creates has that key


def test_cluster_service_broker_points_at_the_charts_service_and_secret() -> None:
    csb = yaml.safe_load((DEPLOY / "kubernetes" / "clusterservicebroker.yaml").read_text())
    docs = render_chart(release="powervs-dr")
    service = by_kind(docs, "Service")[0]
    secret = by_kind(docs, "Secret")[0]
    assert csb["spec"]["url"] == (f"http://{service['metadata']['name']}.powervs-dr.svc.cluster.local:"
                                  f"{service['spec']['ports'][0]['port']}")
    ref = csb["spec"]["authInfo"]["basic"]["secretRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert {"username", "password"} <= set(secret["stringData"])


def test_ibm_global_catalog_export_has_ids_plans_deployments_and_parameters() -> None:
    result = CliRunner().invoke(main, ["catalog", "export", "--format", "ibm-global-catalog",
                                       "--locations", "us-south,eu-de", "--broker-guid", "crn%3Av1%3Abroker"])
    assert result.exit_code == 0, result.output
    (service,) = json.loads(result.output)
    osb = json.loads(CliRunner().invoke(main, ["catalog", "export"]).output)["services"][0]
    assert service["id"] == osb["id"] and service["kind"] == "service"
    assert [p["id"] for p in service["children"]] == [p["id"] for p in osb["plans"]]
    params = {p["name"]: p for p in service["metadata"]["service"]["parameters"]}
    assert params["ibmcloud_api_key"]["type"] == "password"
    assert params["primary_workspace_crn"]["required"] is True
    assert "location" not in params
    for plan in service["children"]:
        assert plan["metadata"]["pricing"]["type"] == "paid"
        assert [d["metadata"]["deployment"]["location"] for d in plan["children"]] == ["us-south", "eu-de"]
        for dep in plan["children"]:
            assert dep["metadata"]["deployment"]["broker"]["guid"] == "crn%3Av1%3Abroker"
            assert all(plan["id"] in p["associations"]["plan"]["showFor"]
                       for p in dep["metadata"]["service"]["parameters"])
    byok = next(p for p in service["children"] if p["name"] == "ksys-managed-byok")
    byok_params = {p["name"] for p in byok["children"][0]["metadata"]["service"]["parameters"]}
    assert "encryption" in byok_params
    grs = next(p for p in service["children"] if p["name"] == "grs-async")
    assert "orchestrator" not in {p["name"] for p in grs["children"][0]["metadata"]["service"]["parameters"]}


@pytest.mark.parametrize("template", sorted(p.name for p in (CHART / "templates").iterdir()))
def test_every_template_renders_with_defaults(template: str) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    renderer = Renderer({p.name: p.read_text() for p in (CHART / "templates").iterdir()})
    text = renderer.render(template, {"Values": values, "Release": {"Name": "r"}, "Chart": {}})
    list(yaml.safe_load_all(text))


def test_replicas_can_share_one_key_encryption_key_from_a_secret() -> None:
    docs = render_chart({"kekSecret": "drbroker-kek"})
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "kek")
    volume = next(v for v in pod["volumes"] if v["name"] == "kek")
    assert env["DRBROKER_KEK_FILE"].startswith(mount["mountPath"] + "/")
    assert volume["secret"]["secretName"] == "drbroker-kek"
    assert volume["secret"]["defaultMode"] == 0o400  # the broker refuses a key file others can read
    assert "DRBROKER_KEK_FILE" in known_env_vars()
