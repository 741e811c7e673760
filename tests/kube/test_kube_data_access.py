"""Data access of a ``target: kubernetes`` environment from the flow's own process, against the real test bed:
Bolt and RESP through the API server's ``pods/portforward`` (kwok is the nodes' kubelet and forwards the
simulated pods' ports to the bed's real Neo4j and Redis), scaling through the scale subresource, and
``pods/exec`` (kwok runs the command on this machine). RBAC refusals come from the real API server."""

from __future__ import annotations

import secrets
import socket

import pytest
import yaml

from drivers.kube import KubeDriver, KubeForbidden
from helix_ops.errors import DriverError, WaitTimeout
from testbed.paths import REPO
from tests.kube.conftest import Admin

PROJECT = "helix"


def workload(kind: str, name: str, environment: str, replicas: int) -> dict:
    """A tiny Deployment/StatefulSet labelled the way the rendering labels a service's pods."""
    labels = {"app.kubernetes.io/name": name, "helix-ops/environment": environment, "app": name}
    spec = {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": labels},
                         "spec": {"automountServiceAccountToken": False,
                                  "containers": [{"name": name, "image": f"helix/{name}:1"}]}}}
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "labels": labels}, "spec": spec}


@pytest.fixture(scope="module")
def env(kube, neo4j_server, redis_server):
    """A namespace with neo4j and redis StatefulSets and an mcp-graph Deployment (2 replicas) of one
    environment; their pods' 7687/6379 go to the bed's Neo4j/Redis."""
    environment = f"da{secrets.token_hex(3)}"
    ns = kube.new_namespace("da")
    admin = Admin(kube.kubeconfig, ns)
    admin.create(workload("StatefulSet", "neo4j", environment, 1))
    admin.create(workload("StatefulSet", "redis", environment, 1))
    admin.create(workload("Deployment", "mcp-graph", environment, 2))
    kube.forward(ns, "neo4j", 7687, ("127.0.0.1", neo4j_server.bolt_port))
    kube.forward(ns, "redis", 6379, ("127.0.0.1", redis_server.port))
    driver = KubeDriver.connect(PROJECT, environment, ns, kubeconfig=str(kube.kubeconfig))
    yield {"namespace": ns, "environment": environment, "driver": driver, "admin": admin}
    driver.close()
    admin.delete_namespace()


def test_bolt_through_a_port_forward_reaches_neo4j(env, neo4j_server):
    from neo4j import GraphDatabase

    with env["driver"].endpoint("neo4j", 7687, deadline_s=60) as (host, port):
        assert host == "127.0.0.1" and port != neo4j_server.bolt_port
        with GraphDatabase.driver(f"bolt://{host}:{port}", auth=(neo4j_server.user, neo4j_server.password)) as db:
            records, _, _ = db.execute_query("RETURN 1 AS one")
            assert records[0]["one"] == 1
            records, _, _ = db.execute_query("CALL dbms.components() YIELD name RETURN name")
            assert records[0]["name"].startswith("Neo4j")
    with pytest.raises(OSError):  # the listener is gone with the context
        socket.create_connection((host, port), timeout=2).close()


def test_resp_through_a_port_forward_reaches_redis_with_a_config_dict(kube, env, redis_server):
    """The driver made from a kubeconfig dict (what a KubernetesClusterConfig block holds) forwards too."""
    import redis

    config = yaml.safe_load(kube.kubeconfig.read_text())
    driver = KubeDriver.connect(PROJECT, env["environment"], env["namespace"], config_dict=config)
    key, value = f"helix-ops-test:{secrets.token_hex(4)}", secrets.token_hex(8)
    try:
        with driver.endpoint("redis", 6379, deadline_s=60) as (host, port):
            client = redis.Redis(host=host, port=port, password=redis_server.password, socket_timeout=10)
            assert client.ping() is True
            assert client.set(key, value) is True
            assert client.get(key) == value.encode()
            client.close()
        direct = redis_server.client()
        assert direct.get(key) == value.encode()  # the bed's real Redis holds it
        direct.delete(key)
        direct.close()
    finally:
        driver.close()


def test_scale_to_zero_and_back(env):
    driver, admin = env["driver"], env["admin"]
    assert driver.replicas("mcp-graph") == 2 and driver.replicas("no-such-workload") is None
    assert driver.scale("mcp-graph", 0, deadline_s=60) == 2
    assert driver.replicas("mcp-graph") == 0
    left = list(admin.client.list(admin.res("Pod"), namespace=env["namespace"], labels={"app": "mcp-graph"}))
    assert left == []  # not even terminating ones
    assert driver.scale("mcp-graph", 2, deadline_s=60) == 0
    assert admin.get("Deployment", "mcp-graph")["status"]["readyReplicas"] == 2
    assert len(admin.pods("mcp-graph")) == 2


def test_no_ready_pod_is_a_wait_timeout(env):
    with pytest.raises(WaitTimeout) as info:
        with env["driver"].endpoint("no-such-service", 7687, deadline_s=1):
            pass
    assert "no-such-service" in str(info.value) and env["namespace"] in str(info.value)


def test_a_role_without_portforward_create_is_forbidden(kube, env):
    user = f"no-pf-{secrets.token_hex(3)}"
    kube.grant(user, env["namespace"], [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["get", "list"]}])
    driver = KubeDriver.connect(PROJECT, env["environment"], env["namespace"],
                                kubeconfig=str(kube.kubeconfig_for(user)))
    try:
        with pytest.raises(KubeForbidden) as info:
            with driver.endpoint("redis", 6379, deadline_s=30):
                pass
    finally:
        driver.close()
    e = info.value
    assert e.verb == "create" and e.resource == "pods/portforward" and e.namespace == env["namespace"]
    assert "pods/portforward" in str(e) and "deployments/rbac/role.yaml" in str(e)


def test_the_role_file_grants_what_data_access_needs(kube, env, redis_server):
    """deployments/rbac/role.yaml's namespaced rules suffice for endpoint, scale and exec."""
    role = next(d for d in yaml.safe_load_all((REPO / "deployments" / "rbac" / "role.yaml").read_text())
                if d["kind"] == "Role")
    user = f"helix-ops-{secrets.token_hex(3)}"
    kube.grant(user, env["namespace"], role["rules"])
    kube.allow_exec(env["namespace"])
    driver = KubeDriver.connect(PROJECT, env["environment"], env["namespace"],
                                kubeconfig=str(kube.kubeconfig_for(user)))
    try:
        with driver.endpoint("redis", 6379, deadline_s=30) as (host, port):
            import redis

            client = redis.Redis(host=host, port=port, password=redis_server.password, socket_timeout=10)
            assert client.ping() is True
            client.close()
        assert driver.scale("redis", 1, deadline_s=30) == 1
        assert driver.exec("redis", ["true"], timeout_s=30)[0] == 0
    finally:
        driver.close()


def test_exec_runs_the_command_and_reports_output_and_exit_code(kube, env, tmp_path):
    """On the bed kwok runs the command on this machine (a ClusterExec with a local target, in ``tmp_path``):
    what is checked is the driver's pods/exec path through the real API server, not a container."""
    kube.allow_exec(env["namespace"], tmp_path)
    driver = env["driver"]
    rc, out, err = driver.exec("mcp-graph", ["sh", "-c", "echo out; echo err >&2; pwd"], timeout_s=30)
    assert (rc, out, err) == (0, f"out\n{tmp_path}\n", "err\n")
    failed = driver.exec("mcp-graph", ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout_s=30)
    assert failed == (3, "out\n", "err\n")
    with pytest.raises(DriverError, match="no-such-command-xyz"):
        driver.exec("mcp-graph", ["no-such-command-xyz"], timeout_s=30)


def test_a_role_without_exec_create_is_forbidden(kube, env):
    user = f"no-exec-{secrets.token_hex(3)}"
    kube.grant(user, env["namespace"], [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get"]}])
    driver = KubeDriver.connect(PROJECT, env["environment"], env["namespace"],
                                kubeconfig=str(kube.kubeconfig_for(user)))
    try:
        with pytest.raises(KubeForbidden) as info:
            driver.exec("mcp-graph", ["true"], timeout_s=30)
    finally:
        driver.close()
    assert info.value.resource == "pods/exec" and "pods/exec" in str(info.value)


def test_in_cluster_the_endpoint_is_the_service_dns_name():
    """In a pod (service-account credentials) nothing is forwarded: the Service's cluster DNS name is used. No
    request is made, so no cluster is needed (the bed's cluster routes no Service, so this is all it can check)."""
    driver = KubeDriver(client=None, server="https://kubernetes.default.svc", project=PROJECT, environment="prod",
                        namespace="helix", source={"in_cluster": True})
    with driver.endpoint("neo4j", 7687) as where:
        assert where == ("neo4j.helix.svc", 7687)
