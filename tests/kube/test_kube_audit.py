"""audit-helix on a Kubernetes target, against the test bed's real control plane (kube-apiserver + kwok).

One environment is deployed once per module (with helix-ops' Role from deployments/rbac/role.yaml applied in
its namespace, as the set-up asks an admin to). kwok runs no container: the Bolt and RESP logins reach the
bed's real Neo4j and Redis servers (both with authentication on) through ``pods/portforward`` of the API
server (``kube.forward`` routes the simulated pods' 7687 / 6379 to them). Each test breaks one thing as an
admin would by hand, checks that the audit fails the item that names it, and repairs it for the next test."""

from __future__ import annotations

import copy
import json
import time

import pytest

from flows.audit import audit_helix
from tests.kube.conftest import Admin, new_names, write_descriptor

pytestmark = pytest.mark.bed

SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation")


@pytest.fixture(scope="module")
def env(kube, prefect_harness, audit_dir, neo4j_server, redis_server, tmp_path_factory):
    import yaml
    from lightkube import codecs

    from blocks.bootstrap import main as bootstrap
    from flows.deploy import deploy_helix
    from testbed.paths import REPO

    environment, namespace = new_names("a")
    path = write_descriptor(tmp_path_factory.mktemp("adesc") / f"{environment}.yaml", environment, namespace)
    assert bootstrap(["--descriptor", str(path)]) == 0
    admin = Admin(kube.kubeconfig, namespace)
    t0 = time.monotonic()
    # no init-db: the port-forwards below reach the bed's servers, whose passwords are not the blocks'
    result = deploy_helix(env=environment, descriptor=str(path), kubeconfig=str(kube.kubeconfig), health_timeout_s=90,
                          run_init_db=False)
    assert result["unhealthy"] == []
    print(f"deploy for the audit: {time.monotonic() - t0:.1f}s")
    for doc in yaml.safe_load_all((REPO / "deployments" / "rbac" / "role.yaml").read_text()):
        if doc["kind"] == "Role":
            doc["metadata"]["namespace"] = namespace
            admin.client.apply(codecs.from_dict(doc), field_manager="tests")
    kube.forward(namespace, "neo4j", 7687, ("127.0.0.1", neo4j_server.bolt_port))
    kube.forward(namespace, "redis", 6379, ("127.0.0.1", redis_server.port))
    yield {"environment": environment, "namespace": namespace, "path": path, "admin": admin}
    admin.delete_namespace()


def audit(env, kube, kubeconfig=None) -> dict:
    t0 = time.monotonic()
    result = audit_helix(env=env["environment"], descriptor=str(env["path"]),
                         kubeconfig=str(kubeconfig or kube.kubeconfig))
    print(f"audit-helix on the cluster: {time.monotonic() - t0:.1f}s")
    return result


def findings(result) -> dict[str, dict]:
    return {f["id"]: f for f in result["findings"]}


def failing(result) -> dict[str, str]:
    """Required items that block, with what was seen."""
    return {f["id"]: f["detail"] for f in result["findings"] if f["required"] and f["status"] in ("fail", "skipped")}


def clean(obj: dict) -> dict:
    out = copy.deepcopy(obj)
    out.pop("status", None)
    for key in SERVER_FIELDS:
        out["metadata"].pop(key, None)
    return out


def patch(env, kind: str, name: str, body: dict, strategic: bool = True) -> None:
    from lightkube.types import PatchType

    admin = env["admin"]
    admin.client.patch(admin.res(kind), name, body, namespace=env["namespace"],
                       patch_type=PatchType.STRATEGIC if strategic else PatchType.MERGE)


def test_the_deployed_environment_passes_with_live_checks(env, kube):
    result = audit(env, kube)
    by = findings(result)
    assert result["passed"], failing(result)
    statuses = {i: f["status"] for i, f in by.items()}
    # every item of the Kubernetes checklist, checked live; tags (not digests) are a warning only
    assert statuses == {**{i: "pass" for i in statuses}, "images-pinned": "warn"}
    assert {"configmap-secrets", "rbac-scope"} <= set(statuses)
    assert "refused" in by["neo4j-auth"]["detail"] and "NOAUTH" in by["redis-auth"]["detail"]
    assert "live as rendered" in by["network-policies"]["detail"]


def test_a_deleted_network_policy_fails_network_policies(env, kube):
    from lightkube import codecs

    admin = env["admin"]
    saved = admin.get("NetworkPolicy", "allow-neo4j")
    admin.client.delete(admin.res("NetworkPolicy"), "allow-neo4j", namespace=env["namespace"])
    try:
        result = audit(env, kube)
    finally:
        admin.client.create(codecs.from_dict(clean(saved)), namespace=env["namespace"])
    assert list(failing(result)) == ["network-policies"]
    assert "NetworkPolicies missing in the namespace: allow-neo4j" in failing(result)["network-policies"]


def test_a_node_port_exposing_bolt_fails_network_policies(env, kube):
    patch(env, "Service", "neo4j", {"spec": {"type": "NodePort"}}, strategic=False)
    try:
        node_port = next(p["nodePort"] for p in env["admin"].get("Service", "neo4j")["spec"]["ports"]
                         if p["port"] == 7687)
        result = audit(env, kube)
    finally:
        patch(env, "Service", "neo4j", {"spec": {"type": "ClusterIP"}}, strategic=False)
    assert list(failing(result)) == ["network-policies"]
    assert f"neo4j NodePort 7687->nodePort {node_port}" in failing(result)["network-policies"]


def test_a_config_map_holding_a_secret_value_fails_configmap_secrets_without_showing_it(env, kube):
    from blocks.credentials import RedisCredentials
    from helix_ops.descriptor import load_descriptor

    admin = env["admin"]
    password = RedisCredentials.load(load_descriptor(env["path"]).credentials.redis).password.get_secret_value()
    admin.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "handmade-redis"},
                  "data": {"redis.conf": f"port 6379\nrequirepass {password}\n", "notes": "nothing"}})
    try:
        result = audit(env, kube)
    finally:
        admin.client.delete(admin.res("ConfigMap"), "handmade-redis", namespace=env["namespace"])
    assert list(failing(result)) == ["configmap-secrets"]
    assert "handmade-redis key redis.conf" in failing(result)["configmap-secrets"]
    assert "notes" not in failing(result)["configmap-secrets"]
    assert password not in json.dumps(result)


def test_an_image_on_latest_fails_images_pinned(env, kube):
    admin = env["admin"]
    before = admin.get("Deployment", "mcp-graph")["spec"]["template"]["spec"]["containers"][0]["image"]
    latest = before.rsplit(":", 1)[0] + ":latest"
    patch(env, "Deployment", "mcp-graph",
          {"spec": {"template": {"spec": {"containers": [{"name": "mcp-graph", "image": latest}]}}}})
    try:
        result = audit(env, kube)
    finally:
        patch(env, "Deployment", "mcp-graph",
              {"spec": {"template": {"spec": {"containers": [{"name": "mcp-graph", "image": before}]}}}})
    assert list(failing(result)) == ["images-pinned"]
    assert f"mcp-graph: {latest}" in failing(result)["images-pinned"]


def test_a_container_allowed_to_escalate_fails_non_root(env, kube):
    body = lambda value: {"spec": {"template": {"spec": {"containers": [  # noqa: E731
        {"name": "dashboard", "securityContext": {"allowPrivilegeEscalation": value}}]}}}}
    patch(env, "Deployment", "dashboard", body(True))
    try:
        result = audit(env, kube)
    finally:
        patch(env, "Deployment", "dashboard", body(False))
    assert list(failing(result)) == ["non-root"]
    assert "Deployment/dashboard:dashboard: allowPrivilegeEscalation is not false" in failing(result)["non-root"]


def test_a_role_with_a_wildcard_fails_rbac_scope(env, kube):
    admin = env["admin"]
    res = __import__("lightkube.resources.rbac_authorization_v1", fromlist=["Role"]).Role
    saved = admin.client.get(res, "helix-ops", namespace=env["namespace"]).to_dict()
    wide = clean(saved)
    wide["rules"] = [*saved["rules"], {"apiGroups": [""], "resources": ["*"], "verbs": ["get", "list"]},
                     {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"]}]
    from lightkube import codecs

    admin.client.replace(codecs.from_dict({**wide, "metadata": {**wide["metadata"],
                                                               "resourceVersion": saved["metadata"]["resourceVersion"]}}),
                         namespace=env["namespace"])
    try:
        result = audit(env, kube)
    finally:
        now = admin.client.get(res, "helix-ops", namespace=env["namespace"]).to_dict()
        admin.client.replace(codecs.from_dict({**clean(saved), "metadata": {
            **clean(saved)["metadata"], "resourceVersion": now["metadata"]["resourceVersion"]}}),
            namespace=env["namespace"])
    assert list(failing(result)) == ["rbac-scope"]
    detail = failing(result)["rbac-scope"]
    assert "wildcard grants: get core/*, list core/*" in detail
    assert "beyond deployments/rbac/role.yaml: create rbac.authorization.k8s.io/rolebindings" in detail


def test_the_prod_gate_refuses_a_broken_environment(env, kube):
    from prefect import flow

    from drivers.target import Connection
    from tasks.target import target_for
    from helix_ops.audit import AuditFailed
    from helix_ops.descriptor import load_descriptor
    from tasks.audit import require_audit_pass

    desc = load_descriptor(env["path"])
    target = target_for(desc, Connection(kubeconfig=str(kube.kubeconfig)))
    assert target.kind == "kubernetes"

    @flow
    def gate(reason: str | None):
        return require_audit_pass(desc, target, override_reason=reason)

    patch(env, "Service", "redis-sentinel", {"spec": {"type": "LoadBalancer"}}, strategic=False)
    try:
        with pytest.raises(AuditFailed, match=r"network-policies: .*redis-sentinel LoadBalancer 26379"):
            gate(None)
        assert not gate("incident 7: tracked in SEC-9").passed
    finally:
        patch(env, "Service", "redis-sentinel", {"spec": {"type": "ClusterIP"}}, strategic=False)
    assert gate(None).passed


def test_as_helix_ops_own_identity_every_live_fact_is_readable_and_the_audit_passes(env, kube):
    """Run as an identity bound to the Role of deployments/rbac/role.yaml (what audit-helix/prod runs as):
    every live read and the port-forwards work, and the Role reads itself (``get roles``, resourceNames
    helix-ops), so nothing blocks."""
    import yaml
    from lightkube import codecs

    from testbed.paths import REPO

    user = f"helix-ops-audit-{env['environment']}"
    doc = next(d for d in yaml.safe_load_all((REPO / "deployments" / "rbac" / "role.yaml").read_text())
               if d["kind"] == "RoleBinding")
    doc["metadata"].update(name=f"helix-ops-{user}", namespace=env["namespace"])
    doc["subjects"] = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    env["admin"].client.apply(codecs.from_dict(doc), field_manager="tests")
    result = audit(env, kube, kubeconfig=kube.kubeconfig_for(user))
    blocking = failing(result)
    statuses = {f["id"]: f["status"] for f in result["findings"]}
    assert blocking == {}, blocking
    assert statuses["rbac-scope"] == "pass"
    assert statuses["neo4j-auth"] == statuses["redis-auth"] == "pass"
