"""audit-helix on a Kubernetes target, pure: the checklist over facts built from the prod rendering as if it
ran as rendered (passes), then each kind of live breakage fails the item that names it."""

from __future__ import annotations

import base64
import copy
from datetime import datetime, timedelta, timezone

import pytest

from drivers.kube_audit import allowed_role, configmap_leaks
from helix_ops import audit
from helix_ops.audit import evaluate
from helix_ops.audit_facts import AuditFacts, secret_facts
from helix_ops.audit_kubernetes import (
    effective_security,
    exposed_database_ports,
    role_excess,
    security_problems,
    service_facts,
    workload_container_facts,
)
from helix_ops.descriptor import load_descriptor
from helix_ops.render.kubernetes import render_kubernetes
from helix_ops.render.nginx import render_nginx_conf
from helix_ops.stack import build_stack
from testbed.paths import REPO

NOW = datetime(2026, 1, 31, tzinfo=timezone.utc)
STRONG = "Zx8_q" * 9
KUBE_IDS = tuple(i.id for i in audit.items_for("kubernetes"))


def rendering() -> list[dict]:
    return render_kubernetes(build_stack(load_descriptor(REPO / "deployments" / "prod.yaml")))


def kube_facts(manifests=None, **over) -> AuditFacts:
    """Facts of prod as if the cluster ran exactly its rendering (``manifests``: the live objects)."""
    stack = build_stack(load_descriptor(REPO / "deployments" / "prod.yaml"))
    rendered = render_kubernetes(stack)
    live = rendered if manifests is None else manifests
    name, rules = allowed_role()
    facts = dict(
        environment="prod", target="kubernetes", now=NOW, tls=True, nginx_conf=render_nginx_conf(stack),
        kubernetes=rendered, log_level="info",
        neo4j_password=secret_facts("Neo4j password", STRONG, NOW - timedelta(days=3)),
        redis_password=secret_facts("Redis password", STRONG, NOW - timedelta(days=3)),
        nextauth_secret=secret_facts("NEXTAUTH_SECRET", STRONG, NOW - timedelta(days=3)),
        secret_ages=(secret_facts("x", STRONG, NOW - timedelta(days=30)),),
        neo4j_unauthenticated_refused=True, neo4j_wrong_password_refused=True, redis_unauthenticated_refused=True,
        live_network_policies={m["metadata"]["name"]: m["spec"] for m in live if m["kind"] == "NetworkPolicy"},
        services=service_facts([m for m in live if m["kind"] == "Service"]),
        containers=workload_container_facts(live), configmap_leaks=(),
        role_name=name, role_rules=tuple(rules), allowed_role_rules=tuple(rules),
    )
    facts.update(over)
    return AuditFacts(**facts)


def broken(change) -> list[dict]:
    """The prod rendering with ``change(objects_by_kind_name)`` applied."""
    objs = copy.deepcopy(rendering())
    by = {f"{o['kind']}/{o['metadata']['name']}": o for o in objs}
    change(by)
    return [o for o in objs if f"{o['kind']}/{o['metadata']['name']}" in by]


def test_the_rendering_running_as_rendered_passes_every_kubernetes_item():
    report = evaluate(kube_facts())
    statuses = {f.item.id: f.status for f in report.findings}
    assert set(statuses) == set(KUBE_IDS) and {"configmap-secrets", "rbac-scope"} <= set(statuses)
    # prod pins by tag (1.4.2, 5.26-enterprise): a warning, never blocking
    assert statuses == {**{i: "pass" for i in KUBE_IDS}, "images-pinned": "warn"}, [
        (f.item.id, f.detail) for f in report.findings if f.status != "pass"]
    assert report.passed


def test_engine_reports_keep_their_eleven_items():
    assert [i.id for i in audit.items_for("engine")] == [i.id for i in audit.GUIDE_ITEMS]


def _drop_policy(by):
    del by["NetworkPolicy/allow-neo4j"]


def _nodeport_bolt(by):
    svc = by["Service/neo4j"]
    svc["spec"]["type"] = "NodePort"
    for p in svc["spec"]["ports"]:
        if p["port"] == 7687:
            p["nodePort"] = 30687


def _latest(by):
    by["Deployment/mcp-graph"]["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/x/graph:latest"


def _escalation(by):
    c = by["Deployment/dashboard"]["spec"]["template"]["spec"]["containers"][0]
    c["securityContext"]["allowPrivilegeEscalation"] = True


def _root(by):
    by["StatefulSet/redis"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0


def _loosened_policy(by):
    by["NetworkPolicy/allow-redis"]["spec"]["ingress"] = [{}]


BREAKAGES = {
    "network policy deleted": (_drop_policy, "network-policies", "missing in the namespace: allow-neo4j"),
    "policy opened up": (_loosened_policy, "network-policies", "differ from their rendering: allow-redis (ingress)"),
    "bolt on a NodePort": (_nodeport_bolt, "network-policies", "neo4j NodePort 7687->nodePort 30687"),
    "image latest": (_latest, "images-pinned", "mcp-graph: ghcr.io/x/graph:latest"),
    "privilege escalation": (_escalation, "non-root", "Deployment/dashboard:dashboard: allowPrivilegeEscalation"),
    "runAsUser 0": (_root, "non-root", "StatefulSet/redis:redis: runAsUser 0"),
}


@pytest.mark.parametrize("case", BREAKAGES)
def test_each_live_breakage_fails_its_item(case):
    change, item_id, seen = BREAKAGES[case]
    report = evaluate(kube_facts(broken(change)))
    finding = report.finding(item_id)
    assert finding.status == "fail" and seen in finding.detail, finding
    assert [f.item.id for f in report.blocking()] == [item_id]


def test_a_leaked_secret_and_a_wide_role_fail_their_items():
    report = evaluate(kube_facts(configmap_leaks=(("helix-config", "helix.config.yaml"),)))
    assert report.finding("configmap-secrets").status == "fail"
    assert "helix-config key helix.config.yaml" in report.finding("configmap-secrets").detail
    _, rules = allowed_role()
    wide = [*rules, {"apiGroups": [""], "resources": ["*"], "verbs": ["get"]},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"]}]
    finding = evaluate(kube_facts(role_rules=tuple(wide))).finding("rbac-scope")
    assert finding.status == "fail" and "wildcard grants: get core/*" in finding.detail
    assert "beyond deployments/rbac/role.yaml: create rbac.authorization.k8s.io/rolebindings" in finding.detail
    assert evaluate(kube_facts(role_rules=())).finding("rbac-scope").status == "fail"


def test_live_facts_that_could_not_be_read_block():
    report = evaluate(kube_facts(live_network_policies=None, configmap_leaks=None, role_rules=None, containers=None,
                                 gather_errors={"network": "forbidden: list networkpolicies", "configmaps": "x",
                                                "rbac": "forbidden: get roles", "containers": "y"}))
    assert "forbidden: list networkpolicies" in report.finding("network-policies").detail
    assert {f.item.id: f.status for f in report.blocking()} == {
        "network-policies": "fail", "configmap-secrets": "skipped", "rbac-scope": "skipped",
        "images-pinned": "skipped", "non-root": "skipped"}


def test_exposure_covers_load_balancers_external_ips_and_named_target_ports():
    services = service_facts([
        {"metadata": {"name": "bolt-lb"}, "spec": {"type": "LoadBalancer", "selector": {"app": "neo4j"},
                                                   "ports": [{"port": 443, "targetPort": "bolt"}]}},
        {"metadata": {"name": "redis-ext"}, "spec": {"selector": {"app": "cache"}, "externalIPs": ["192.0.2.1"],
                                                     "ports": [{"port": 16379, "targetPort": 6379}]}},
        {"metadata": {"name": "dash"}, "spec": {"type": "LoadBalancer", "selector": {"app": "dashboard"},
                                                "ports": [{"port": 443, "targetPort": "http"}]}},
        {"metadata": {"name": "neo4j"}, "spec": {"selector": {"app": "neo4j"}, "ports": [{"port": 7687}]}},
    ])
    assert exposed_database_ports(services) == ["bolt-lb LoadBalancer 443", "redis-ext externalIPs 192.0.2.1 16379"]


def test_security_settings_follow_kubernetes_precedence():
    pod = {"securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
           "automountServiceAccountToken": False}
    good = {"securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
    assert security_problems(effective_security(pod, good)) == []
    over = {"securityContext": {**good["securityContext"], "runAsNonRoot": False, "privileged": True,
                                "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN", "NET_BIND_SERVICE"]}}}
    assert security_problems(effective_security({**pod, "hostNetwork": True}, over)) == [
        "runAsNonRoot is not true", "privileged", "capabilities added: SYS_ADMIN", "hostNetwork"]
    assert "service account token mounted" in security_problems(effective_security({"securityContext": {}}, good))


def test_role_excess_honours_resource_names():
    allowed = [{"apiGroups": [""], "resources": ["namespaces"], "resourceNames": ["helix"], "verbs": ["get"]}]
    assert role_excess(allowed, allowed) == ([], [])
    assert role_excess([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}], allowed) == (
        [], ["get core/namespaces"])


def test_configmap_leaks_name_the_key_never_the_value():
    secret = "s3cr3t-" + "v" * 30
    cms = [{"metadata": {"name": "helix-config"}, "data": {"helix.config.yaml": f"password: {secret}\n",
                                                          "other": "nothing here"}},
           {"metadata": {"name": "bin"}, "binaryData": {"blob": base64.b64encode(f"x{secret}x".encode()).decode()}},
           {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "-----BEGIN CERTIFICATE-----"}}]
    leaks = configmap_leaks(cms, {"redis-password": secret, "short": "neo4j"})
    assert leaks == [("bin", "blob"), ("helix-config", "helix.config.yaml")]
    assert secret not in repr(evaluate(kube_facts(configmap_leaks=tuple(leaks))).to_dict())


def test_a_pod_started_by_hand_without_a_security_context_fails_non_root_and_finished_pods_do_not_count():
    bare = {"kind": "Pod", "metadata": {"name": "debug", "labels": {}},
            "spec": {"containers": [{"name": "sh", "image": "busybox:1.36"}]}, "status": {"phase": "Running"}}
    done = {**copy.deepcopy(bare), "metadata": {"name": "old-job"}, "status": {"phase": "Succeeded"}}
    report = evaluate(kube_facts(containers=workload_container_facts([*rendering(), done])))
    assert report.finding("non-root").status == "pass"
    report = evaluate(kube_facts(containers=workload_container_facts([*rendering(), bare, done])))
    finding = report.finding("non-root")
    assert finding.status == "fail"
    assert "Pod/debug:sh: runAsNonRoot is not true" in finding.detail and "old-job" not in finding.detail
    assert "service account token mounted" in finding.detail
