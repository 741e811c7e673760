"""The real path: a Prefect server and a process worker on the `local` work queue, `prefect deploy` of
prefect.yaml's local deployments, then `prefect deployment run deploy-helix/local`, with real containers coming
up healthy. The worker (and the deployments it serves) is the ``worker`` fixture of tests/prefect_worker.py."""

from __future__ import annotations

import json

import httpx
import pytest
import yaml

from testbed.helix import container_ids, local_descriptor
from testbed.paths import REPO
from tests.prefect_worker import BIN, latest_artifact, sh

pytestmark = pytest.mark.bed


def scheduled_parameters(flow: str, env: str) -> list[dict]:
    """The parameters of each schedule of deployment ``flow/env`` in prefect.yaml (what a scheduled run gets
    beyond the deployment's own)."""
    from helix_ops.schedules import deployment_key

    doc = yaml.safe_load((REPO / "prefect.yaml").read_text())
    [dep] = [d for d in doc["deployments"] if deployment_key(d) == f"{flow}/{env}"]
    return [dict(s.get("parameters") or {}) for s in dep.get("schedules") or []]


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
