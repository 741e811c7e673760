"""deploy-helix in-process (Prefect's test harness) against the real engine, Neo4j and Redis containers."""

from __future__ import annotations

import threading
import uuid

import httpx
import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

from flows.deploy import deploy_helix
from helix_ops.errors import DriverError, WaitTimeout
from testbed.helix import container_ids, local_descriptor

pytestmark = pytest.mark.bed


@pytest.fixture(scope="module")
def deployed(bed, engine, images, prefect_harness, tmp_path_factory):
    """One full deploy of the local stack (own project and port), removed at the end of the module."""
    from blocks.bootstrap import main as bootstrap
    from drivers.engine import EngineDriver

    project = f"dt{bed.run_id.split('-')[-1]}"
    path = local_descriptor(tmp_path_factory.mktemp("deploy") / "local.yaml", project)
    assert bootstrap(["--descriptor", str(path)]) == 0
    result = deploy_helix(env="local", descriptor=str(path), engine_url=engine.base_url,
                          container_labels=bed.container_labels())
    yield {"path": path, "project": project, "result": result}
    EngineDriver.connect(engine.base_url, project, "local").remove_project()


def run(deployed, engine, bed, **kw):
    return deploy_helix(env="local", descriptor=str(deployed["path"]), engine_url=engine.base_url,
                        container_labels=bed.container_labels(), **kw)


def test_first_deploy_brings_every_service_up_healthy(deployed):
    result = deployed["result"]
    assert result["applied"] and result["unhealthy"] == []
    by_service = {r["service"]: r for r in result["status"]}
    assert set(by_service) == {"neo4j", "redis", "dashboard", "mcp-graph", "mcp-discovery", "mcp-derivation",
                               "mcp-cascade", "mcp-verification", "nginx"}
    assert by_service["dashboard"]["replicas"] == 2
    assert by_service["neo4j"]["health"] == "bolt login ok"
    assert by_service["redis"]["health"] == "redis AUTH + PING ok"
    # the probes' own health includes a Bolt login and Redis AUTH with the wired credentials
    assert all(by_service[s]["health"] == "HTTP 200 /api/health"
               for s in ("dashboard", "mcp-graph", "mcp-discovery", "mcp-derivation", "mcp-cascade", "mcp-verification"))
    port = yaml.safe_load(deployed["path"].read_text())["services"]["nginx"]["host_port"]
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text.strip() == "dashboard v1"


def test_init_db_applied_its_migrations(deployed, docker_client):
    from blocks.secrets import load_environment_secrets
    from drivers.neo4j import Neo4jClient
    from helix_ops.descriptor import load_descriptor

    neo4j = [r for r in deployed["result"]["status"] if r["service"] == "neo4j"][0]
    secrets = load_environment_secrets(load_descriptor(deployed["path"]))
    with Neo4jClient(f"bolt://{neo4j['endpoint']}", secrets.neo4j_user, secrets.neo4j_password) as client:
        applied = client.applied_migrations()
    from helix_ops.migrations import MIGRATIONS

    assert sorted(applied) == [m.version for m in MIGRATIONS]


def init_db_run_names() -> list[str]:
    """The names of the init-helix-db flow runs the harness's API has seen."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        return [r.name for r in client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["init-helix-db"])))]


def init_db_runs() -> int:
    """How many init-helix-db flow runs the harness's API has seen."""
    return len(init_db_run_names())


def neo4j_client(deployed):
    from blocks.secrets import load_environment_secrets
    from drivers.neo4j import Neo4jClient
    from helix_ops.descriptor import load_descriptor

    neo4j = [r for r in deployed["result"]["status"] if r["service"] == "neo4j"][0]
    secrets = load_environment_secrets(load_descriptor(deployed["path"]))
    return Neo4jClient(f"bolt://{neo4j['endpoint']}", secrets.neo4j_user, secrets.neo4j_password)


def test_second_run_is_all_noop_and_restarts_nothing(deployed, engine, bed, docker_client):
    before = container_ids(docker_client, deployed["project"])
    runs = init_db_runs()
    result = run(deployed, engine, bed)
    assert result["plan"]["counts"]["noop"] == len(result["plan"]["changes"])
    assert result["changed"] == [] and result["unhealthy"] == []
    assert container_ids(docker_client, deployed["project"]) == before
    assert init_db_runs() == runs, "a no-op deploy ran init-helix-db although the ledger matches the code"


def test_a_deploy_runs_init_db_when_the_ledger_lags_the_code(deployed, engine, bed):
    from helix_ops.migrations import LEDGER_LABEL, MIGRATIONS

    last = MIGRATIONS[-1].version
    with neo4j_client(deployed) as db:
        db._run("forgetting a migration", f"MATCH (m:{LEDGER_LABEL} {{version: $v}}) DELETE m", v=last)
        assert last not in db.applied_migrations()
    from helix_ops.descriptor import load_descriptor

    runs = init_db_run_names()
    result = run(deployed, engine, bed)
    # one init-helix-db run more, named after the environment it initialises
    expected = f"init-db-{load_descriptor(deployed['path']).environment}"
    assert result["unhealthy"] == [] and sorted(init_db_run_names()) == sorted([*runs, expected]), runs
    with neo4j_client(deployed) as db:
        assert sorted(db.applied_migrations()) == [m.version for m in MIGRATIONS]


def test_changing_one_image_tag_changes_only_that_service(deployed, engine, bed, docker_client, tmp_path):
    before = container_ids(docker_client, deployed["project"])
    path = local_descriptor(tmp_path / "local.yaml", deployed["project"], mcp_discovery="v2")
    # keep the original host port so the load balancer is unchanged
    data = yaml.safe_load(path.read_text())
    data["services"]["nginx"]["host_port"] = yaml.safe_load(deployed["path"].read_text())["services"]["nginx"]["host_port"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = deploy_helix(env="local", descriptor=str(path), engine_url=engine.base_url,
                          container_labels=bed.container_labels())
    updates = [c for c in result["plan"]["changes"] if c["action"] != "noop"]
    assert [(c["action"], c["identity"]) for c in updates] == [("update", "service/mcp-discovery")]
    assert {"path": "image", "old": "localhost/helix-probe:v1", "new": "localhost/helix-probe:v2"} in updates[0]["diff"]
    after = container_ids(docker_client, deployed["project"])
    changed = {n for n in set(before) | set(after) if before.get(n) != after.get(n)}
    assert changed and all("-mcp-discovery-" in n for n in changed)
    # back to v1 for the tests after this one
    run(deployed, engine, bed)


def test_a_service_that_never_gets_healthy_fails_at_that_step(deployed, engine, bed, docker_client, tmp_path):
    before = container_ids(docker_client, deployed["project"])
    path = local_descriptor(tmp_path / "local.yaml", deployed["project"], mcp_cascade="broken")
    data = yaml.safe_load(path.read_text())
    data["services"]["nginx"]["host_port"] = yaml.safe_load(deployed["path"].read_text())["services"]["nginx"]["host_port"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(WaitTimeout) as err:
        deploy_helix(env="local", descriptor=str(path), engine_url=engine.base_url,
                     container_labels=bed.container_labels(), health_timeout_s=15)
    message = str(err.value)
    assert "mcp-cascade" in message and "forced unhealthy" in message
    after = container_ids(docker_client, deployed["project"])
    # every service started before the failing step is untouched and still running
    untouched = {n: v for n, v in before.items() if "-mcp-cascade-" not in n}
    assert {n: after.get(n) for n in untouched} == untouched
    assert all(v[2] == "running" for v in untouched.values())
    run(deployed, engine, bed)  # converge back


def test_a_stop_first_service_whose_new_replica_fails_serves_again_from_its_old_one(deployed, engine, bed,
                                                                                     docker_client, tmp_path):
    """mcp-graph (the single writer) rolls stop-first: its old replica is stopped, not removed, until the new one
    is healthy; when the new one never is, the old one is started again (deploy-helix has no rollback of its
    own), so the writer's outage ends with the failed roll."""
    before = {n: v for n, v in container_ids(docker_client, deployed["project"]).items() if "-mcp-graph-" in n}
    assert len(before) == 1 and all(v[2] == "running" for v in before.values()), before
    path = local_descriptor(tmp_path / "local.yaml", deployed["project"], mcp_graph="broken")
    data = yaml.safe_load(path.read_text())
    data["services"]["nginx"]["host_port"] = yaml.safe_load(deployed["path"].read_text())["services"]["nginx"]["host_port"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(WaitTimeout, match="mcp-graph"):
        deploy_helix(env="local", descriptor=str(path), engine_url=engine.base_url,
                     container_labels=bed.container_labels(), health_timeout_s=15)
    after = {n: v for n, v in container_ids(docker_client, deployed["project"]).items() if "-mcp-graph-" in n}
    assert {n: (v[0], v[2]) for n, v in after.items()} == {n: (v[0], "running") for n, v in before.items()}, \
        (before, after)  # the same container, running again
    assert run(deployed, engine, bed)["plan"]["counts"]["noop"]  # and the descriptor's deploy is a no-op again


def test_engine_down_is_a_clear_error_after_retries(deployed, bed, tmp_path):
    with pytest.raises(DriverError, match="not reachable"):
        deploy_helix(env="local", descriptor=str(deployed["path"]), engine_url=f"unix://{tmp_path}/none.sock",
                     container_labels=bed.container_labels())


def test_two_concurrent_deploys_do_not_interleave(deployed, engine, bed):
    results: list = []

    def go():
        results.append(run(deployed, engine, bed, lease_wait_s=300))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert len(results) == 2 and all(r["unhealthy"] == [] for r in results)

    with get_client(sync_client=True) as client:
        windows = []
        for r in results:
            flt = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[uuid.UUID(r["flow_run_id"])]))
            mine = client.read_task_runs(task_run_filter=flt)
            inside = [t for t in mine if t.name.startswith(("read-current-state", "service-status"))]
            assert len(inside) == 2
            windows.append((min(t.start_time for t in inside), max(t.end_time for t in inside)))
    (a_start, a_end), (b_start, b_end) = sorted(windows)
    assert a_end <= b_start, f"lease windows overlap: {windows}"
