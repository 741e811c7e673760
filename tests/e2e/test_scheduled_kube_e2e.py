"""Every scheduled deployment of prefect.yaml for the Kubernetes environments (staging, prod) runs to Completed
through ``prefect deployment run`` and a worker on those environments' queues, against the test bed's control
plane: staging- and prod-shaped descriptors (their schedules, S3 storage, security settings) pointed at fresh
namespaces of the bed's cluster, Neo4j and Redis reached through ``pods/portforward`` (kwok forwards the pods'
ports to a Neo4j and a Redis of this module's own), backups in the bed's S3.

The one departure from the real descriptors: Neo4j Community, one instance (Enterprise cannot run here) and
Redis single (the Sentinels' own ports are not forwarded on the bed); the test bed's images for the
scratch restore of verify-helix-backup.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from testbed.paths import REPO
from tests.e2e.test_deploy_e2e import scheduled_parameters
from tests.prefect_worker import client_env, deployment_run, sh, worker_process

pytestmark = [pytest.mark.bed, pytest.mark.timeout(1800)]
BIN = Path(sys.executable).parent
ENVS = ("staging", "prod")


def shaped_descriptor(dest: Path, shape: str, environment: str, namespace: str, s3, bucket: str) -> Path:
    data = yaml.safe_load((REPO / "deployments" / f"{shape}.yaml").read_text())
    data["environment"] = environment
    data["kubernetes"].update(namespace=namespace, version="1.31")
    data["kubernetes"].pop("storage_class", None)  # the bed's default StorageClass
    neo4j = data["services"]["neo4j"]
    for key in ("cluster_size", "plugins"):
        neo4j.pop(key, None)
    neo4j.update(edition="community", image={"repository": "localhost/helix-neo4j", "tag": "5.26"})
    redis = data["services"]["redis"]
    redis.pop("sentinel", None)
    redis.update(mode="single", image={"repository": "localhost/helix-redis", "tag": "7"})
    data["backup"]["storage"] = {"kind": "s3", "bucket": bucket, "prefix": f"{environment}/",
                                 "endpoint": s3.endpoint}
    data["credentials"] = {k: f"{environment}-{k}" for k in ("neo4j", "redis", "dashboard", "anthropic", "storage")}
    dest.parent.mkdir(parents=True, exist_ok=True)
    (dest.parent / "helix.config.yaml").write_text((REPO / "deployments" / "helix.config.yaml").read_text())
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


@pytest.fixture(scope="module")
def kube_worker(bed, kube, images, prefect_server, tmp_path_factory):
    from helix_ops.schedules import deployments_of
    from tests.kube.conftest import Admin, new_names

    neo4j = bed.new_neo4j("neo4j-e2e-kube")
    redis = bed.new_redis("redis-e2e-kube")
    s3 = bed.s3()
    env = client_env(prefect_server)
    envs = {}
    for shape in ENVS:
        environment, namespace = new_names("e")
        bucket = f"hx-{environment}"
        s3.client().create_bucket(Bucket=bucket)
        path = shaped_descriptor(tmp_path_factory.mktemp(shape) / f"{environment}.yaml", shape, environment,
                                 namespace, s3, bucket)
        inputs = {**env, "HELIX_NEO4J_USER": neo4j.user, "HELIX_NEO4J_PASSWORD": neo4j.password,
                  "HELIX_REDIS_PASSWORD": redis.password, "HELIX_S3_ACCESS_KEY_ID": s3.access_key,
                  "HELIX_S3_SECRET_ACCESS_KEY": s3.secret_key}
        sh([str(BIN / "python"), "-m", "blocks.bootstrap", "--descriptor", str(path)], inputs)
        kube.forward(namespace, "neo4j", 7687, ("127.0.0.1", neo4j.bolt_port))
        kube.forward(namespace, "redis", 6379, ("127.0.0.1", redis.port))
        envs[shape] = {"environment": environment, "namespace": namespace, "path": path, "bucket": bucket,
                       "admin": Admin(kube.kubeconfig, namespace)}
    sh([str(BIN / "prefect"), "work-pool", "create", "helix-ops", "--type", "process", "--overwrite"], env)
    doc = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = [n for shape in ENVS for n in deployments_of(doc, shape)]
    sh([str(BIN / "prefect"), "--no-prompt", "deploy", *[a for n in names for a in ("--name", n)]], env)
    try:
        with worker_process(env, ["staging", "prod"], bed.run_dir / "worker-kube.log"):
            yield {"env": env, "envs": envs, "neo4j": neo4j, "redis": redis, "s3": s3,
                   "kubeconfig": str(kube.kubeconfig), "engine_url": bed.engine().base_url, "doc": doc}
    finally:
        for e in envs.values():
            e["admin"].delete_namespace()


def run(w, deployment: str, approve: str | None = None, **params) -> str:
    """``prefect deployment run <deployment> --params … --watch``; on anything but Completed, the run's logs.
    With ``approve`` (a reason), the run is expected to wait for an approval (the environment's policy), and is
    approved with ``helix-ops approve`` as an operator would."""
    def approve_it() -> None:
        sh([str(BIN / "helix-ops"), "approve", waiting_run(w, deployment), "--reason", approve, "--approver", "e2e"],
           w["env"])

    return deployment_run(w["env"], deployment, params, while_running=approve_it if approve else None)


def waiting_run(w, deployment: str, deadline_s: float = 600) -> str:
    """The id of ``deployment``'s run that waits for an answer (suspended by the change gate)."""
    import time

    import httpx

    flow, name = deployment.split("/")
    api = w["env"]["PREFECT_API_URL"]
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        r = httpx.post(f"{api}/flow_runs/filter", timeout=10, json={
            "flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}},
            "flows": {"name": {"any_": [flow]}}, "deployments": {"name": {"any_": [name]}}})
        r.raise_for_status()
        if r.json():
            return r.json()[0]["id"]
        time.sleep(2)
    raise AssertionError(f"no run of {deployment} waited for an approval within {deadline_s} s")


def apply_role(admin, namespace: str) -> None:
    """helix-ops' Role of deployments/rbac/role.yaml in the namespace (the audit checks it is there and no wider)."""
    from lightkube import codecs

    for doc in yaml.safe_load_all((REPO / "deployments" / "rbac" / "role.yaml").read_text()):
        if doc["kind"] == "Role":
            doc["metadata"]["namespace"] = namespace
            admin.client.apply(codecs.from_dict(doc), field_manager="tests")


def scheduled(doc) -> list[str]:
    from helix_ops.schedules import deployment_key, environment_of

    return [deployment_key(d) for d in doc["deployments"] if d.get("schedules") and environment_of(d) in ENVS]


def test_every_scheduled_kubernetes_deployment_runs_to_completed(kube_worker):
    w = kube_worker
    kube = {"kubeconfig": w["kubeconfig"]}
    for shape in ENVS:
        e = w["envs"][shape]
        if shape == "prod":  # prod's policy (deployments/prod.yaml): the security audit, then an approval
            run(w, "deploy-helix/prod", approve="e2e: first deploy of the prod-shaped environment",
                audit_override="e2e: the test bed's cluster has no TLS ingress or network policies enforced",
                descriptor=str(e["path"]), **kube)
        else:
            run(w, f"deploy-helix/{shape}", descriptor=str(e["path"]), **kube)
        apply_role(e["admin"], e["namespace"])
    done = set()
    # staging: the backups of its schedules
    e = w["envs"]["staging"]
    for params in scheduled_parameters("backup-helix", "staging"):
        run(w, "backup-helix/staging", descriptor=str(e["path"]), **kube, **params)
    done.add("backup-helix/staging")
    # prod, in a day's order: backups, the deep verify, the audit, retention, then the monthly rotation
    e = w["envs"]["prod"]
    for params in scheduled_parameters("backup-helix", "prod"):
        run(w, "backup-helix/prod", descriptor=str(e["path"]), **kube, **params)
    done.add("backup-helix/prod")
    run(w, "verify-helix-backup/prod", descriptor=str(e["path"]), engine_url=w["engine_url"])
    done.add("verify-helix-backup/prod")
    run(w, "audit-helix/prod", descriptor=str(e["path"]), **kube)
    done.add("audit-helix/prod")
    run(w, "prune-helix-backups/prod", descriptor=str(e["path"]))
    done.add("prune-helix-backups/prod")
    run(w, "rotate-helix-secrets/prod", descriptor=str(e["path"]), **kube, health_timeout_s=60)
    done.add("rotate-helix-secrets/prod")
    assert done == set(scheduled(w["doc"])), "a scheduled deployment of prefect.yaml is not run here"

    # what the runs left: verified backups of each component in prod's bucket, none listed without a manifest
    from drivers.storage import S3Store, s3_client

    s3 = w["s3"]
    store = S3Store(s3_client(s3.endpoint, s3.access_key, s3.secret_key), e["bucket"], f"{e['environment']}/")
    kept = store.list()
    assert {tuple(m.components) for m in kept} >= {("neo4j",), ("redis",)}
    assert any(m.verification is not None and m.verification.ok and m.verification.by.startswith(
        "helix-ops verify") for m in kept), [m.verification for m in kept]
