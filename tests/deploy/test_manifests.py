"""Every deployment manifest parses and agrees with the code: ports, environment variable names, probes, the
image command and the catalog export (the Helm chart: test_chart.py; running them: test_readonly_pods.py)."""

from __future__ import annotations

import functools
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from broker.app import build_runtime, create_app
from broker.cli import main
from broker.config import Settings
from broker.domain.catalog import load_catalog
from broker.orchestrators.ibmcloud.config import IbmCloudConfig
from tests.conftest import ROOT, make_settings
from tests.deploy.pods import dockerfile, image_env
from tests.e2e.conftest import base_env, drbroker_command

DEPLOY = ROOT / "deploy"


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


def check_serve_args(argv: list[str]) -> dict[str, str]:
    assert argv[0] == "drbroker" and argv[1] == "serve", argv
    assert "serve" in cli_commands()
    opts = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert set(opts) <= serve_options(), set(opts) - serve_options()
    assert opts.get("--host") == "0.0.0.0", opts  # noqa: S104 (reachable from outside the container)
    port = opts["--port"]
    assert port == "$PORT" or 1 <= int(port) <= 65535, port
    return opts


def test_dockerfile_is_slim_non_root_with_a_state_dir_its_user_owns_and_a_healthcheck() -> None:
    lines = dockerfile()
    assert "slim" in next(v for k, v in lines if k == "FROM")
    user = [v for k, v in lines if k == "USER"][-1]
    assert user == "10001:10001"
    argv = json.loads(next(v for k, v in lines if k == "ENTRYPOINT")) + \
        json.loads(next(v for k, v in lines if k == "CMD"))
    opts = check_serve_args(argv)
    assert next(v for k, v in lines if k == "EXPOSE") == opts["--port"]
    health = next(v for k, v in lines if k == "HEALTHCHECK")
    assert f"127.0.0.1:{opts['--port']}/healthz" in health
    assert_health_path("/healthz")
    env = image_env()
    assert set(k for k in env if k.startswith("DRBROKER_")) <= known_env_vars()
    # The state directory sits in the one directory the image's user owns (the run test writes there).
    state_parent = str(Path(env["DRBROKER_STATE_DIR"]).parent)
    run = " ".join(v for k, v in lines if k == "RUN")
    assert f"chown drbroker:drbroker {state_parent}" in run and f"chmod 0700 {state_parent}" in run
    assert "DRBROKER_DATABASE_URL" not in env  # SQLite by default, inside the state directory


def cf_app() -> dict[str, Any]:
    (app,) = yaml.safe_load((DEPLOY / "cloudfoundry" / "manifest.yml").read_text())["applications"]
    return app


def test_cloud_foundry_manifest_migrates_before_serving_and_shares_every_secret() -> None:
    app = cf_app()
    assert app["instances"] >= 2
    assert app["health-check-type"] == "http" and app["health-check-http-endpoint"] == "/healthz"
    assert_health_path(app["health-check-http-endpoint"])
    before, _, start = app["command"].rpartition("&&")
    assert "drbroker db upgrade" in before
    assert start.split()[0] == "exec"  # signals reach the broker, not a shell (graceful drain on cf restart)
    opts = check_serve_args(shlex.split(start)[1:])
    assert opts["--port"] == "$PORT"
    env = app["env"]
    assert set(env) <= known_env_vars()
    # Nothing an instance generates on its own disk: the KEK is Key Protect, the link key and password given.
    assert env["DRBROKER_KEK"] == "keyprotect"
    for name in ("DRBROKER_KEK_INSTANCE_ID", "DRBROKER_KEK_ROOT_KEY_ID", "DRBROKER_KEK_APIKEY",
                 "DRBROKER_DASHBOARD_SECRET", "DRBROKER_PASSWORD", "DRBROKER_DATABASE_URL"):
        assert re.fullmatch(r"\(\([a-z-]+\)\)", env[name]), name
    text = (DEPLOY / "cloudfoundry" / "manifest.yml").read_text()
    example = yaml.safe_load((DEPLOY / "cloudfoundry" / "vars.example.yml").read_text())
    assert set(re.findall(r"\(\(([a-z-]+)\)\)", text)) == set(example)
    assert "cf create-service-broker" in text and "cf enable-service-access powervs-dr" in text


def test_code_engine_app_agrees_with_the_code_and_with_deploy_sh() -> None:
    app = yaml.safe_load((DEPLOY / "codeengine" / "app.yaml").read_text())
    (container,) = app["spec"]["template"]["spec"]["containers"]
    opts = check_serve_args(container["command"] + container["args"])
    assert container["ports"][0]["containerPort"] == int(opts["--port"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": int(opts["--port"])}
        assert_health_path(container[probe]["httpGet"]["path"])
    assert {e["name"] for e in container["env"]} <= known_env_vars()
    script = (DEPLOY / "codeengine" / "deploy.sh").read_text()
    (source,) = container["envFrom"]
    assert f"APP=${{APP:-{source['secretRef']['name']}}}" in script  # the secret deploy.sh creates
    assert " ".join(f"--argument {a}" for a in container["args"]) in script.replace("\n  ", " ")


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
