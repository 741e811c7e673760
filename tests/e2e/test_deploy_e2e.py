"""The real path: a Prefect server and a process worker on the `local` work queue, `prefect deploy` of
prefect.yaml's local deployments, then `prefect deployment run deploy-helix/local`, with real containers coming
up healthy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from helix_ops.schedules import deployments_of
from testbed.helix import container_ids, local_descriptor
from testbed.paths import REPO

pytestmark = pytest.mark.bed
BIN = Path(sys.executable).parent


def sh(argv, env, timeout=600):
    out = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{argv[:4]} exited {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def scheduled_parameters(flow: str, env: str) -> list[dict]:
    """The parameters of each schedule of deployment ``flow/env`` in prefect.yaml (what a scheduled run gets
    beyond the deployment's own)."""
    from helix_ops.schedules import deployment_key

    doc = yaml.safe_load((REPO / "prefect.yaml").read_text())
    [dep] = [d for d in doc["deployments"] if deployment_key(d) == f"{flow}/{env}"]
    return [dict(s.get("parameters") or {}) for s in dep.get("schedules") or []]


def latest_artifact(api: str, key: str) -> str:
    r = httpx.post(f"{api}/artifacts/latest/filter", json={"artifacts": {"key": {"any_": [key]}}}, timeout=10)
    r.raise_for_status()
    return r.json()[0]["data"]


@pytest.fixture
def worker(prefect_server, bed):
    env = {**os.environ, **prefect_server.env(), "HELIX_OPS_HOME": str(REPO), "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
    sh([str(BIN / "prefect"), "work-pool", "create", "helix-ops", "--type", "process", "--overwrite"], env)
    # only local's deployments, and a worker on local's queue: nothing of staging or prod is registered or run
    names = deployments_of(yaml.safe_load((REPO / "prefect.yaml").read_text()), "local")
    sh([str(BIN / "prefect"), "--no-prompt", "deploy", *[a for n in names for a in ("--name", n)]], env)
    r = httpx.post(f"{env['PREFECT_API_URL']}/deployments/filter", json={"limit": 200}, timeout=10)
    r.raise_for_status()
    mine = [d for d in r.json() if d["work_pool_name"] == "helix-ops"]
    assert len(mine) == len(names) and {(d["name"], d["work_queue_name"]) for d in mine} == {("local", "local")}
    backup = [d for d in mine if d["entrypoint"].endswith(":backup_helix")][0]["schedules"]
    assert sorted((s["schedule"]["cron"], s["active"], s["parameters"]["components"][0]) for s in backup) == \
        [("*/30 * * * *", False, "redis"), ("0 * * * *", False, "neo4j")]  # deployments/local.yaml, inactive
    log = open(bed.run_dir / "worker.log", "wb")
    proc = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "helix-ops", "--work-queue", "local"],
                            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    yield env
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_prefect_deployment_run_deploys_the_local_stack(bed, engine, images, worker, docker_client, tmp_path):
    from drivers.engine import EngineDriver

    env = worker
    project = f"e2e{bed.run_id.split('-')[-1]}"
    path = local_descriptor(tmp_path / "local.yaml", project)
    sh([str(BIN / "python"), "-m", "blocks.bootstrap", "--descriptor", str(path)], env)
    params = json.dumps({"descriptor": str(path), "engine_url": engine.base_url,
                         "container_labels": bed.container_labels()})
    run = [str(BIN / "prefect"), "deployment", "run", "deploy-helix/local", "--params", params, "--watch",
           "--watch-timeout", "900"]
    try:
        out = sh(run, env, timeout=960)
        assert "Completed" in out
        status = latest_artifact(env["PREFECT_API_URL"], "helix-status-local")
        for service in ("neo4j", "redis", "dashboard", "mcp-graph", "mcp-discovery", "mcp-derivation", "mcp-cascade",
                        "mcp-verification", "nginx"):
            assert f"| {service} |" in status
        assert "unhealthy" not in status and "absent" not in status
        port = yaml.safe_load(path.read_text())["services"]["nginx"]["host_port"]
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).json()["status"] == "ok"

        before = container_ids(docker_client, project)
        out = sh(run, env, timeout=960)
        assert "Completed" in out
        plan = latest_artifact(env["PREFECT_API_URL"], "deploy-plan-local")
        assert "0 create, 0 update, 0 delete, 13 noop" in plan
        assert container_ids(docker_client, project) == before

        # backup-helix/local's schedules (from deployments/local.yaml), each run by hand with its parameters
        store = tmp_path / "backups"
        for schedule in scheduled_parameters("backup-helix", "local"):
            params = json.dumps({"descriptor": str(path), "engine_url": engine.base_url,
                                 "storage_path": str(store), **schedule})
            out = sh([str(BIN / "prefect"), "deployment", "run", "backup-helix/local", "--params", params, "--watch",
                      "--watch-timeout", "600"], env, timeout=660)
            assert "Completed" in out, out[-2000:]
        from drivers.storage import LocalStore

        kept = sorted(tuple(m.components) for m in LocalStore(store).list())
        assert kept == [("neo4j",), ("redis",)] and all(m.verified for m in LocalStore(store).list())
    finally:
        EngineDriver.connect(engine.base_url, project, "local").remove_project()
