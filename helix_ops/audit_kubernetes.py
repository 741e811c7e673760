"""The audit's Kubernetes side (pure): reading live objects or the rendering, and the checks only a Kubernetes
target has.

* :func:`effective_security` / :func:`security_problems` / :func:`workload_container_facts`: a container's
  securityContext over its pod's, and what it lacks of what helix-ops renders (the ``non-root`` item).
* :func:`service_facts` / :func:`exposed_database_ports` / :func:`exposure_problems` and
  :func:`live_policy_problems`: Services that expose a database port, NetworkPolicies missing or changed in
  the namespace (the ``network-policies`` item).
* :func:`check_configmap_secrets` and :func:`rule_grants` / :func:`role_excess` / :func:`check_rbac_scope`:
  the ``configmap-secrets`` and ``rbac-scope`` items.

What reads the API server is ``drivers/kube_audit.py``; the checklist and :func:`helix_ops.audit.evaluate`
are in :mod:`helix_ops.audit`.

Example::

    exposed_database_ports(service_facts(live_services))   # ['neo4j LoadBalancer 7687']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from helix_ops.audit_facts import (
    DATA_SERVICES,
    DATABASE_PORTS,
    AuditFacts,
    ContainerFacts,
    Result,
    ServiceFacts,
    skipped,
)


# --- NetworkPolicies and Services ---------------------------------------------------------------------------

_POLICY_FIELDS = ("podSelector", "policyTypes", "ingress", "egress")


def live_policy_problems(f: AuditFacts, rendered: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every rendered NetworkPolicy exists live in the namespace with the rendered spec."""
    if f.live_network_policies is None:
        return ["live NetworkPolicies could not be read: " + f.gather_errors.get("network", "not gathered")]
    missing, changed = [], []
    for p in rendered:
        name = p["metadata"]["name"]
        live = f.live_network_policies.get(name)
        if live is None:
            missing.append(name)
            continue
        want = {k: _pruned(p["spec"].get(k)) for k in _POLICY_FIELDS}
        have = {k: _pruned(live.get(k)) for k in _POLICY_FIELDS}
        if want != have:
            changed.append(f"{name} ({', '.join(k for k in _POLICY_FIELDS if want[k] != have[k])})")
    out = []
    if missing:
        out.append(f"NetworkPolicies missing in the namespace: {', '.join(sorted(missing))}")
    if changed:
        out.append(f"live NetworkPolicies differ from their rendering: {', '.join(sorted(changed))}")
    return out


def _pruned(value: Any) -> Any:
    """``value`` without None, empty lists/dicts inside mappings (how the API server may return a spec)."""
    if isinstance(value, Mapping):
        out = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != [] and (v != {} or k == "podSelector")}
    if isinstance(value, (list, tuple)):
        return [_pruned(v) for v in value]
    return value


def service_facts(services: Sequence[Mapping[str, Any]]) -> tuple[ServiceFacts, ...]:
    """Live Service dicts reduced to :class:`ServiceFacts` (pure)."""
    out = []
    for svc in services:
        spec = svc.get("spec") or {}
        ports = tuple((int(p.get("port") or 0), str(p.get("targetPort", p.get("port", ""))), p.get("nodePort"))
                      for p in spec.get("ports") or [])
        out.append(ServiceFacts(svc["metadata"]["name"], spec.get("type") or "ClusterIP",
                                (spec.get("selector") or {}).get("app"), ports,
                                tuple(spec.get("externalIPs") or ())))
    return tuple(sorted(out, key=lambda s: s.name))


def exposed_database_ports(services: Sequence[ServiceFacts]) -> list[str]:
    """``<service> <type> <port>[->nodePort]`` for every database port reachable from outside the cluster: a
    LoadBalancer or NodePort Service (or one with externalIPs) whose port or target port is a database port,
    or that selects a data service's pods."""
    out = []
    for s in services:
        outside = s.type in ("LoadBalancer", "NodePort") or bool(s.external_ips)
        if not outside:
            continue
        how = s.type if s.type in ("LoadBalancer", "NodePort") else f"externalIPs {','.join(s.external_ips)}"
        for port, target, node_port in s.ports:
            db = (port in DATABASE_PORTS or (target.isdigit() and int(target) in DATABASE_PORTS)
                  or s.app in DATA_SERVICES)
            if db:
                out.append(f"{s.name} {how} {port}" + (f"->nodePort {node_port}" if node_port else ""))
    return sorted(out)


def exposure_problems(f: AuditFacts) -> list[str]:
    if f.services is None:
        return ["live Services could not be read: " + f.gather_errors.get("network", "not gathered")]
    exposed = exposed_database_ports(f.services)
    return [f"database ports exposed outside the cluster: {', '.join(exposed)}"] if exposed else []


# --- workloads ---------------------------------------------------------------------------------------------


def effective_security(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    """The security settings a container runs with: its own securityContext over its pod's (Kubernetes
    semantics), and the pod-level host namespaces and service account token."""
    pod = pod_spec.get("securityContext") or {}
    own = container.get("securityContext") or {}
    caps = own.get("capabilities") or {}

    def pick(key: str) -> Any:
        return own[key] if own.get(key) is not None else pod.get(key)

    seccomp = (own.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
    return {
        "runAsNonRoot": pick("runAsNonRoot"), "runAsUser": pick("runAsUser"),
        "allowPrivilegeEscalation": own.get("allowPrivilegeEscalation"), "privileged": own.get("privileged"),
        "capabilitiesDrop": sorted(caps.get("drop") or []), "capabilitiesAdd": sorted(caps.get("add") or []),
        "seccompProfile": seccomp,
        "hostNetwork": pod_spec.get("hostNetwork"), "hostPID": pod_spec.get("hostPID"),
        "hostIPC": pod_spec.get("hostIPC"),
        "automountServiceAccountToken": pod_spec.get("automountServiceAccountToken"),
    }


def security_problems(sec: Mapping[str, Any]) -> list[str]:
    """What an :func:`effective_security` lacks of what helix-ops renders (the ``restricted`` Pod Security
    Standard, plus no service account token)."""
    problems = []
    if sec.get("runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    if sec.get("runAsUser") == 0:
        problems.append("runAsUser 0")
    if sec.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if sec.get("privileged"):
        problems.append("privileged")
    if "ALL" not in (sec.get("capabilitiesDrop") or ()):
        problems.append("capabilities do not drop ALL")
    added = [c for c in sec.get("capabilitiesAdd") or () if c != "NET_BIND_SERVICE"]
    if added:
        problems.append(f"capabilities added: {', '.join(added)}")
    if sec.get("seccompProfile") not in ("RuntimeDefault", "Localhost"):
        problems.append(f"seccompProfile {sec.get('seccompProfile') or 'unset'} (want RuntimeDefault)")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if sec.get(key):
            problems.append(f"{key}")
    if sec.get("automountServiceAccountToken") is not False:
        problems.append("service account token mounted")
    return problems


def workload_container_facts(workloads: Sequence[Mapping[str, Any]]) -> tuple[ContainerFacts, ...]:
    """Every container and init container of Deployments / StatefulSets (live dicts or the rendering) and of
    live Pods (what runs, whoever started it: a pod created by hand is checked too; finished pods are not) as
    :class:`ContainerFacts` named ``<Kind>/<name>:<container>`` with :func:`effective_security`."""
    out = []
    for w in workloads:
        if w.get("kind") == "Pod":
            if ((w.get("status") or {}).get("phase")) in ("Succeeded", "Failed"):
                continue
            template = w
        elif w.get("kind") in ("Deployment", "StatefulSet"):
            template = (w.get("spec") or {}).get("template") or {}
        else:
            continue
        pod_spec = template.get("spec") or {}
        app = ((template.get("metadata") or {}).get("labels") or {}).get("app") or w["metadata"]["name"]
        for c in [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]:
            sec = effective_security(pod_spec, c)
            user = "" if sec["runAsUser"] is None else str(sec["runAsUser"])
            out.append(ContainerFacts(name=f"{w['kind']}/{w['metadata']['name']}:{c.get('name', '?')}",
                                      service=app, image=c.get("image") or "", user=user, security=sec))
    return tuple(sorted(out, key=lambda c: c.name))


# --- secrets in ConfigMaps, RBAC ----------------------------------------------------------------------------


def check_configmap_secrets(f: AuditFacts) -> Result:
    if f.configmap_leaks is None:
        return skipped(f, "ConfigMaps", "configmaps")
    if f.configmap_leaks:
        where = ", ".join(f"{cm} key {key}" for cm, key in sorted(f.configmap_leaks))
        return "fail", f"secret values found in ConfigMaps: {where}"
    return "pass", "no ConfigMap in the namespace holds a secret value of the environment"


def rule_grants(rules: Sequence[Mapping[str, Any]]) -> set[tuple[str, str, str, str]]:
    """RBAC rules expanded to ``(apiGroup, resource, verb, resourceName)`` (``""`` for any name) (pure)."""
    out = set()
    for rule in rules or ():
        names = rule.get("resourceNames") or [""]
        for g in rule.get("apiGroups") or [""]:
            for r in rule.get("resources") or []:
                for v in rule.get("verbs") or []:
                    for n in names:
                        out.add((g, r, v, n))
        for url in rule.get("nonResourceURLs") or []:
            for v in rule.get("verbs") or []:
                out.add(("<url>", url, v, ""))
    return out


def role_excess(live: Sequence[Mapping[str, Any]], allowed: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """``(wildcards, beyond)``: grants of ``live`` with a ``*`` and grants ``allowed`` does not cover, as
    ``verb group/resource[/name]`` lines (pure)."""
    ok = rule_grants(allowed)
    wild, beyond = set(), set()
    for g, r, v, n in rule_grants(live):
        line = f"{v} {(g or 'core')}/{r}" + (f"/{n}" if n else "")
        if "*" in (g, r, v):
            wild.add(line)
        elif (g, r, v, n) not in ok and (g, r, v, "") not in ok:
            beyond.add(line)
    return sorted(wild), sorted(beyond)


def check_rbac_scope(f: AuditFacts) -> Result:
    if f.role_rules is None or f.allowed_role_rules is None:
        return skipped(f, f"the Role {f.role_name}", "rbac")
    if not f.role_rules:
        return "fail", (f"no Role {f.role_name} (or one without rules) in the namespace: helix-ops runs with "
                        "rights nobody reviewed")
    wild, beyond = role_excess(f.role_rules, f.allowed_role_rules)
    problems = []
    if wild:
        problems.append(f"wildcard grants: {', '.join(wild)}")
    if beyond:
        problems.append(f"grants beyond deployments/rbac/role.yaml: {', '.join(beyond)}")
    if problems:
        return "fail", f"Role {f.role_name}: " + "; ".join(problems)
    return "pass", f"Role {f.role_name} grants nothing beyond deployments/rbac/role.yaml, no wildcard"
