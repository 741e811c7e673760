"""The data flows of a ``target: kubernetes`` environment, for real, on the test bed's control plane: deploy-helix
(with init-helix-db through a port-forward), backup-helix, restore-helix and rotate-helix-secrets (verify-helix-backup
of such a backup runs in tests/e2e/test_scheduled_kube_e2e.py), each reaching Neo4j and Redis through the API server's ``pods/portforward``.

kwok plays the nodes, so the environment's pods do not run; the bed's ClusterPortForwards send their Bolt and
RESP ports to a Neo4j and a Redis server of this module's own (``cluster.forward``). Every byte of a backup
therefore travels kube-apiserver → kwok → Neo4j / Redis, and the writer pause is a real scale of mcp-graph to 0
and back. The environment is deployed once per module; the tests run in order.
"""

from __future__ import annotations

import os
import time

import pytest
import yaml

from tests.kube.conftest import Admin, new_names, write_descriptor

pytestmark = [pytest.mark.bed, pytest.mark.timeout(900)]

NODES = 600  # every property type (bench.graphgen), small: the round trip's size is tested on the engine


@pytest.fixture(scope="module")
def data_env(bed, kube, images, prefect_harness, audit_dir, tmp_path_factory):
    from blocks.bootstrap import main as bootstrap
    from pydantic import SecretStr

    from blocks.storage import save_s3_storage
    from flows.deploy import deploy_helix

    environment, namespace = new_names("d")
    neo4j = bed.new_neo4j(f"neo4j-{environment}")
    redis = bed.new_redis(f"redis-{environment}")
    s3 = bed.s3()
    bucket = f"hx-{environment}"
    s3.client().create_bucket(Bucket=bucket)
    path = write_descriptor(tmp_path_factory.mktemp("ddesc") / f"{environment}.yaml", environment, namespace,
                            sentinel=False)
    data = yaml.safe_load(path.read_text())
    # the scratch restore of verify-helix-backup runs these images on the worker's engine (the bed's builds)
    data["services"]["neo4j"]["image"] = {"repository": "localhost/helix-neo4j", "tag": "5.26"}
    data["services"]["redis"]["image"] = {"repository": "localhost/helix-redis", "tag": "7"}
    data["backup"]["storage"] = {"kind": "s3", "bucket": bucket, "prefix": f"{environment}/",
                                 "endpoint": s3.endpoint}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    save_s3_storage(data["credentials"]["storage"], bucket, prefix=f"{environment}/", access_key_id=s3.access_key,
                    secret_access_key=SecretStr(s3.secret_key), endpoint_url=s3.endpoint, overwrite=True)
    inputs = {**os.environ, "HELIX_NEO4J_USER": neo4j.user, "HELIX_NEO4J_PASSWORD": neo4j.password,
              "HELIX_REDIS_PASSWORD": redis.password}
    assert bootstrap(["--descriptor", str(path)], inputs) == 0
    kube.forward(namespace, "neo4j", 7687, ("127.0.0.1", neo4j.bolt_port))
    kube.forward(namespace, "redis", 6379, ("127.0.0.1", redis.port))
    t0 = time.monotonic()
    first = deploy_helix(env=environment, descriptor=str(path), kubeconfig=str(kube.kubeconfig), health_timeout_s=90)
    print(f"deploy with init-helix-db through the port-forward: {time.monotonic() - t0:.1f}s")
    admin = Admin(kube.kubeconfig, namespace)
    yield {"environment": environment, "namespace": namespace, "path": path, "neo4j": neo4j, "redis": redis,
           "s3": s3, "bucket": bucket, "admin": admin, "first": first, "engine_url": bed.engine().base_url}
    admin.delete_namespace()


def args(env, kube, **more):
    return {"env": env["environment"], "descriptor": str(env["path"]), "kubeconfig": str(kube.kubeconfig), **more}


def neo4j_driver(env, password: str | None = None, user: str | None = None):
    import neo4j

    n = env["neo4j"]
    return neo4j.GraphDatabase.driver(n.uri, auth=(user or n.user, password or n.password))


def store_of(env):
    from drivers.storage import S3Store, s3_client

    s3 = env["s3"]
    return S3Store(s3_client(s3.endpoint, s3.access_key, s3.secret_key), env["bucket"], f"{env['environment']}/")


def current_password(env, block: str) -> str:
    from blocks.credentials import Neo4jCredentials, RedisCredentials

    cls = Neo4jCredentials if block == "neo4j" else RedisCredentials
    return cls.load(f"{env['environment']}-{block}").password.get_secret_value()


def test_deploy_ran_the_migrations_through_the_port_forward(data_env):
    from helix_ops.migrations import MIGRATIONS

    assert data_env["first"]["unhealthy"] == []
    with neo4j_driver(data_env) as drv:
        versions = {r["v"] for r in drv.execute_query("MATCH (m:HelixMigration) RETURN m.version AS v").records}
    assert versions == {m.version for m in MIGRATIONS}


def test_init_helix_db_by_environment_name_only(data_env, kube):
    from flows.init_db import init_helix_db

    summary = init_helix_db(env=data_env["environment"], descriptor=str(data_env["path"]),
                            kubeconfig=str(kube.kubeconfig))
    assert summary["applied"] == [] and summary["already_applied"]  # idempotent: the deploy applied them
    assert summary["uri"].startswith("bolt://127.0.0.1:") and summary["uri"] != data_env["neo4j"].uri


def test_backup_restore_round_trip_of_every_type_through_the_port_forward(data_env, kube):
    from bench.graphgen import content_digest, generate
    from drivers.redis_backup import dataset_fingerprint
    from flows.backup import backup_helix
    from flows.restore import restore_helix
    from tests.backup.test_backup_redis import fill

    n, r = data_env["neo4j"], data_env["redis"]
    with neo4j_driver(data_env) as drv:
        drv.execute_query("MATCH (x:Entity) DETACH DELETE x")
    generate(n.uri, n.user, n.password, NODES, 2 * NODES)
    with r.client() as c:
        c.flushall()
        fill(c, 700)
    graph = content_digest(n.uri, n.user, n.password)
    dataset = dataset_fingerprint("127.0.0.1", r.port, r.password)
    admin = data_env["admin"]
    graph_pods = admin.pods("mcp-graph")
    assert len(graph_pods) == 1

    result = backup_helix(**args(data_env, kube))
    bid = result["backup_id"]
    window = result["writer_window"]
    assert window["paused"] and window["containers"] == sorted(graph_pods), window
    assert admin.get("Deployment", "mcp-graph")["spec"]["replicas"] == 1  # scaled back
    manifest = store_of(data_env).read_manifest(bid)
    assert manifest.verified and manifest.neo4j.writer_paused and manifest.neo4j.nodes >= NODES
    assert manifest.redis.keys == 701

    # change everything, then restore: the backup's content comes back exactly
    with neo4j_driver(data_env) as drv:
        drv.execute_query("MATCH (x:Entity) WITH x LIMIT 50 DETACH DELETE x")
        drv.execute_query("CREATE (:Entity {uid: 'cpe-after-backup'})")
    with r.client() as c:
        c.flushall()
        c.set("after-backup", "x")
    restored = restore_helix(**args(data_env, kube, backup_id=bid))
    assert restored["problems"] == [] and restored["safety_backup_id"]
    assert content_digest(n.uri, n.user, n.password) == graph
    assert dataset_fingerprint("127.0.0.1", r.port, r.password) == dataset
    assert admin.get("Deployment", "mcp-graph")["spec"]["replicas"] == 1


def test_a_redis_only_backup_pauses_no_writer(data_env, kube):
    from flows.backup import backup_helix

    result = backup_helix(**args(data_env, kube, components=["redis"]))
    assert result["components"] == ["redis"] and result["writer_window"]["paused"] is False
    assert result["counts"]["neo4j"] is None and result["counts"]["redis"]["keys"] >= 1


def test_rotation_over_the_port_forward_old_credentials_rejected_new_ones_work(data_env, kube):
    import neo4j as neo4j_lib
    import redis as redis_lib

    from flows.rotate import rotate_helix_secrets

    old_redis = current_password(data_env, "redis")
    result = rotate_helix_secrets(**args(data_env, kube, credentials=["redis", "neo4j"], health_timeout_s=60))
    assert set(result["rotated"]) == {"redis", "neo4j"}
    new_redis = current_password(data_env, "redis")
    assert new_redis != old_redis
    r = data_env["redis"]
    with pytest.raises(redis_lib.AuthenticationError):
        redis_lib.Redis(port=r.port, password=old_redis).ping()
    assert redis_lib.Redis(port=r.port, password=new_redis).ping()

    from blocks.credentials import Neo4jCredentials

    block = Neo4jCredentials.load(f"{data_env['environment']}-neo4j")
    with neo4j_driver(data_env, block.password.get_secret_value(), block.user) as drv:
        assert drv.execute_query("RETURN 1 AS one").records[0]["one"] == 1
    with pytest.raises(neo4j_lib.exceptions.AuthError), \
            neo4j_driver(data_env, data_env["neo4j"].password, data_env["neo4j"].user) as drv:
        drv.verify_connectivity()
    # the Secret carries the new values, and its consumers were rolled (their pod-template checksum)
    import base64

    secret = data_env["admin"].get("Secret", "helix-secrets")
    assert base64.b64decode(secret["data"]["redis-password"]).decode() == new_redis


def test_a_dropped_port_forward_mid_backup_leaves_no_manifest_and_the_next_run_succeeds(data_env, kube):
    """Mid-backup, after the Neo4j export went into the store, the stream to Redis is cut (its
    ClusterPortForward now points at a closed port): the backup fails, nothing is listed, the writer runs
    again; forwarded back, the next run succeeds."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.backup import backup_helix
    from testbed import procs

    store = store_of(data_env)
    before = {m.backup_id for m in store.list()}
    kube.forward(data_env["namespace"], "redis", 6379, ("127.0.0.1", procs.free_port()))
    try:
        state = backup_helix(**args(data_env, kube), return_state=True)
    finally:
        kube.forward(data_env["namespace"], "redis", 6379, ("127.0.0.1", data_env["redis"].port))
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    print(f"backup with the Redis forward cut: {type(error).__name__}: {error}")
    assert "port-forward to pod" in str(error) and "redis" in str(error)
    # mid-backup: the Neo4j export had completed into the store when the Redis stream failed (at the forward
    # itself: the endpoint opens one connection to fail early, so the Redis task never started)
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    outcome = {r.name.rsplit("-", 1)[0]: r.state.type.value for r in runs if r.state is not None}
    assert outcome.get("backup-neo4j-logical") == "COMPLETED", outcome
    assert "commit-backup" not in outcome and "backup-redis-rdb" not in outcome, outcome
    assert {m.backup_id for m in store.list()} == before  # no manifest: it does not exist
    assert store.orphans() == []  # and the writer removed the export it had stored
    assert data_env["admin"].get("Deployment", "mcp-graph")["spec"]["replicas"] == 1
    result = backup_helix(**args(data_env, kube))
    assert result["backup_id"] not in before and store.read_manifest(result["backup_id"]).verified


def test_the_api_server_unreachable_is_one_clear_error(data_env, kube, tmp_path):
    from flows.backup import backup_helix
    from helix_ops.errors import DriverError

    config = yaml.safe_load(kube.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"  # nothing listens on port 1
    bad = tmp_path / "unreachable.yaml"
    bad.write_text(yaml.safe_dump(config))
    bad.chmod(0o600)
    with pytest.raises(DriverError, match="not reachable|unreachable") as err:
        backup_helix(**{**args(data_env, kube), "kubeconfig": str(bad)})
    assert "127.0.0.1:1" in str(err.value)
