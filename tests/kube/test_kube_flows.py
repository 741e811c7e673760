"""deploy-helix, upgrade-helix, scale-helix and the Secret part of a rotation on a Kubernetes target, against
the test bed's real control plane (kube-apiserver, controller manager, scheduler, etcd; kwok plays the nodes).

One environment (Redis in Sentinel mode, so a service can be removed later) is deployed once per module; the
tests run in order and each leaves it converged for the next."""

from __future__ import annotations

import json
import time

import pytest

from drivers.kube import KubeForbidden, RolloutFailed, workload_progress
from flows.deploy import deploy_helix
from flows.upgrade import UpgradeRolledBack, scale_helix, upgrade_helix
from helix_ops.errors import ConfigError
from tests.kube.conftest import Admin, new_names, write_descriptor

pytestmark = pytest.mark.bed

APPS = ("dashboard", "mcp-graph", "mcp-discovery", "mcp-derivation", "mcp-cascade", "mcp-verification")
WORKLOADS = ("neo4j", "redis", "redis-sentinel", *APPS)


@pytest.fixture(scope="module")
def env(kube, prefect_harness, audit_dir, tmp_path_factory):
    from blocks.bootstrap import main as bootstrap

    environment, namespace = new_names("k")
    path = write_descriptor(tmp_path_factory.mktemp("kdesc") / f"{environment}.yaml", environment, namespace)
    assert bootstrap(["--descriptor", str(path)]) == 0
    admin = Admin(kube.kubeconfig, namespace)
    t0 = time.monotonic()
    # run_init_db=False: kwok's pods forward no Bolt here (init-helix-db through a port-forward to a real Neo4j
    # is tested in test_kube_data_flows.py); these tests are about the objects and their rollouts
    result = deploy_helix(env=environment, descriptor=str(path), kubeconfig=str(kube.kubeconfig), health_timeout_s=90,
                          run_init_db=False)
    print(f"first deploy on the local control plane: {time.monotonic() - t0:.1f}s")
    yield {"environment": environment, "namespace": namespace, "path": path, "admin": admin, "first": result,
           "audit": audit_dir / f"{environment}.jsonl"}
    admin.delete_namespace()


def deploy(env, kube, path=None, **kw):
    return deploy_helix(env=env["environment"], descriptor=str(path or env["path"]),
                        **{"health_timeout_s": 60, "kubeconfig": str(kube.kubeconfig), "run_init_db": False, **kw})


def images(admin) -> dict[str, str]:
    objs = admin.objects(("Deployment", "StatefulSet"))
    return {k.split("/")[1]: v["spec"]["template"]["spec"]["containers"][0]["image"] for k, v in objs.items()}


def rendered(path) -> set[str]:
    """The identities a descriptor renders to (pure)."""
    from helix_ops.descriptor import load_descriptor
    from helix_ops.plan import kubernetes_objects
    from helix_ops.render.kubernetes import render_kubernetes
    from helix_ops.stack import build_stack

    return {o.identity for o in kubernetes_objects(render_kubernetes(build_stack(load_descriptor(path))))}


def audit_lines(env) -> list[dict]:
    return [json.loads(line) for line in env["audit"].read_text().splitlines()]


def test_deploy_creates_every_object_and_every_workload_is_ready(env, kube):
    result, admin = env["first"], env["admin"]
    assert result["applied"] and result["unhealthy"] == []
    planned = {c["identity"] for c in result["plan"]["changes"]}
    assert {c["action"] for c in result["plan"]["changes"]} == {"create"}
    live = admin.objects()
    ns = env["namespace"]
    assert {f"{k}/{ns}/{n}" for k, n in (i.split("/") for i in live if not i.startswith("Pod/"))} >= planned - {f"Namespace/{ns}"}
    workloads = {i: o for i, o in live.items() if i.split("/")[0] in ("Deployment", "StatefulSet")}
    assert {i.split("/")[1] for i in workloads} == set(WORKLOADS)
    for identity, obj in workloads.items():
        done, failure, seen = workload_progress(obj)
        assert done and failure is None, (identity, seen)
        assert obj["metadata"]["annotations"]["helix-ops.spec-hash"]
    assert {r["service"]: r["health"] for r in result["status"]} == {w: "ready" for w in WORKLOADS}
    # every pod passed Pod Security "restricted" (the namespace enforces it) and is Ready
    pods = [o for i, o in live.items() if i.startswith("Pod/")]
    assert len(pods) == sum(o["spec"]["replicas"] for o in workloads.values())
    assert all(any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"]) for p in pods)
    assert admin.get("Namespace", ns)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # the secret's values came from the blocks; the plan shows none
    assert "neo4j/" in __import__("base64").b64decode(admin.get("Secret", "helix-secrets")["data"]["neo4j-auth"]).decode()
    assert all(d["old"] == "<redacted>" for c in result["plan"]["changes"] if c["identity"].startswith("Secret/")
               for d in c["diff"])


def test_a_second_run_is_an_all_noop_plan_and_changes_no_resource_version(env, kube):
    before = env["admin"].versions()
    result = deploy(env, kube)
    counts = result["plan"]["counts"]
    assert counts["noop"] == len(result["plan"]["changes"]) and not result["applied"]
    assert result["changed"] == [] and result["unhealthy"] == []
    assert env["admin"].versions() == before


def test_scale_adds_replicas_and_keeps_the_running_ones(env, kube):
    # dashboard runs 2: going to 3 changes only spec.replicas (1 -> 2 would also add the pod anti-affinity the
    # renderer gives replicated services, and so roll the pods once)
    admin = env["admin"]
    before = admin.pods("dashboard")
    others = {a: admin.pods(a) for a in APPS if a != "dashboard"}
    result = scale_helix(service="dashboard", replicas=3, env=env["environment"], descriptor=str(env["path"]),
                         kubeconfig=str(kube.kubeconfig), health_timeout_s=60)
    assert result["result"] == "succeeded" and result["changed"] == ["dashboard"]
    after = admin.pods("dashboard")
    assert len(before) == 2 and len(after) == 3 and set(before.items()) <= set(after.items())
    assert {a: admin.pods(a) for a in others} == others
    with pytest.raises(ConfigError, match="single writer"):
        scale_helix(service="mcp-graph", replicas=2, env=env["environment"], descriptor=str(env["path"]),
                    kubeconfig=str(kube.kubeconfig))
    assert audit_lines(env)[-1]["action"] == "scale" and audit_lines(env)[-1]["result"] == "succeeded"


def test_an_upgrade_changes_the_image_of_that_workload_only(env, kube):
    admin = env["admin"]
    others = {a: admin.pods(a) for a in APPS if a != "mcp-discovery"}
    result = upgrade_helix(env=env["environment"], descriptor=str(env["path"]), images={"mcp-discovery": "1.5.0"},
                           kubeconfig=str(kube.kubeconfig), backup_first=False, health_timeout_s=60)
    assert result["result"] == "succeeded" and result["changed"] == ["mcp-discovery"]
    assert images(admin)["mcp-discovery"].endswith(":1.5.0")
    pods = admin.client.list(admin.res("Pod"), namespace=env["namespace"], labels={"app": "mcp-discovery"})
    assert {p.spec.containers[0].image.rsplit(":", 1)[1] for p in pods if not p.metadata.deletionTimestamp} == {"1.5.0"}
    assert {a: admin.pods(a) for a in others} == others
    record = audit_lines(env)[-1]
    assert record["action"] == "upgrade" and record["result"] == "succeeded"
    assert record["after"]["mcp-discovery"].endswith(":1.5.0")


def test_an_upgrade_whose_new_pods_never_get_ready_is_rolled_back_within_its_deadline(env, kube):
    admin = env["admin"]
    before = images(admin)
    deadline = 10
    t0 = time.monotonic()
    with pytest.raises(UpgradeRolledBack) as err:
        upgrade_helix(env=env["environment"], descriptor=str(env["path"]),
                      images={"mcp-derivation": "1.5.0", "mcp-verification": "1.6.0-never-ready"},
                      kubeconfig=str(kube.kubeconfig), backup_first=False, health_timeout_s=deadline)
    elapsed = time.monotonic() - t0
    print(f"upgrade with a never-ready workload: failed and rolled back after {elapsed:.1f}s (deadline {deadline}s)")
    assert "mcp-verification" in str(err.value)
    assert isinstance(err.value.__cause__, RolloutFailed) and err.value.__cause__.rolled_back
    # both the failing workload and the one upgraded before it are back on their previous images, and ready
    assert images(admin) == before
    for name in ("mcp-derivation", "mcp-verification"):
        done, _, seen = workload_progress(admin.get("Deployment", name))
        assert done, seen
        pods = admin.client.list(admin.res("Pod"), namespace=env["namespace"], labels={"app": name})
        live = [p for p in pods if not p.metadata.deletionTimestamp]
        assert live and all("never-ready" not in p.spec.containers[0].image for p in live)
    assert elapsed < deadline + 60
    record = audit_lines(env)[-1]
    assert record["result"] == "rolled-back" and record["after"] == record["before"]


def test_a_stuck_statefulset_is_rolled_back_too(env, kube):
    admin = env["admin"]
    before = images(admin)
    with pytest.raises(UpgradeRolledBack):
        upgrade_helix(env=env["environment"], descriptor=str(env["path"]), images={"redis": "7.4-never-ready"},
                      include_data_services=True, kubeconfig=str(kube.kubeconfig), backup_first=False,
                      health_timeout_s=8)
    assert images(admin) == before
    done, _, seen = workload_progress(admin.get("StatefulSet", "redis"))
    assert done, seen


def test_rotating_a_secret_updates_it_and_rolls_its_consumers_only(env, kube):
    import base64

    from blocks.bootstrap import main as bootstrap
    from helix_ops.descriptor import load_descriptor
    from tasks.kube import KubeTarget, apply_secret_and_roll_consumers, helix_config_text

    admin = env["admin"]
    pods_before = {w: admin.pods(w) for w in WORKLOADS}
    new = "n3w-" + "x" * 40
    assert bootstrap(["--descriptor", str(env["path"]), "--overwrite"], {"HELIX_NEXTAUTH_SECRET": new}) == 0
    desc = load_descriptor(env["path"])
    target = KubeTarget.for_descriptor(desc, kubeconfig=str(kube.kubeconfig))
    report = apply_secret_and_roll_consumers(target, desc, helix_config_text(desc, env["path"]), deadline_s=60)
    assert report["secret"] == "updated" and report["rolled"] == ["dashboard"]
    assert base64.b64decode(admin.get("Secret", "helix-secrets")["data"]["nextauth-secret"]).decode() == new
    pods_after = {w: admin.pods(w) for w in WORKLOADS}
    assert set(pods_after["dashboard"].values()).isdisjoint(pods_before["dashboard"].values())
    assert len(pods_after["dashboard"]) == 2  # rolled from the descriptor's rendering: the scale above undone
    assert {w: p for w, p in pods_after.items() if w != "dashboard"} == \
        {w: p for w, p in pods_before.items() if w != "dashboard"}
    # a second call has nothing to do
    again = apply_secret_and_roll_consumers(target, desc, helix_config_text(desc, env["path"]), deadline_s=60)
    assert again["secret"] == "unchanged" and again["rolled"] == []


def _plan_artifact_lines(env) -> list[str]:
    from prefect.artifacts import Artifact

    text = str(Artifact.get(f"deploy-plan-{env['environment']}").data)
    return [line[2:] for line in text.splitlines() if line.startswith("- ")]


def apply_role(env, user: str, without: tuple[str, str] | None = None) -> str:
    """deployments/rbac/role.yaml for the test namespace, bound to ``user`` (a client-certificate identity);
    ``without`` = (resource, verb) takes one verb away. Returns the cluster-scoped objects' name."""
    import yaml
    from lightkube import codecs

    from testbed.paths import REPO

    ns = env["namespace"]
    subject = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    cluster_name = f"helix-ops-namespace-{ns}-{user}"
    docs = list(yaml.safe_load_all((REPO / "deployments" / "rbac" / "role.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"]
    for doc in docs:
        if doc["kind"] in ("Role", "RoleBinding"):
            doc["metadata"]["namespace"] = ns
            doc["metadata"]["name"] = f"helix-ops-{user}"
        else:
            doc["metadata"]["name"] = cluster_name
        if doc["kind"] == "Role" and without:
            for rule in doc["rules"]:
                if without[0] in rule["resources"]:
                    rule["verbs"] = [v for v in rule["verbs"] if v != without[1]]
        if doc["kind"] == "ClusterRole":
            doc["rules"][0]["resourceNames"] = [ns]
        if doc["kind"].endswith("Binding"):
            doc["subjects"] = subject
            doc["roleRef"]["name"] = doc["metadata"]["name"]
        env["admin"].client.apply(codecs.from_dict(doc), field_manager="tests")
    return cluster_name


def drop_cluster_role(env, name: str) -> None:
    from lightkube.resources.rbac_authorization_v1 import ClusterRole, ClusterRoleBinding

    env["admin"].client.delete(ClusterRoleBinding, name)
    env["admin"].client.delete(ClusterRole, name)


def test_the_role_in_deployments_rbac_is_enough_to_converge_the_environment(env, kube):
    ns, user = env["namespace"], f"helix-ops-{env['environment']}"
    name = apply_role(env, user)
    try:
        # the scale and the upgrade above are kept as overrides (dashboard 3 replicas, mcp-discovery 1.5.0); the
        # rotation test's direct roll from the plain descriptor put the dashboard back to 2: converging patches
        # the dashboard to the kept 3 and leaves the upgraded mcp-discovery alone
        result = deploy(env, kube, kubeconfig=str(kube.kubeconfig_for(user)))
        assert result["unhealthy"] == []
        assert {c["identity"] for c in result["plan"]["changes"] if c["action"] == "update"} == \
            {f"Deployment/{ns}/dashboard"}
        assert any(line.startswith("mcp-discovery: image ") for line in
                   _plan_artifact_lines(env)), "the kept upgrade is listed in the plan"
    finally:
        drop_cluster_role(env, name)


def test_a_neo4j_user_and_password_change_updates_both_keys_and_rolls_the_neo4j_consumers(env, kube):
    """The Kubernetes part of a Neo4j rotation step (the consumers moved to the bridge user): the Neo4j block
    gets a new user and password, one call writes both into helix-secrets and rolls exactly the Neo4j
    consumers (every app service), whose pod templates read NEO4J_USER and NEO4J_PASSWORD from the Secret."""
    import base64

    from blocks.credentials import Neo4jCredentials
    from helix_ops.descriptor import load_descriptor
    from tasks.kube import KubeTarget, apply_secret_and_roll_consumers, helix_config_text

    admin = env["admin"]
    desc = load_descriptor(env["path"])
    block = Neo4jCredentials.load(desc.credentials.neo4j)
    assert block.user == "neo4j"
    secret = admin.get("Secret", "helix-secrets")["data"]
    assert base64.b64decode(secret["neo4j-user"]).decode() == "neo4j"  # deploy wrote the block's user
    pods_before = {w: admin.pods(w) for w in WORKLOADS}
    new_password = "br1dge-" + "y" * 40
    data = {k: getattr(block, k) for k in type(block).model_fields}
    Neo4jCredentials(**{**data, "user": "helix_rotation", "password": new_password, "alternate_user": "neo4j",
                        "alternate_password": block.password}).save(desc.credentials.neo4j, overwrite=True)
    target = KubeTarget.for_descriptor(desc, kubeconfig=str(kube.kubeconfig))
    t0 = time.monotonic()
    report = apply_secret_and_roll_consumers(target, desc, helix_config_text(desc, env["path"]), deadline_s=60)
    print(f"neo4j user+password in the Secret, six consumers rolled: {time.monotonic() - t0:.1f}s")
    assert report["secret"] == "updated" and report["rolled"] == list(APPS), report
    secret = admin.get("Secret", "helix-secrets")["data"]
    assert base64.b64decode(secret["neo4j-user"]).decode() == "helix_rotation"
    assert base64.b64decode(secret["neo4j-password"]).decode() == new_password
    pods_after = {w: admin.pods(w) for w in WORKLOADS}
    for w in APPS:
        assert set(pods_after[w].values()).isdisjoint(pods_before[w].values()), w
    for w in ("neo4j", "redis", "redis-sentinel"):  # the data services read no consumer login: kept
        assert pods_after[w] == pods_before[w], w
    for w in APPS:
        env_vars = {e["name"]: e for e in admin.get("Deployment", w)["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env_vars["NEO4J_USER"] == {"name": "NEO4J_USER", "valueFrom": {"secretKeyRef": {
            "name": "helix-secrets", "key": "neo4j-user"}}}, w
        assert env_vars["NEO4J_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "neo4j-password"
    # back on the primary user (the rotation's primary-current): both keys again, the same consumers rolled
    Neo4jCredentials(**{**data, "alternate_user": None, "alternate_password": None}).save(
        desc.credentials.neo4j, overwrite=True)
    back = apply_secret_and_roll_consumers(target, desc, helix_config_text(desc, env["path"]), deadline_s=60)
    assert back["secret"] == "updated" and back["rolled"] == list(APPS), back
    assert base64.b64decode(admin.get("Secret", "helix-secrets")["data"]["neo4j-user"]).decode() == "neo4j"


def test_a_forbidden_verb_is_a_clear_error_with_a_hint(env, kube):
    user = f"no-patch-{env['environment']}"
    name = apply_role(env, user, without=("deployments", "patch"))
    try:
        with pytest.raises(KubeForbidden) as err:
            upgrade_helix(env=env["environment"], descriptor=str(env["path"]), images={"mcp-cascade": "1.5.0"},
                          kubeconfig=str(kube.kubeconfig_for(user)), backup_first=False, health_timeout_s=30)
    finally:
        drop_cluster_role(env, name)
    e = err.value
    assert (e.verb, e.resource, e.namespace) == ("patch", "deployments", env["namespace"])
    assert "deployments/rbac/role.yaml" in str(e) and "kubectl auth can-i patch deployments" in str(e)
    assert audit_lines(env)[-1]["result"] == "failed"
    # an identity with no rights at all is told which cluster-scoped read it lacks
    with pytest.raises(KubeForbidden, match=r"may not get namespaces \(cluster scope\)"):
        deploy(env, kube, kubeconfig=str(kube.kubeconfig_for("nobody-at-all")))


def test_removing_a_service_prunes_its_objects_and_nothing_else(env, kube, tmp_path):
    admin = env["admin"]
    ns = env["namespace"]
    foreign = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "someone-elses", "labels": {"app": "redis-sentinel"}},
         "data": {"a": "b"}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "other-environment", "labels": {
             "app.kubernetes.io/managed-by": "helix-ops", "app.kubernetes.io/part-of": "helix",
             "helix-ops/environment": "another", "app": "redis-sentinel"}}, "data": {"a": "b"}},
    ]
    for obj in foreign:
        admin.create(obj)
    before = set(admin.objects(("NetworkPolicy", "Secret", "ConfigMap", "Service", "StatefulSet", "Deployment",
                                "PodDisruptionBudget", "Ingress")))
    single = write_descriptor(tmp_path / f"{env['environment']}.yaml", env["environment"], ns, sentinel=False)
    result = deploy(env, kube, path=single)
    deleted = {c["identity"] for c in result["plan"]["changes"] if c["action"] == "delete"}
    assert deleted == rendered(env["path"]) - rendered(single)
    assert {f"StatefulSet/{ns}/redis-sentinel", f"Service/{ns}/redis-sentinel-headless",
            f"NetworkPolicy/{ns}/allow-redis-sentinel"} <= deleted
    assert result["unhealthy"] == []
    after = set(admin.objects(("NetworkPolicy", "Secret", "ConfigMap", "Service", "StatefulSet", "Deployment",
                               "PodDisruptionBudget", "Ingress")))
    gone = {i for i in before - after}
    assert gone == {"/".join((i.split("/")[0], i.split("/")[2])) for i in deleted}
    assert {"ConfigMap/someone-elses", "ConfigMap/other-environment"} <= after
