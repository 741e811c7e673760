"""deploy-helix and upgrade-helix on the test bed's one real Kubernetes node (``kube_node``: a kubelet with
containerd, kube-proxy, CoreDNS): the pods run the local images, Services route real requests, readiness probes
gate the rollouts, init-helix-db reaches Neo4j through a real ``pods/portforward``. The rolling upgrade under load,
the backup and restore, the rotation and the passing audit run as an operator starts them: ``prefect deployment run
<flow>/staging`` with the node's descriptor and kubeconfig as parameters, on the bed's Prefect server, picked up by
a process worker on staging's queue. The first deploy, the rolled-back upgrade and the failing audit are called in
this process (against the same server), so the test can read what they return or raise.

Traffic goes only to this machine: NodePort Services on the node's address (the bed's bridge), in front of the
dashboard's pods and of an nginx pod (the bed's nginx image) that sends every request to the dashboard's Service,
as an ingress controller would."""

from __future__ import annotations

import inspect
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from lightkube.types import PatchType

from bench.mixed_load import MixedLoad
from flows.deploy import deploy_helix
from flows.upgrade import UpgradeRolledBack, upgrade_helix
from helix_ops.wait import wait_until
from testbed.kube_node import count_untranslated, forget_untranslated
from tests.kube.conftest import Admin, new_names, write_node_descriptor
from tests.kube.timeline import Timeline
from tests.prefect_worker import client_env, deployment_run, sh, worker_process

pytestmark = [pytest.mark.bed, pytest.mark.real_node]

BIN = Path(sys.executable).parent
APPS = ("dashboard", "mcp-graph", "mcp-discovery", "mcp-derivation", "mcp-cascade", "mcp-verification")
NODE_DEPLOYMENTS = ("upgrade-helix", "backup-helix", "restore-helix", "rotate-helix-secrets", "audit-helix")
STATELESS = ("dashboard", "mcp-discovery", "mcp-derivation", "mcp-cascade", "mcp-verification")


@pytest.fixture(scope="module")
def node_api(prefect_server):
    """The node's flows, called here and run by the worker alike, use the bed's Prefect server (one set of blocks,
    overrides and leases, as an operator has), not Prefect's test harness."""
    import prefect.context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.utilities.asyncutils import run_coro_as_sync

    # as prefect_test_harness does: the settings for this thread and, for Prefect's log and event threads, the
    # process-global ones; the logs and events are sent before leaving (else Prefect starts a temporary server
    # at exit to send them)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}), \
            prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()):
        yield client_env(prefect_server)

        async def drain() -> None:
            for result in (APILogWorker.instance().drain(), EventsWorker.drain_all()):
                if inspect.isawaitable(result):
                    await result

        run_coro_as_sync(drain())


@pytest.fixture(scope="module")
def env(bed, kube_node, node_api, audit_dir, tmp_path_factory):
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
    # the load's door to the dashboard pods: a NodePort Service on the node's address (kube-proxy)
    admin.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dashboard-door"},
                  "spec": {"type": "NodePort", "selector": {"app": "dashboard"},
                           "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]}})
    node_port = admin.get("Service", "dashboard-door")["spec"]["ports"][0]["nodePort"]
    url = f"http://{kube_node.ip}:{node_port}/api/health"
    # the door stands where the descriptor's ingress controller would (kubernetes.ingress_namespace): the only
    # namespace the dashboard's NetworkPolicy lets in (kube-router enforces it on the node)
    door = Admin(cluster.kubeconfig, f"{namespace}-ingress")
    door.create_namespace()
    nginx_url = f"http://{kube_node.ip}:{nginx_door(door, namespace)}/api/health"
    yield {"common": common, "admin": admin, "first": result, "url": url, "nginx_url": nginx_url, "workdir": workdir,
           "path": path,
           "namespace": namespace, "deployed_s": deployed_s, "s3": s3, "bucket": bucket,
           "environment": environment}
    door.delete_namespace()
    admin.delete_namespace()


@pytest.fixture(scope="module")
def node_worker(env, node_api, bed):
    """staging's deployments of prefect.yaml that these tests start (upgrade, backup, restore, rotation, audit)
    registered on the bed's Prefect server and a process worker on staging's queue, as an operator has them;
    yields the environment of a Prefect client."""
    from helix_ops.schedules import deployments_of
    from testbed.paths import REPO

    sh([str(BIN / "prefect"), "work-pool", "create", "helix-ops", "--type", "process", "--overwrite"], node_api)
    names = [n for n in deployments_of(yaml.safe_load((REPO / "prefect.yaml").read_text()), "staging")
             if n.split("/")[0] in NODE_DEPLOYMENTS]
    sh([str(BIN / "prefect"), "--no-prompt", "deploy", *[a for n in names for a in ("--name", n)]], node_api)
    with worker_process(node_api, ["staging"], bed.run_dir / "worker-node.log"):
        yield node_api


DOOR_CONF = """server {{
  listen 8080;
  location = /healthz {{ return 200 "ok\\n"; }}
  location / {{
    proxy_pass http://dashboard.{namespace}.svc.cluster.local:80;
    proxy_connect_timeout 3s;
  }}
}}
"""
"""The door's nginx: every request to the dashboard's own Service (its ClusterIP, by CoreDNS's name), as an ingress
controller in front of it would send it (the rendering's Ingress needs a controller the bed does not have)."""


def nginx_door(admin, namespace: str) -> int:
    """The test's door to the dashboard: the bed's nginx image in a pod (Pod Security ``restricted``), reached
    through a NodePort Service (kube-proxy); returns the node port."""
    from testbed.images import TAGS

    labels = {"app": "door"}
    admin.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "door"},
                  "data": {"helix.conf": DOOR_CONF.format(namespace=namespace)}})
    restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    admin.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "door", "labels": labels},
                  "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                      "metadata": {"labels": labels},
                      "spec": {"automountServiceAccountToken": False,  # audit-helix checks every live pod
                               "securityContext": {"runAsNonRoot": True, "runAsUser": 101, "runAsGroup": 101,
                                                   "seccompProfile": {"type": "RuntimeDefault"}},
                               "containers": [{"name": "nginx", "image": TAGS["nginx"],
                                               "imagePullPolicy": "IfNotPresent", "securityContext": restricted,
                                               "ports": [{"name": "http", "containerPort": 8080}],
                                               # patient: a probe timing out under load would take the
                                               # door's one endpoint away (a refused connection)
                                               "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                                                  "periodSeconds": 2, "timeoutSeconds": 5,
                                                                  "failureThreshold": 5},
                                               "resources": {"requests": {"cpu": "20m", "memory": "32Mi"},
                                                             "limits": {"memory": "64Mi"}},
                                               "volumeMounts": [{"name": "conf", "mountPath": "/etc/nginx/conf.d"}]}],
                               "volumes": [{"name": "conf", "configMap": {"name": "door"}}]}}}})
    admin.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "door"},
                  "spec": {"type": "NodePort", "selector": labels,
                           "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]}})
    return admin.get("Service", "door")["spec"]["ports"][0]["nodePort"]


def pods_of(admin, app: str) -> list[dict]:
    return [p for p in admin.objects(("Pod",)).values()
            if p["metadata"]["labels"].get("app") == app and not p["metadata"].get("deletionTimestamp")]


def images_now(admin) -> dict[str, str]:
    objs = admin.objects(("Deployment", "StatefulSet"))
    return {k.split("/")[1]: v["spec"]["template"]["spec"]["containers"][0]["image"] for k, v in objs.items()}


def on_the_node(env) -> dict[str, str]:
    """A staging deployment's parameters that point its run at the node's environment: its descriptor file and the
    cluster's kubeconfig (what an operator passes to ``prefect deployment run … --params``)."""
    return {"descriptor": str(env["path"]), "kubeconfig": env["common"]["kubeconfig"]}


def served_versions(url: str, n: int = 20) -> set[str]:
    out = set()
    with httpx.Client(timeout=5, headers={"Connection": "close"}) as client:
        for _ in range(n):
            r = client.get(url)
            assert r.status_code == 200, r.text
            out.add(r.json().get("version"))
    return out


def wait_serving(url: str, deadline_s: float = 60) -> None:
    wait_until(f"{url} answering 200", lambda: httpx.get(url, timeout=3).status_code == 200, deadline_s,
               interval_s=0.5)


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
    # and through the nginx pod, which sends to the dashboard's own Service (ClusterIP, by its CoreDNS name)
    wait_serving(env["nginx_url"], deadline_s=120)
    r = httpx.get(env["nginx_url"], timeout=5)
    assert r.json().get("version") == "v1" and r.headers.get("server", "").startswith("nginx"), (r.headers, r.text)


def test_the_dashboards_network_policy_lets_in_the_ingress_namespace_only(env, kube_node):
    """The rendering's NetworkPolicies hold on the node (kube-router): the same nginx door in another namespace
    reaches the dashboard's Service, but every connection to a dashboard pod is refused (nginx answers 502 or
    504), while the door in the descriptor's ingress namespace is served."""
    stray = Admin(kube_node.cluster.kubeconfig, f"{env['namespace']}-stray")
    stray.create_namespace()
    try:
        port = nginx_door(stray, env["namespace"])
        wait_serving(f"http://{kube_node.ip}:{port}/healthz", deadline_s=120)  # the stray door itself is up
        refused = [httpx.get(f"http://{kube_node.ip}:{port}/api/health", timeout=10).status_code for _ in range(6)]
        served = [httpx.get(env["nginx_url"], timeout=10).status_code for _ in range(6)]
    finally:
        stray.delete_namespace()
    assert set(refused) <= {502, 504}, refused
    assert served == [200] * 6, served


def test_a_rolling_upgrade_under_keepalive_and_new_connection_load_fails_no_request(env, kube_node, node_worker):
    """``prefect deployment run upgrade-helix/staging`` (the node's descriptor as its parameter) under a keep-alive
    and a new-connection client through a NodePort on the node's address.

    Before the load, the NodePort's untranslated conntrack entries are deleted (``forget_before_load``): the
    earlier waits for the door leave some, and a new connection reusing one of their source ports within 120 s
    is refused by the node itself (testbed.kube_node.forget_untranslated says how). Without it, this test lost 1
    or 2 of about 1,300 new connections now and then. A failure prints the namespace's EndpointSlices, pods and
    kube-proxy's syncs around it (``tests/kube/timeline.py``)."""
    forget_before_load(env["url"])
    timeline = Timeline(env["admin"], kube_node.home / "kube-proxy.log").start()
    load = MixedLoad(env["url"], env["workdir"], keepalive_clients=1, new_clients=1, rps=10)
    try:
        time.sleep(2)
        t0 = time.monotonic()
        deployment_run(node_worker, "upgrade-helix/staging", {
            **on_the_node(env), "images": {s: "v2" for s in APPS}, "backup_first": False, "health_timeout_s": 240},
            watch_timeout_s=600)
        rolled_s = time.monotonic() - t0
    finally:
        traffic = load.stop()
        timeline.stop()
    print(f"rolling upgrade of {len(APPS)} services on the real node through prefect deployment run: "
          f"{rolled_s:.1f}s; traffic {traffic}")
    assert_no_failed_request(traffic, timeline, least=50)
    now = images_now(env["admin"])
    assert all(now[s] == "localhost/helix-probe:v2" for s in APPS), now
    assert served_versions(env["url"]) == {"v2"}


def forget_before_load(url: str) -> int:
    """Delete the untranslated conntrack entries that earlier connections to ``url``'s NodePort left (see
    testbed.kube_node.forget_untranslated); returns how many, and prints it."""
    u = httpx.URL(url)
    n = forget_untranslated(u.host, u.port)
    print(f"{n} untranslated conntrack entries to {u.host}:{u.port} deleted before the load")
    return n


def connect_from(host: str, source_port: int, port: int) -> str:
    """A TCP connection from ``host:source_port`` to ``host:port``: "open" or the error's name."""
    with socket.socket() as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        c.settimeout(5)
        c.bind((host, source_port))
        try:
            c.connect((host, port))
            return "open"
        except OSError as e:
            return type(e).__name__


def test_a_connection_refused_before_kube_proxy_routes_a_node_port_poisons_its_source_port_until_forgotten(env,
                                                                                                       kube_node):
    """The cause of the rare refused connection under load, shown on purpose: a connection from the node to a
    NodePort whose Service has no endpoint is REJECTed by kube-proxy (in INPUT, after conntrack confirmed its SYN
    on the output path) and leaves an untranslated entry; once the Service routes, a new connection from that
    source port still matches the entry, skips the DNAT and is refused. ``forget_untranslated`` deletes such
    entries, and the same source port then connects."""
    admin, host = env["admin"], kube_node.ip
    admin.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "not-yet"},
                  "spec": {"type": "NodePort", "selector": {"app": "nothing-yet"},
                           "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]}})
    try:
        port = admin.get("Service", "not-yet")["spec"]["ports"][0]["nodePort"]
        sources = []
        for _ in range(2):  # two ephemeral source ports of this address, free again once read
            with socket.socket() as s:
                s.bind((host, 0))
                sources.append(s.getsockname()[1])

        def rejected_with_an_entry() -> bool:  # kube-proxy's REJECT in place: the refusal leaves an entry
            return all(connect_from(host, p, port) == "ConnectionRefusedError" for p in sources) and \
                count_untranslated(host, port) >= 2
        wait_until("kube-proxy rejecting the endpoint-less node port", rejected_with_an_entry, 60, interval_s=1)
        admin.client.patch(admin.res("Service"), "not-yet", {"spec": {"selector": {"app": "dashboard"}}},
                           patch_type=PatchType.MERGE, namespace=env["namespace"])
        wait_serving(f"http://{host}:{port}/api/health")  # from new source ports: routed
        # the first source port is poisoned: its connection matches the stale entry and is refused by the node
        assert connect_from(host, sources[0], port) == "ConnectionRefusedError"
        assert forget_untranslated(host, port) >= 1
        assert count_untranslated(host, port) == 0
        assert connect_from(host, sources[1], port) == "open"
    finally:
        admin.client.delete(admin.res("Service"), "not-yet", namespace=env["namespace"])


def assert_no_failed_request(traffic: dict, timeline: Timeline, least: int) -> None:
    """Each client sent more than ``least`` requests and none failed; a failure's message has the errors (with
    their errno) and what the namespace and kube-proxy did around them."""
    failed_at = [traffic["started_at"] + t for k in ("keepalive", "new") for t in traffic[k]["failures_at"]]
    for kind in ("keepalive", "new"):
        t = traffic[kind]
        assert t["sent"] > least and t["failed"] == 0, (
            f"{kind}: {t['failed']} of {t['sent']} failed: {t['error_samples']}\n{timeline.around(failed_at)}")


def test_a_never_ready_image_is_rolled_back_with_no_failed_request(env, kube_node):
    before = images_now(env["admin"])
    served = served_versions(env["url"])  # v2 after the upgrade test, v1 when it is deselected
    assert len(served) == 1, served
    forget_before_load(env["url"])
    timeline = Timeline(env["admin"], kube_node.home / "kube-proxy.log").start()
    load = MixedLoad(env["url"], env["workdir"], keepalive_clients=1, new_clients=1, rps=10)
    try:
        time.sleep(2)
        with pytest.raises(UpgradeRolledBack):
            upgrade_helix(images={"dashboard": "broken"}, backup_first=False, health_timeout_s=40, **env["common"])
    finally:
        traffic = load.stop()
        timeline.stop()
    assert_no_failed_request(traffic, timeline, least=20)
    assert images_now(env["admin"]) == before
    assert served_versions(env["url"]) == served
    assert all(c["ready"] for p in pods_of(env["admin"], "dashboard") for c in p["status"]["containerStatuses"])


# --- data, rotation and audit on the real pods ----------------------------------------------------------------

NODES = 400


def pod_ip(admin, app: str) -> str:
    pods = [p for p in pods_of(admin, app) if p["status"].get("podIP")]
    assert len(pods) == 1, (app, [p["metadata"]["name"] for p in pods])
    return pods[0]["status"]["podIP"]


def password(env, block: str) -> tuple[str, str]:
    """(user, password) of the environment's Neo4j or Redis block (what the pods were given)."""
    from blocks.credentials import Neo4jCredentials, RedisCredentials

    if block == "neo4j":
        b = Neo4jCredentials.load(f"{env['environment']}-neo4j")
        return b.user, b.password.get_secret_value()
    b = RedisCredentials.load(f"{env['environment']}-redis")
    return b.username, b.password.get_secret_value()


def bolt(env) -> str:
    """Neo4j's pod, straight over the node's bridge (an address of the bed's own network namespace)."""
    return f"bolt://{pod_ip(env['admin'], 'neo4j')}:7687"


def test_backup_and_restore_over_a_real_port_forward_bring_back_equal_content(env, node_worker):
    """``prefect deployment run backup-helix/staging`` then ``restore-helix/staging`` (its ``backup_id``), the
    node's descriptor as their parameter: the restored graph and dataset equal what was backed up."""
    import neo4j as neo4j_lib
    import redis as redis_lib

    from bench.graphgen import content_digest, generate
    from drivers.redis_backup import dataset_fingerprint
    from drivers.storage import S3Store, s3_client
    from tests.backup.test_backup_redis import fill

    user, pw = password(env, "neo4j")
    _, rpw = password(env, "redis")
    generate(bolt(env), user, pw, NODES, 2 * NODES)
    redis_ip = pod_ip(env["admin"], "redis")
    with redis_lib.Redis(host=redis_ip, port=6379, password=rpw) as c:
        c.flushall()
        fill(c, 700)
    graph = content_digest(bolt(env), user, pw)
    dataset = dataset_fingerprint(redis_ip, 6379, rpw)
    s3 = env["s3"]
    store = S3Store(s3_client(s3.endpoint, s3.access_key, s3.secret_key), env["bucket"], f"{env['environment']}/")
    before = {m.backup_id for m in store.list()}

    t0 = time.monotonic()
    deployment_run(node_worker, "backup-helix/staging", on_the_node(env), watch_timeout_s=600)
    print(f"backup on the real node through prefect deployment run: {time.monotonic() - t0:.1f}s")
    made = [m for m in store.list() if m.backup_id not in before]
    assert len(made) == 1, [m.backup_id for m in made]
    manifest = made[0]
    assert manifest.environment == env["environment"] and manifest.verified and manifest.neo4j.writer_paused, manifest
    assert manifest.neo4j.nodes >= NODES and manifest.redis.keys == 701, (manifest.neo4j, manifest.redis)
    assert env["admin"].get("Deployment", "mcp-graph")["spec"]["replicas"] == 1  # the writer is back

    with neo4j_lib.GraphDatabase.driver(bolt(env), auth=(user, pw)) as drv:
        drv.execute_query("MATCH (x:Entity) WITH x LIMIT 50 DETACH DELETE x")
        drv.execute_query("CREATE (:Entity {uid: 'after-backup'})")
    with redis_lib.Redis(host=redis_ip, port=6379, password=rpw) as c:
        c.flushall()
        c.set("after-backup", "x")
    t0 = time.monotonic()
    deployment_run(node_worker, "restore-helix/staging", {**on_the_node(env), "backup_id": manifest.backup_id},
                   watch_timeout_s=600)
    print(f"restore on the real node through prefect deployment run: {time.monotonic() - t0:.1f}s")
    # the restore kept what it replaced: a safety backup of the state before it, naming the backup restored
    safety = [m for m in store.list() if m.backup_id not in before | {manifest.backup_id}]
    assert [m.safety_for for m in safety] == [manifest.backup_id], [(m.backup_id, m.safety_for) for m in safety]
    assert content_digest(bolt(env), user, pw) == graph
    assert dataset_fingerprint(pod_ip(env["admin"], "redis"), 6379, rpw) == dataset
    wait_serving(env["url"])


def test_rotation_restarts_the_consumers_with_the_new_secret_and_they_serve(env, node_worker):
    """``prefect deployment run rotate-helix-secrets/staging`` (the node's descriptor as its parameter)."""
    import neo4j as neo4j_lib
    import redis as redis_lib

    _, old_redis = password(env, "redis")
    old_neo4j = password(env, "neo4j")
    before = {app: {p["metadata"]["uid"] for p in pods_of(env["admin"], app)} for app in APPS}
    deployment_run(node_worker, "rotate-helix-secrets/staging",
                   {**on_the_node(env), "credentials": ["redis", "neo4j"], "health_timeout_s": 240}, watch_timeout_s=900)
    _, new_redis = password(env, "redis")
    assert new_redis != old_redis and password(env, "neo4j") != old_neo4j
    redis_ip = pod_ip(env["admin"], "redis")
    with pytest.raises(redis_lib.AuthenticationError):
        redis_lib.Redis(host=redis_ip, port=6379, password=old_redis).ping()
    assert redis_lib.Redis(host=redis_ip, port=6379, password=new_redis).ping()
    user, pw = password(env, "neo4j")
    with neo4j_lib.GraphDatabase.driver(bolt(env), auth=(user, pw)) as drv:
        assert drv.execute_query("RETURN 1 AS one").records[0]["one"] == 1
    # every Redis consumer runs in a new pod (its template's secret checksum changed), Ready with the new values
    after = {app: {p["metadata"]["uid"] for p in pods_of(env["admin"], app)} for app in APPS}
    assert all(not (before[a] & after[a]) for a in APPS), (before, after)
    wait_serving(env["url"])
    body = httpx.get(env["url"], timeout=5).json()
    assert body["status"] == "ok" and all(c["ok"] for c in body["checks"].values()), body


def test_the_audit_passes_and_a_pod_started_without_the_security_context_fails_it(env, node_worker):
    """``prefect deployment run audit-helix/staging`` with ``fail_on_findings`` completes (no required item
    fails); a pod started by hand without the security context then fails ``non-root``."""
    from flows.audit import audit_helix

    def failing(result):
        return {f["id"]: f["detail"] for f in result["findings"] if f["required"] and f["status"] in ("fail", "skipped")}

    from lightkube import codecs

    from testbed.paths import REPO

    # helix-ops' Role, as the set-up asks an admin to apply it (the audit's rbac-scope item reads it)
    for doc in yaml.safe_load_all((REPO / "deployments" / "rbac" / "role.yaml").read_text()):
        if doc["kind"] == "Role":
            doc["metadata"]["namespace"] = env["namespace"]
            env["admin"].client.apply(codecs.from_dict(doc), field_manager="tests")
    deployment_run(node_worker, "audit-helix/staging", {**on_the_node(env), "fail_on_findings": True})
    common = {k: env["common"][k] for k in ("descriptor", "kubeconfig")}
    # Pod Security "restricted" refuses such a pod in the namespace; an admin who lifts it can start one
    admin = env["admin"]
    ns = admin.get("Namespace", env["namespace"])
    labels = ns["metadata"]["labels"]
    admin.client.patch(admin.res("Namespace"), env["namespace"],
                       {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}},
                       patch_type=PatchType.MERGE)
    try:
        admin.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "by-hand"},
                      "spec": {"containers": [{"name": "probe", "image": "localhost/helix-probe:v1",
                                               "imagePullPolicy": "IfNotPresent"}]}})
        result = audit_helix(env=env["environment"], **common)
    finally:
        admin.client.delete(admin.res("Pod"), "by-hand", namespace=env["namespace"], grace_period=0)
        admin.client.patch(admin.res("Namespace"), env["namespace"],
                           {"metadata": {"labels": {"pod-security.kubernetes.io/enforce":
                                                    labels["pod-security.kubernetes.io/enforce"]}}},
                           patch_type=PatchType.MERGE)
    assert not result["passed"]
    assert list(failing(result)) == ["non-root"], failing(result)
    assert "Pod/by-hand:probe: runAsNonRoot is not true" in failing(result)["non-root"]
