"""The Helm chart, through the real helm: ``helm lint`` and ``helm template`` with the defaults, a minimal
install and a production-like values set (tests/deploy/values/), the rendered objects parsed and checked
against the code (DRBROKER_* names it reads, commands it has) and against each other (Secret refs, volumes)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.helm import NAMESPACE, helm, one, secret_data, template
from tests.deploy.test_manifests import assert_health_path, check_serve_args, cli_commands, known_env_vars

MINIMAL = "minimal.yaml"
PRODUCTION = "production.yaml"


def pod_of(docs: list[dict[str, Any]], kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = one(docs, kind)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def env_map(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), names  # a name twice: which one wins depends on the client
    return {e["name"]: e for e in container["env"]}


@pytest.mark.parametrize("files", [(MINIMAL,), (PRODUCTION,)])
def test_helm_lint_is_clean_in_strict_mode(files: tuple[str, ...]) -> None:
    out = helm("lint", "--strict", "--namespace", NAMESPACE, files=files)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout and "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout
    # lint renders NOTES.txt too (helm template does not, and install --dry-run=client still needs a cluster)


def test_the_defaults_refuse_to_render_naming_the_database_and_the_shared_kek() -> None:
    # The old chart rendered with its defaults and every pod crashed at start (no database; a KEK generated
    # per pod on a read-only root). Now helm says what to set, before anything is installed.
    out = helm("template", "drb")
    assert out.returncode != 0
    assert "database.url" in out.stderr and "database.existingSecret" in out.stderr
    assert "kek.existingSecret" in out.stderr and "kek.keyprotect" in out.stderr


@pytest.mark.parametrize("values, message", [
    ({"kek": {"existingSecret": "a", "keyprotect": {"instanceId": "i", "rootKeyId": "r", "apikeySecret": "s"}}},
     "exactly one of kek.existingSecret"),
    ({"kek": {"existingSecret": "", "keyprotect": {"rootKeyId": "r"}}}, "instanceId, rootKeyId and apikeySecret"),
    ({"extraEnv": [{"value": "x"}]}, "extraEnv: every entry needs a name"),
])
def test_contradictory_or_incomplete_values_are_refused(values: dict[str, Any], message: str) -> None:
    out = helm("template", "drb", values=values, files=(MINIMAL,))
    assert out.returncode != 0 and message in out.stderr, out.stderr


def test_the_minimal_install_renders_every_kind_it_needs() -> None:
    kinds = sorted(d["kind"] for d in template(None, MINIMAL))
    assert kinds == ["ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "Secret", "Service"]


def test_deployment_runs_the_broker_non_root_on_a_read_only_root_with_only_its_volumes_writable() -> None:
    docs = template(None, MINIMAL)
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] >= 2
    pod, container = pod_of(docs, "Deployment")
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                      "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    opts = check_serve_args(container["command"] + container["args"])
    assert container["ports"][0] == {"name": "http", "containerPort": int(opts["--port"])}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert_health_path(container[probe]["httpGet"]["path"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    writable = {m["mountPath"] for m in mounts.values() if not m.get("readOnly") and "emptyDir" in volumes[m["name"]]}
    assert writable == {"/var/lib/drbroker", "/tmp"}
    assert all("emptyDir" in volumes[n] or mounts[n].get("readOnly") for n in mounts)
    env = env_map(container)
    assert env["DRBROKER_STATE_DIR"]["value"].startswith("/var/lib/drbroker/")
    assert set(env) <= known_env_vars()
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_every_secret_the_minimal_install_references_is_its_own_and_has_the_key() -> None:
    docs = template(None, MINIMAL)
    secret = one(docs, "Secret")
    data = secret_data(secret)
    for kind in ("Deployment", "Job"):
        _, container = pod_of(docs, kind)
        for entry in container["env"]:
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == secret["metadata"]["name"] and ref["key"] in data, ref
    # Generated once, shared by every replica (the Secret is one object): a password and the dashboard key.
    assert len(data["password"]) >= 32 and len(data["dashboard-secret"]) >= 48
    assert data["username"] == "platform"
    assert data["database-url"].startswith("postgresql://")
    configmap = one(docs, "ConfigMap")
    _, container = pod_of(docs, "Deployment")
    assert container["envFrom"][0]["configMapRef"]["name"] == configmap["metadata"]["name"]
    assert set(configmap["data"]) <= known_env_vars()


def test_the_kek_secret_is_mounted_read_only_for_the_pods_group_and_named_by_the_key_file_setting() -> None:
    docs = template({"kek": {"existingSecretKey": "my-kek.json"}}, MINIMAL)
    pod, container = pod_of(docs, "Deployment")
    env = env_map(container)
    assert env["DRBROKER_KEK"]["value"] == "local"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "kek")
    volume = next(v for v in pod["volumes"] if v["name"] == "kek")
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "drbroker-kek"
    assert volume["secret"]["items"] == [{"key": "my-kek.json", "path": "kek.json"}]
    assert env["DRBROKER_KEK_FILE"]["value"] == f"{mount['mountPath']}/kek.json"
    # root:<fsGroup> 0440 in the pod: readable by the broker's group only (broker.security.filemodes admits it).
    assert volume["secret"]["defaultMode"] == 0o440 and pod["securityContext"]["fsGroup"] == 10001


def test_migration_job_is_the_pre_install_and_pre_upgrade_hook_that_runs_db_upgrade() -> None:
    docs = template(None, MINIMAL)
    job = one(docs, "Job")
    notes = job["metadata"]["annotations"]
    assert notes["helm.sh/hook"] == "pre-install,pre-upgrade"
    pod, container = pod_of(docs, "Job")
    assert container["command"] + container["args"] == ["drbroker", "db", "upgrade"]
    assert "db" in cli_commands() and "upgrade" in cli_commands("db")
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsUser"] == 10001 and container["securityContext"]["readOnlyRootFilesystem"]
    assert set(env_map(container)) == {"DRBROKER_STATE_DIR", "DRBROKER_DATABASE_URL"}
    # The Job is the only place migrations run: the Deployment's command is serve, never db upgrade.
    _, broker = pod_of(docs, "Deployment")
    assert "upgrade" not in broker["args"]
    secret = one(docs, "Secret")
    # The Secret is a hook too, with a lower weight, so it exists when the Job runs.
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(notes["helm.sh/hook-weight"])


def test_production_values_take_every_secret_from_the_operators_secrets_and_the_kek_from_key_protect() -> None:
    docs = template(None, PRODUCTION)
    assert not [d for d in docs if d["kind"] == "Secret"]  # nothing generated: all of it is the operator's
    pod, container = pod_of(docs, "Deployment")
    env = env_map(container)
    ref = {name: e.get("valueFrom", {}).get("secretKeyRef") for name, e in env.items()}
    assert ref["DRBROKER_USERNAME"] == {"name": "drbroker-platform", "key": "username"}
    assert ref["DRBROKER_PASSWORD"] == {"name": "drbroker-platform", "key": "password"}
    assert ref["DRBROKER_DATABASE_URL"] == {"name": "drbroker-postgres", "key": "url"}
    assert ref["DRBROKER_DASHBOARD_SECRET"] == {"name": "drbroker-dashboard", "key": "secret"}
    assert ref["DRBROKER_KEK_APIKEY"] == {"name": "drbroker-keyprotect", "key": "apikey"}
    assert env["DRBROKER_KEK"]["value"] == "keyprotect"
    assert env["DRBROKER_KEK_INSTANCE_ID"]["value"] == "7b9c0c7e-3c4f-4c1e-9d55-0f3f3d6b2a11"
    assert env["DRBROKER_KEK_KEYPROTECT_URL"]["value"] == "https://eu-de.kms.cloud.ibm.com"
    assert "DRBROKER_KEK_FILE" not in env and "kek" not in {v["name"] for v in pod["volumes"]}
    # extraEnv and envFrom reach the broker, after the chart's own.
    assert env["DRBROKER_LOG_FORMAT"]["value"] == "json"
    assert ref["DRBROKER_IBMCLOUD_APIKEY"] == {"name": "drbroker-ibmcloud", "key": "apikey"}
    assert container["envFrom"][1:] == [{"secretRef": {"name": "drbroker-ibmcloud-env"}}]
    assert set(env) <= known_env_vars()
    data = one(docs, "ConfigMap")["data"]
    assert data["DRBROKER_PUBLIC_URL"] == "https://drbroker.example.com"
    assert data["DRBROKER_BROKER_CRN"].startswith("crn:v1:")
    assert data["DRBROKER_ORCHESTRATOR"] == "ibmcloud" and data["DRBROKER_AUTH"] == "basic,bearer-crn"
    assert one(docs, "Deployment")["spec"]["replicas"] == 3
    # The migration Job gets the same extra environment (its database URL may come through envFrom).
    _, job = pod_of(docs, "Job")
    assert job["envFrom"] == [{"secretRef": {"name": "drbroker-ibmcloud-env"}}]
    assert env_map(job)["DRBROKER_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "drbroker-postgres",
                                                                                 "key": "url"}


def test_an_extra_env_entry_replaces_the_charts_variable_of_that_name_instead_of_repeating_it() -> None:
    docs = template({"extraEnv": [{"name": "DRBROKER_STATE_DIR", "value": "/var/lib/drbroker/other"}]}, MINIMAL)
    for kind in ("Deployment", "Job"):
        _, container = pod_of(docs, kind)
        assert env_map(container)["DRBROKER_STATE_DIR"] == {"name": "DRBROKER_STATE_DIR",
                                                            "value": "/var/lib/drbroker/other"}


def test_kek_from_env_lets_envfrom_carry_the_key_settings() -> None:
    docs = template({"kek": {"existingSecret": "", "fromEnv": True},
                     "envFrom": [{"secretRef": {"name": "drbroker-kek-env"}}]}, MINIMAL)
    _, container = pod_of(docs, "Deployment")
    assert not {"DRBROKER_KEK", "DRBROKER_KEK_FILE"} & set(env_map(container))
    assert {"secretRef": {"name": "drbroker-kek-env"}} in container["envFrom"]


def test_service_pdb_and_cluster_service_broker_follow_the_release_and_namespace() -> None:
    docs = template({"serviceCatalog": {"enabled": True}}, MINIMAL, release="dr-prod")
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one(docs, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < one(docs, "Deployment")["spec"]["replicas"]
    csb = one(docs, "ClusterServiceBroker")
    assert csb["spec"]["url"] == (f"http://{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local:"
                                  f"{service['spec']['ports'][0]['port']}")
    assert service["metadata"]["name"].startswith("dr-prod-")
    ref = csb["spec"]["authInfo"]["basic"]["secretRef"]
    secret = one(docs, "Secret")
    assert ref == {"namespace": NAMESPACE, "name": secret["metadata"]["name"]}
    assert {"username", "password"} <= set(secret_data(secret))
    # Off by default: most clusters have no servicecatalog.k8s.io API, and an install would fail on it.
    assert not [d for d in template(None, MINIMAL) if d["kind"] == "ClusterServiceBroker"]


def test_a_single_replica_gets_no_disruption_budget_that_would_block_every_drain() -> None:
    assert not [d for d in template({"replicaCount": 1}, MINIMAL) if d["kind"] == "PodDisruptionBudget"]


def test_custom_catalog_is_mounted_from_a_configmap_and_valid(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from broker.cli import main
    from tests.conftest import ROOT

    shipped = (ROOT / "catalog" / "powervs-dr.yaml").read_text()
    docs = template({"catalog": {"powervs-dr.yaml": shipped}}, MINIMAL)
    catalog_cm = one(docs, "ConfigMap", "-catalog")
    env_cm = one(docs, "ConfigMap", "-broker")
    _, container = pod_of(docs, "Deployment")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["catalog"] == env_cm["data"]["DRBROKER_CATALOG"]
    (tmp_path / "powervs-dr.yaml").write_text(catalog_cm["data"]["powervs-dr.yaml"])
    result = CliRunner().invoke(main, ["catalog", "validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
