"""A DR configuration snapshot written by a real ``drbroker serve`` brings a deleted instance's records back
(``drbroker snapshot restore``, a real process): the broker fetches, binds and deprovisions it again, and the
deprovision removes the simulated resources. No secret is in COS in plaintext."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import GRS_PARAMS, GRS_PLAN, SERVICE_ID
from tests.e2e.conftest import base_env, drbroker_command, query, sim_inventory, wait_until
from tests.evidence.conftest import cos_env, s3, versions

# The platform sends the CRN URL-encoded (%2F); the broker stores and the CLI takes it decoded.
URL_ID = "crn:v1:bluemix:public:powervs-dr:us-south:a%2Facct:restore-me::"
IID = URL_ID.replace("%2F", "/")
BID = "binding-restore-1"


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*drbroker_command(), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def snapshot_exported(db: Path) -> bool:
    rows = query(db, "SELECT changed_at, exported_changed_at FROM instance_snapshots WHERE instance_id = ?", (IID,))
    return bool(rows) and rows[0]["exported_changed_at"] == rows[0]["changed_at"]


def forget_instance(db: Path) -> None:
    """The broker's records of the instance are lost (the simulated cloud, in the same file, keeps its resources)."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM operation_steps WHERE operation_id IN "
                     "(SELECT id FROM operations WHERE instance_id = ?)", (IID,))
        for table, column in (("operations", "instance_id"), ("bindings", "instance_id"), ("instances", "id"),
                              ("instance_snapshots", "instance_id")):
            conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (IID,))
    conn.close()


def test_snapshot_restore_brings_back_a_deleted_instance(tmp_path: Path, moto_url: str, bucket: str,
                                                         broker_factory: Any, client_for: Any) -> None:
    db = tmp_path / "state.db"
    env = base_env(db, **cos_env(moto_url, bucket, DRBROKER_COS_EXPORT_SECONDS="0.2"))
    broker = broker_factory(db, env=env)
    osb = client_for(broker)
    assert osb.provision(URL_ID).status_code == 202
    assert osb.wait(URL_ID)["state"] == "succeeded"
    binding = f"/v2/service_instances/{URL_ID}/service_bindings/{BID}"
    r = osb.put(binding, {"service_id": SERVICE_ID, "plan_id": GRS_PLAN})
    assert r.status_code == 201, r.text
    credentials = r.json()["credentials"]
    wait_until(lambda: snapshot_exported(db), 30, "the snapshot after the bind reached COS")
    broker.stop()
    resources = sim_inventory(db, tmp_path)
    assert any(r["instance_id"] == IID for r in resources)

    # Every snapshot object: sealed columns are ciphertext, the binding's API key is nowhere in plaintext.
    snaps = [v for v in versions(moto_url, bucket, "drb/snapshots/") if v["Key"].endswith(".json")]
    assert snaps
    newest = json.loads(s3(moto_url).get_object(Bucket=bucket, Key=max(v["Key"] for v in snaps))["Body"].read())
    assert newest["instance"]["parameters"].startswith("enc:")
    assert newest["bindings"][0]["credentials"].startswith("enc:")
    for v in snaps:
        body = s3(moto_url).get_object(Bucket=bucket, Key=v["Key"])["Body"].read().decode()
        assert credentials["iam"]["apikey"] not in body

    forget_instance(db)
    listed = cli(env, tmp_path, "snapshot", "list", IID)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == len(snaps), listed.stdout
    dry = cli(env, tmp_path, "snapshot", "restore", IID, "--dry-run")
    assert dry.returncode == 0 and "would restore" in dry.stdout, dry.stderr
    assert query(db, "SELECT id FROM instances WHERE id = ?", (IID,)) == []
    done = cli(env, tmp_path, "snapshot", "restore", IID)
    assert done.returncode == 0, done.stderr
    assert "1 binding(s)" in done.stdout and "2 operation(s)" in done.stdout, done.stdout
    again = cli(env, tmp_path, "snapshot", "restore", IID)
    assert again.returncode == 1 and "exists in the database" in again.stderr and "Traceback" not in again.stderr

    broker = broker_factory(db, env=env)
    osb = client_for(broker)
    r = osb.get(f"/v2/service_instances/{URL_ID}")
    assert r.status_code == 200, r.text
    assert r.json()["parameters"]["protected_volumes"] == GRS_PARAMS["protected_volumes"]
    r = osb.get(binding)
    assert r.status_code == 200 and r.json()["credentials"] == credentials, r.text
    r = osb.put(f"/v2/service_instances/{URL_ID}/service_bindings/{BID}-2", {"service_id": SERVICE_ID,
                                                                         "plan_id": GRS_PLAN})
    assert r.status_code == 201, r.text
    for bid in (BID, f"{BID}-2"):
        r = osb.delete(f"/v2/service_instances/{URL_ID}/service_bindings/{bid}",
                       params={"service_id": SERVICE_ID, "plan_id": GRS_PLAN})
        assert r.status_code == 200, r.text
    assert osb.deprovision(URL_ID).status_code == 202
    assert osb.wait(URL_ID)["state"] == "succeeded"
    broker.stop()
    assert [r for r in sim_inventory(db, tmp_path) if r["instance_id"] == IID] == []
