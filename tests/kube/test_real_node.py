"""deploy-helix and upgrade-helix on the test bed's one real Kubernetes node (``kube_node``: a kubelet with
containerd, kube-proxy, CoreDNS): the pods run the local images, Services route real requests, readiness probes
gate the rollouts, init-helix-db reaches Neo4j through a real ``pods/portforward``.

Traffic goes to 127.0.0.1 only: a NodePort Service of the test's own in front of the dashboard pods."""

from __future__ import annotations

import time

import httpx
import pytest

from bench.mixed_load import MixedLoad
from flows.deploy import deploy_helix
from flows.upgrade import UpgradeRolledBack, upgrade_helix
from tests.kube.conftest import Admin, new_names, write_node_descriptor

pytestmark = [pytest.mark.bed, pytest.mark.real_node]

APPS = ("dashboard", "mcp-graph", "mcp-discovery", "mcp-derivation", "mcp-cascade", "mcp-verification")
STATELESS = ("dashboard", "mcp-discovery", "mcp-derivation", "mcp-cascade", "mcp-verification")


@pytest.fixture(scope="module")
def env(bed, kube_node, prefect_harness, audit_dir, tmp_path_factory):
    from pydantic import SecretStr

    from blocks.bootstrap import main as bootstrap
    from blocks.storage import save_s3_storage

    cluster = kube_node.cluster
    environment, namespace = new_names("n")
    workdir = tmp_path_factory.mktemp("node")
    s3 = bed.s3()
    bucket = f"hx-{environment}"
    s3.client().create_bucket(Bucket=bucket)
    path = write_node_descriptor(workdir / f"{environment}.yaml", environment, namespace, s3.endpoint, bucket)
    save_s3_storage(f"{environment}-storage", bucket, prefix=f"{environment}/", access_key_id=s3.access_key,
                    secret_access_key=SecretStr(s3.secret_key), endpoint_url=s3.endpoint, overwrite=True)
    assert bootstrap(["--descriptor", str(path)]) == 0
    admin = Admin(cluster.kubeconfig, namespace)
    common = {"env": environment, "descriptor": str(path), "kubeconfig": str(cluster.kubeconfig)}
    t0 = time.monotonic()
    result = deploy_helix(health_timeout_s=300, **common)
    deployed_s = time.monotonic() - t0
    print(f"first deploy on the real node: {deployed_s:.1f}s (node up in {kube_node.started_s:.1f}s)")
    # the test's own door to the dashboard: a NodePort Service on 127.0.0.1 (kube-proxy, localhostNodePorts)
    admin.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dashboard-door"},
                  "spec": {"type": "NodePort", "selector": {"app": "dashboard"},
                           "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]}})
    node_port = admin.get("Service", "dashboard-door")["spec"]["ports"][0]["nodePort"]
    url = f"http://127.0.0.1:{node_port}/api/health"
    yield {"common": common, "admin": admin, "first": result, "url": url, "workdir": workdir, "path": path,
           "namespace": namespace, "deployed_s": deployed_s, "s3": s3, "bucket": bucket,
           "environment": environment}
    admin.delete_namespace()


def pods_of(admin, app: str) -> list[dict]:
    return [p for p in admin.objects(("Pod",)).values()
            if p["metadata"]["labels"].get("app") == app and not p["metadata"].get("deletionTimestamp")]


def images_now(admin) -> dict[str, str]:
    objs = admin.objects(("Deployment", "StatefulSet"))
    return {k.split("/")[1]: v["spec"]["template"]["spec"]["containers"][0]["image"] for k, v in objs.items()}


def served_versions(url: str, n: int = 20) -> set[str]:
    out = set()
    with httpx.Client(timeout=5, headers={"Connection": "close"}) as client:
        for _ in range(n):
            r = client.get(url)
            assert r.status_code == 200, r.text
            out.add(r.json().get("version"))
    return out


def wait_serving(url: str, deadline_s: float = 60) -> None:
    end = time.monotonic() + deadline_s
    while True:
        try:
            if httpx.get(url, timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < end, f"{url} did not answer 200 within {deadline_s}s"
        time.sleep(0.5)


def test_every_pod_runs_for_real_and_the_service_routes(env, kube_node):
    assert env["first"]["applied"] and env["first"]["unhealthy"] == [], env["first"]
    for app in (*APPS, "neo4j", "redis"):
        pods = pods_of(env["admin"], app)
        assert pods, app
        for pod in pods:
            status = pod["status"]
            assert status["hostIP"] == kube_node.ip and status["podIP"].startswith("10.227.0."), status
            assert all(c["ready"] and "running" in c["state"] for c in status["containerStatuses"]), status
    wait_serving(env["url"])
    # the probe reports what it reaches: Neo4j and Redis through their Services' DNS names (CoreDNS, kube-proxy)
    body = httpx.get(env["url"], timeout=5).json()
    assert body.get("version") == "v1", body


def test_a_rolling_upgrade_under_keepalive_and_new_connection_load_fails_no_request(env):
    load = MixedLoad(env["url"], env["workdir"], keepalive_clients=1, new_clients=1, rps=10)
    try:
        time.sleep(2)
        t0 = time.monotonic()
        result = upgrade_helix(images={s: "v2" for s in APPS}, backup_first=False, health_timeout_s=240,
                               **env["common"])
        rolled_s = time.monotonic() - t0
    finally:
        traffic = load.stop()
    print(f"rolling upgrade of {len(APPS)} services on the real node: {rolled_s:.1f}s; traffic {traffic}")
    assert result["result"] == "succeeded" and sorted(result["changed"]) == sorted(APPS), result
    for kind in ("keepalive", "new"):
        assert traffic[kind]["sent"] > 50 and traffic[kind]["failed"] == 0, (kind, traffic[kind])
    now = images_now(env["admin"])
    assert all(now[s] == "localhost/helix-probe:v2" for s in APPS), now
    assert served_versions(env["url"]) == {"v2"}


def test_a_never_ready_image_is_rolled_back_with_no_failed_request(env):
    before = images_now(env["admin"])
    load = MixedLoad(env["url"], env["workdir"], keepalive_clients=1, new_clients=1, rps=10)
    try:
        time.sleep(2)
        with pytest.raises(UpgradeRolledBack):
            upgrade_helix(images={"dashboard": "broken"}, backup_first=False, health_timeout_s=40, **env["common"])
    finally:
        traffic = load.stop()
    for kind in ("keepalive", "new"):
        assert traffic[kind]["sent"] > 20 and traffic[kind]["failed"] == 0, (kind, traffic[kind])
    assert images_now(env["admin"]) == before
    assert served_versions(env["url"]) == {"v2"}
    assert all(c["ready"] for p in pods_of(env["admin"], "dashboard") for c in p["status"]["containerStatuses"])
