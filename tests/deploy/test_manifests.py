"""Every deployment manifest parses (the Helm chart renders) and agrees with the code: ports, environment
variable names, probes, the image command and the catalog export."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from broker.cli import main
from tests.conftest import ROOT
from tests.deploy.gotemplate import Renderer

DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "powervs-dr-broker"


def known_env_vars() -> set[str]:
    """Every DRBROKER_* name the code reads (settings) or the catalog interpolates."""
    names: set[str] = set()
    for path in [*(ROOT / "broker").rglob("*.py"), *(ROOT / "catalog").glob("*.yaml")]:
        names |= set(re.findall(r"\bDRBROKER_[A-Z0-9_]+\b", path.read_text()))
    return names


def serve_options() -> set[str]:
    serve = main.commands["serve"]
    return {opt for p in serve.params for opt in getattr(p, "opts", [])}


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
    opts = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert set(opts) <= serve_options(), set(opts) - serve_options()
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
    assert "upgrade" in main.commands["db"].commands
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
    envs = " ".join(v for k, v in lines if k == "ENV")
    assert set(re.findall(r"DRBROKER_[A-Z_]+", envs)) <= known_env_vars()


def test_cloud_foundry_manifest_agrees_with_the_code() -> None:
    manifest = yaml.safe_load((DEPLOY / "cloudfoundry" / "manifest.yml").read_text())
    (app,) = manifest["applications"]
    assert app["instances"] >= 2
    assert app["health-check-http-endpoint"] == "/healthz"
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
