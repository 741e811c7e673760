"""provision-helix's Kubernetes pre-flight decisions, pure (``helix_ops.preflight``): the Role file read into
verbs, SelfSubjectAccessReview answers, the namespace, StorageClasses, node capacity; each failure names its fix."""

from __future__ import annotations

from fractions import Fraction

import pytest
import yaml

from core_helpers import DEPLOYMENTS, ROOT
from helix_ops import preflight
from helix_ops.descriptor import load_descriptor
from helix_ops.preflight import AccessNeed, NodeFact, PodRequest, StorageClassFact
from helix_ops.render.kubernetes import render_kubernetes
from helix_ops.stack import build_stack

GI = 1 << 30

ROLE_DOCS = list(yaml.safe_load_all("""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: helix-ops, namespace: helix}
rules:
  - apiGroups: [""]
    resources: [secrets]
    verbs: [get, create]
  - apiGroups: [""]
    resources: [pods/portforward]
    verbs: [create]
  - apiGroups: [apps]
    resources: [deployments/scale]
    verbs: [patch]
---
kind: RoleBinding
metadata: {name: helix-ops, namespace: helix}
roleRef: {kind: Role, name: helix-ops}
subjects: [{kind: ServiceAccount, name: helix-ops, namespace: helix-ops}]
---
kind: ClusterRole
metadata: {name: helix-ops-namespace-helix}
rules:
  - apiGroups: [""]
    resources: [namespaces]
    resourceNames: [helix]
    verbs: [get]
"""))


# --- the Role file → the verbs to ask about -------------------------------------------------------------------


def test_the_role_file_becomes_one_need_per_verb_in_the_environments_namespace():
    needs = preflight.rbac_needs(ROLE_DOCS, "hx-prod")
    assert needs == [
        AccessNeed("get", "", "secrets", "", "hx-prod"),
        AccessNeed("create", "", "secrets", "", "hx-prod"),
        AccessNeed("create", "", "pods", "portforward", "hx-prod"),
        AccessNeed("patch", "apps", "deployments", "scale", "hx-prod"),
        # the ClusterRole's resourceNames [helix] stand for the environment's namespace
        AccessNeed("get", "", "namespaces", "", None, "hx-prod"),
    ]
    assert needs[2].text() == "create pods/portforward in namespace hx-prod"
    assert needs[3].can_i() == "kubectl auth can-i patch deployments/scale.apps -n hx-prod"
    assert needs[4].text() == "get namespaces hx-prod (cluster scope)"


def test_the_repositorys_role_file_is_read_whole():
    """Whatever the file holds now (others add verbs to it): every rule of its Role becomes needs."""
    docs = list(yaml.safe_load_all((ROOT / preflight.ROLE_FILE).read_text()))
    needs = preflight.rbac_needs(docs, "x")
    role = next(d for d in docs if d and d["kind"] == "Role")
    expected = sum(len(r.get("apiGroups") or [""]) * len(r["resources"]) * len(r["verbs"]) for r in role["rules"])
    assert len([n for n in needs if n.namespace == "x"]) == expected
    assert AccessNeed("create", "apps", "statefulsets", "", "x") in needs


def test_a_rule_without_verbs_is_refused():
    with pytest.raises(ValueError, match="without resources or verbs"):
        preflight.rbac_needs([{"kind": "Role", "metadata": {"name": "r"}, "rules": [{"resources": ["pods"]}]}], "x")


@pytest.mark.parametrize("answers,statuses,named", [
    ({}, ["pass"], []),
    ({"create pods/portforward": False}, ["fail"], ["rbac create pods/portforward"]),
    ({"create pods/portforward": False, "patch deployments/scale.apps": False}, ["fail", "fail"],
     ["rbac create pods/portforward", "rbac patch deployments/scale.apps"]),
    ({"get secrets": None}, ["warn"], ["rbac get secrets"]),
])
def test_access_answers(answers, statuses, named):
    needs = preflight.rbac_needs(ROLE_DOCS, "hx")
    allowed = {n: answers.get(f"{n.verb} {n.resource_text}", True) for n in needs}
    checks = preflight.check_access(needs, allowed)
    assert [c.status for c in checks] == statuses
    if named:
        assert [c.name for c in checks] == named
        for c in checks:
            assert preflight.ROLE_FILE in c.fix and "kubectl auth can-i" in c.fix and "-n hx" in c.fix
        if statuses[0] == "fail":
            assert checks[0].detail == "this identity may not create pods/portforward in namespace hx"
    else:
        assert "all 5 verbs" in checks[0].detail


def test_an_empty_role_file_fails():
    [check] = preflight.check_access([], {})
    assert check.failed and "restore" in check.fix


# --- the namespace --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exists,may_create,status", [
    (True, None, "pass"),
    (False, True, "pass"),
    (False, False, "fail"),
    (None, None, "warn"),
])
def test_namespace(exists, may_create, status):
    check = preflight.check_namespace("hx-a", exists, may_create)
    assert (check.name, check.status) == ("namespace hx-a", status)
    if status == "fail":
        assert "hx-a does not exist" in check.detail
        assert "kubectl create namespace hx-a" in check.fix and preflight.ROLE_FILE in check.fix


# --- StorageClasses -------------------------------------------------------------------------------------------


def _claims(storage_class=None):
    d = load_descriptor(DEPLOYMENTS / "staging.yaml")  # names no StorageClass
    if storage_class:
        d = d.model_copy(update={"kubernetes": d.kubernetes.model_copy(update={"storage_class": storage_class})})
    return preflight.volume_claims(render_kubernetes(build_stack(d)))


def test_volume_claims_come_from_the_statefulsets():
    claims = _claims()
    assert claims and all(cls is None for _, cls in claims)
    assert any(c.startswith("neo4j/") for c, _ in claims)
    assert {cls for _, cls in _claims("fast-ssd")} == {"fast-ssd"}
    prod = load_descriptor(DEPLOYMENTS / "prod.yaml")
    assert {cls for _, cls in preflight.volume_claims(render_kubernetes(build_stack(prod)))} == {
        prod.kubernetes.storage_class}


@pytest.mark.parametrize("wanted,classes,status,in_fix", [
    (None, [StorageClassFact("standard", True)], "pass", ""),
    (None, [StorageClassFact("a", True), StorageClassFact("b", True)], "pass", ""),
    (None, [StorageClassFact("slow")], "fail", "kubectl annotate storageclass slow"),
    (None, [], "fail", "install a storage provisioner"),
    ("fast-ssd", [StorageClassFact("fast-ssd")], "pass", ""),
    ("fast-ssd", [StorageClassFact("standard", True)], "fail", "create StorageClass fast-ssd"),
    ("fast-ssd", None, "warn", "kubectl get storageclass"),
    (None, None, "warn", "kubectl get storageclass"),
])
def test_storage(wanted, classes, status, in_fix):
    checks = preflight.check_storage(_claims(wanted), classes)
    assert [c.status for c in checks] == [status]
    assert checks[0].name == (f"storage class {wanted}" if wanted else "default storage class")
    assert in_fix in checks[0].fix
    if status == "fail":
        assert "neo4j/" in checks[0].detail


def test_no_claims_no_storage_needed():
    assert [c.status for c in preflight.check_storage([], [])] == ["pass"]


def test_default_class_annotation():
    assert preflight.is_default_class({"storageclass.kubernetes.io/is-default-class": "true"})
    assert preflight.is_default_class({"storageclass.beta.kubernetes.io/is-default-class": "True"})
    assert not preflight.is_default_class({"storageclass.kubernetes.io/is-default-class": "false"})
    assert not preflight.is_default_class(None)


# --- quantities, requests, nodes ------------------------------------------------------------------------------


@pytest.mark.parametrize("text,value", [
    ("256Gi", 256 * GI), ("16318976Ki", 16318976 * 1024), ("3800m", Fraction(38, 10)), ("32", 32),
    ("1e3", 1000), ("1.5G", 1_500_000_000), ("500M", 500_000_000), ("0.5", Fraction(1, 2)), (2, 2),
])
def test_quantities(text, value):
    assert preflight.quantity(text) == value


@pytest.mark.parametrize("text", ["", "Gi", "12 Gi", "1Gib", "abc"])
def test_bad_quantities(text):
    with pytest.raises(ValueError):
        preflight.quantity(text)


def test_pod_requests_are_the_rendered_containers_requests_times_replicas():
    d = load_descriptor(DEPLOYMENTS / "prod.yaml")
    requests = {r.workload: r for r in preflight.pod_requests(render_kubernetes(build_stack(d)))}
    stack = build_stack(d)
    neo = stack.service("neo4j")
    assert requests["StatefulSet/neo4j"].memory_bytes == preflight.memory_bytes(neo.resources.request_memory)
    assert requests["StatefulSet/neo4j"].replicas == neo.replicas
    # the memory summed over the rendering is what the guide's table (as the descriptor sizes it) asks for,
    # without the load balancer (the Ingress controller replaces nginx on Kubernetes)
    needed = preflight.memory_needed(stack)
    assert sum(r.memory_bytes * r.replicas for r in requests.values()) == sum(
        v for k, v in needed.items() if k != "nginx")


def _node(name, cpu="4", memory="16Gi", ready=True, **spec):
    return {"metadata": {"name": name}, "spec": spec,
            "status": {"allocatable": {"cpu": cpu, "memory": memory},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


@pytest.mark.parametrize("node,why", [
    (_node("a"), ""),
    (_node("a", unschedulable=True), "cordoned"),
    (_node("a", taints=[{"key": "gpu", "effect": "NoSchedule"}]), "taint gpu:NoSchedule"),
    (_node("a", taints=[{"key": "soft", "effect": "PreferNoSchedule"}]), ""),
    (_node("a", ready=False), "not Ready"),
])
def test_node_facts(node, why):
    fact = preflight.node_fact(node)
    assert fact == NodeFact("a", 4000, 16 * GI, why)


REQ = [PodRequest("StatefulSet/neo4j", 1, 2000, 8 * GI), PodRequest("Deployment/dashboard", 2, 500, 1 * GI)]


@pytest.mark.parametrize("nodes,memory,cpu,in_detail", [
    ([NodeFact("a", 8000, 32 * GI)], "pass", "pass", "requests 10.0Gi of 32.0Gi"),
    ([NodeFact("a", 8000, 8 * GI)], "fail", "pass", "the stack requests 10.0Gi memory"),
    ([NodeFact("a", 1000, 32 * GI)], "pass", "fail", "the stack requests 3 CPU"),
    # enough in total, but no node holds the Neo4j pod
    ([NodeFact("a", 4000, 6 * GI), NodeFact("b", 4000, 6 * GI)], "fail", "pass", "largest schedulable node"),
    # the cordoned node does not count
    ([NodeFact("a", 8000, 4 * GI), NodeFact("b", 8000, 64 * GI, "cordoned")], "fail", "pass", "not counted: b"),
    ([NodeFact("b", 8000, 64 * GI, "taint x:NoSchedule")], "fail", "fail", "no schedulable node"),
    (None, "warn", "warn", "may not list nodes"),
])
def test_capacity(nodes, memory, cpu, in_detail):
    checks = preflight.check_capacity(REQ, nodes)
    assert [(c.name, c.status) for c in checks] == [("cluster memory", memory), ("cluster cpu", cpu)]
    assert any(in_detail in c.detail for c in checks)
    for c in checks:
        assert c.status == "pass" or c.fix


def test_a_memory_failure_names_the_largest_requests_and_the_fix():
    [mem, _] = preflight.check_capacity(REQ, [NodeFact("a", 8000, 8 * GI)])
    assert "StatefulSet/neo4j 1×8.0Gi" in mem.detail
    assert "add nodes" in mem.fix and "services.<name>.resources.requests" in mem.fix
