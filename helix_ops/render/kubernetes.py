"""Render the stack as Kubernetes manifests (a list of dicts in apply order).

Namespace (Pod Security ``restricted``), NetworkPolicies (default deny, then one allow per service),
the ``helix-secrets`` Secret (keys from the stack, values supplied by the caller; ``neo4j-auth`` is
``neo4j/<password>``; ``neo4j-user``, the Neo4j user the consumers log in as, travels with ``neo4j-password``
so a rotation's bridge user and its password change in one update), the helix.config ConfigMap, then per service in dependency order: Services,
StatefulSet (Neo4j, Redis, Sentinel; with PVCs) or Deployment, PodDisruptionBudget; the Ingress last.
Nginx is not rendered: on Kubernetes the Ingress controller is the load balancer.

:func:`with_secret_checksums` adds to the pod template of every app service that reads a secret
``helix-ops/secret-checksum``: a checksum over the values of exactly the keys it reads, so changing one secret
changes (and so rolls) only its consumers. The data services read rotated passwords live (Redis ACL, Neo4j's
system database) and carry none: a rotation never restarts them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from helix_ops import guide
from helix_ops.errors import ConfigError, RenderError
from helix_ops.stack import (
    CREDENTIAL_KEYS,
    DERIVED_SECRETS,
    SECRET_NAME,
    EnvVar,
    Mount,
    Probe,
    ServiceSpec,
    Stack,
    neo4j_member_env,
    redis_member_env,
    secret_blocks,
    sentinel_member_env,
)

Manifest = dict[str, Any]
CONFIG_MAP = "helix-config"
SECRET_CHECKSUM = "helix-ops/secret-checksum"
"""Pod-template annotation: checksum of the Secret values a service reads (changes roll only its pods)."""


def render_kubernetes(stack: Stack, secret_values: Mapping[str, str] | None = None) -> list[Manifest]:
    """Every object for ``stack`` in apply order (delete in reverse: :func:`delete_order`).

    ``secret_values`` maps secret keys (``neo4j-password``, ...) to values read from the Prefect blocks;
    derived keys (``neo4j-auth``) are composed here; ``neo4j-user`` (the blocks' Neo4j user) is the stack's
    default user (``neo4j``) when not supplied. Without it the Secret is a template with empty values.
    """
    ns = stack.descriptor.kubernetes.namespace
    objects: list[Manifest] = [namespace(stack), *network_policies(stack), secret(stack, secret_values)]
    if stack.helix_config_text is not None:
        objects.append(config_map(stack))
    for svc in stack.services:
        if svc.role == "load-balancer":
            continue
        objects += _service_objects(stack, svc)
    objects.append(ingress(stack))
    for obj in objects:
        if obj["kind"] != "Namespace":
            obj["metadata"]["namespace"] = ns
    return objects


def with_secret_checksums(stack: Stack, objects: list[Manifest]) -> list[Manifest]:
    """``objects`` (a rendering with secret values) with ``helix-ops/secret-checksum`` on the pod template of
    every app service that reads a secret: what the Kubernetes driver applies, so that a changed secret rolls
    exactly its consumers. A template rendering (no values) is returned unchanged."""
    secrets = [o for o in objects if o["kind"] == "Secret"]
    if not secrets or secrets[0]["metadata"].get("annotations", {}).get("helix-ops/values") != "supplied":
        return objects
    data = secrets[0]["stringData"]
    out = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            obj = json.loads(json.dumps(obj))
            _annotate_secret_checksum(stack, obj, data)
        out.append(obj)
    return out


def secret_checksum(stack: Stack, service: str, data: Mapping[str, str]) -> str | None:
    """The checksum of the Secret values ``service`` reads (None when it is a data service or reads none).

    PBKDF2-SHA256 (20 000 rounds, salted with project, environment and service) over the values as canonical
    JSON: the annotation is readable by whoever may read Deployments, so it must not be a cheap hash of a
    password.
    """
    if service not in guide.APP_SERVICES:
        return None
    env = stack.service(service).env
    keys = sorted({e.secret for e in env if e.secret} | {CREDENTIAL_KEYS[e.name] for e in env if e.from_credentials})
    if not keys:
        return None
    canonical = json.dumps({k: data.get(k, "") for k in keys}, sort_keys=True, separators=(",", ":"))
    salt = f"helix-ops/{stack.descriptor.project}/{stack.environment}/{service}".encode()
    return hashlib.pbkdf2_hmac("sha256", canonical.encode(), salt, 20_000).hex()[:32]


def _annotate_secret_checksum(stack: Stack, obj: Manifest, data: Mapping[str, str]) -> None:
    checksum = secret_checksum(stack, obj["metadata"]["name"], data)
    if checksum is not None:
        obj["spec"]["template"]["metadata"]["annotations"] = {SECRET_CHECKSUM: checksum}


def delete_order(objects: list[Manifest]) -> list[Manifest]:
    """Objects in the order to delete them: the reverse of apply order."""
    return list(reversed(objects))


def _meta(stack: Stack, name: str, app: str | None = None, **extra: Any) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/name": app or name,
        "app.kubernetes.io/part-of": stack.descriptor.project,
        "app.kubernetes.io/managed-by": "helix-ops",
        "helix-ops/environment": stack.environment,
    }
    if app:
        labels["app"] = app
    return {"name": name, "labels": labels, **extra}


def namespace(stack: Stack) -> Manifest:
    """The namespace, enforcing the ``restricted`` Pod Security Standard."""
    meta = _meta(stack, stack.descriptor.kubernetes.namespace)
    meta["labels"].update({
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    })
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def secret(stack: Stack, values: Mapping[str, str] | None) -> Manifest:
    """The ``helix-secrets`` Secret: one key per secret the stack references, and the Neo4j user
    (``neo4j-user``)."""
    keys = stack.secret_keys()
    credentials = stack.credential_keys()
    if values is None:
        data = {key: "" for key in sorted((*keys, *credentials))}
    else:
        data = _secret_data(stack, keys, {k: v for k, v in values.items() if k not in credentials})
        data.update({key: values.get(key) or default for key, default in credentials.items()})
        data = dict(sorted(data.items()))
    meta = _meta(stack, SECRET_NAME)
    meta["annotations"] = {"helix-ops/values": "template" if values is None else "supplied"}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "stringData": data}


def _secret_data(stack: Stack, keys: tuple[str, ...], values: Mapping[str, str]) -> dict[str, str]:
    blocks = secret_blocks(stack.descriptor)
    unknown = sorted(set(values) - set(blocks))
    if unknown:
        raise ConfigError(f"secrets.{unknown[0]}", f"not a secret key (expected one of: {', '.join(sorted(blocks))})")
    data = {}
    for key in keys:
        prefix, base = DERIVED_SECRETS.get(key, ("", key))
        if not values.get(base):
            raise ConfigError(f"secrets.{base}", f"no value supplied (from Prefect block {blocks[base]})")
        data[key] = prefix + values[base]
    return data


def config_map(stack: Stack) -> Manifest:
    """helix.config.yaml as a ConfigMap (the ``${VAR}`` template: services resolve it from their env)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(stack, CONFIG_MAP),
        "data": {"helix.config.yaml": stack.helix_config_text},
    }


def network_policies(stack: Stack) -> list[Manifest]:
    """Deny all ingress, then allow each service's clients on its ports."""
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(stack, "default-deny-ingress"),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    allows = [_allow_policy(stack, svc) for svc in stack.services if svc.role != "load-balancer"]
    return [deny, *allows]


def _allow_policy(stack: Stack, svc: ServiceSpec) -> Manifest:
    deployed = {s.name for s in stack.services if s.role != "load-balancer"}
    apps = sorted(a for a in svc.allowed_from if a in deployed)
    peers: list[dict[str, Any]] = []
    if apps:
        peers.append({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": apps}]}})
    if "ingress" in svc.allowed_from:
        ns = stack.descriptor.kubernetes.ingress_namespace
        peers.append({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}})
    ports = [{"protocol": "TCP", "port": p} for p in _all_ports(stack, svc)]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(stack, f"allow-{svc.name}"),
        "spec": {
            "podSelector": {"matchLabels": {"app": svc.name}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": ports}],
        },
    }


def _all_ports(stack: Stack, svc: ServiceSpec) -> list[int]:
    ports = [p.port for p in svc.ports]
    if svc.name == "neo4j" and svc.replicas > 1:
        ports += list(guide.NEO4J_CLUSTER_PORTS)
    return ports


def _service_objects(stack: Stack, svc: ServiceSpec) -> list[Manifest]:
    objects: list[Manifest] = []
    if svc.stateful:
        objects.append(_k8s_service(stack, svc, headless=True))
    if not (svc.name == "redis" and stack.descriptor.services.redis.mode == "sentinel"):
        objects.append(_k8s_service(stack, svc, headless=False))
    objects.append(statefulset(stack, svc) if svc.stateful else deployment(stack, svc))
    if svc.replicas > 1:
        objects.append(pod_disruption_budget(stack, svc))
    return objects


def headless_name(svc: ServiceSpec) -> str:
    """The governing headless Service of a StatefulSet."""
    return f"{svc.name}-headless"


def _k8s_service(stack: Stack, svc: ServiceSpec, headless: bool) -> Manifest:
    ports = [{"name": p.name, "port": 80 if svc.role == "dashboard" else p.port, "targetPort": p.name,
              "protocol": "TCP"} for p in svc.ports]
    spec: dict[str, Any] = {"selector": {"app": svc.name}, "ports": ports}
    if headless:
        spec.update({"clusterIP": "None", "publishNotReadyAddresses": True})
        if svc.name == "neo4j" and svc.replicas > 1:
            spec["ports"] = ports + [
                {"name": f"cluster-{p}", "port": p, "targetPort": p, "protocol": "TCP"}
                for p in guide.NEO4J_CLUSTER_PORTS
            ]
    name = headless_name(svc) if headless else svc.name
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(stack, name, svc.name), "spec": spec}


def _fqdn(stack: Stack, host: str, governing: str) -> str:
    return f"{host}.{governing}.{stack.descriptor.kubernetes.namespace}.svc.cluster.local"


def _member_env(stack: Stack, svc: ServiceSpec) -> list[EnvVar]:
    """Identity-dependent settings; ``$(POD_NAME)`` is expanded by the kubelet."""
    d = stack.descriptor
    me = _fqdn(stack, "$(POD_NAME)", headless_name(svc))
    if svc.name == "neo4j":
        members = [_fqdn(stack, f"neo4j-{i}", headless_name(svc)) for i in range(svc.replicas)]
        return neo4j_member_env(d, members, me)
    primary = _fqdn(stack, "redis-0", "redis-headless")
    if svc.name == "redis":
        return redis_member_env(primary, me)
    if svc.name == "redis-sentinel":
        return sentinel_member_env(primary, me)
    return []


def _env(stack: Stack, svc: ServiceSpec) -> list[dict[str, Any]]:
    member = _member_env(stack, svc)
    out: list[dict[str, Any]] = []
    if member:
        out.append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    for e in [*svc.env, *member]:
        if e.secret:
            out.append({"name": e.name, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": e.secret}}})
        elif e.from_credentials:  # NEO4J_USER: from the Secret, with the password it belongs to
            key = CREDENTIAL_KEYS[e.name]
            out.append({"name": e.name, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": key}}})
        else:
            out.append({"name": e.name, "value": e.value})
    return out


def probe(p: Probe, liveness: bool = False) -> dict[str, Any]:
    """A readiness (or liveness: later start, more patience) probe."""
    if p.kind == "http":
        action: dict[str, Any] = {"httpGet": {"path": p.path or "/", "port": p.port}}
    elif p.kind == "bolt":
        action = {"tcpSocket": {"port": p.port}}
    else:
        action = {"exec": {"command": ["redis-cli", "-p", str(p.port), "ping"]}}
    return {
        **action,
        "initialDelaySeconds": p.initial_delay + (20 if liveness else 0),
        "periodSeconds": p.period,
        "timeoutSeconds": p.timeout,
        "failureThreshold": p.failures * (2 if liveness else 1),
    }


def _volume_mount(m: Mount) -> dict[str, Any]:
    out: dict[str, Any] = {"name": m.volume, "mountPath": m.path}
    if m.sub_path:
        out["subPath"] = m.sub_path
    if m.read_only:
        out["readOnly"] = True
    return out


def _volumes(svc: ServiceSpec) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in svc.mounts:
        if m.kind == "scratch":
            out.append({"name": m.volume, "emptyDir": {}})
        elif m.kind == "config":
            out.append({"name": m.volume, "configMap": {"name": CONFIG_MAP}})
    if svc.command:
        out.append({"name": "tmp", "emptyDir": {}})
    return out


PRESTOP_DRAIN_S = 5
"""How long a stateless pod keeps serving after Kubernetes decides to stop it (a ``preStop`` sleep). Its endpoint
is removed at once, but kube-proxy (or the ingress controller) stops sending it new connections only a moment
later; without the pause, a rolling upgrade on a real kubelet dropped new connections in that gap (ConnectError
and ConnectTimeout, 4 of 1,098 requests; tests/kube/test_real_node.py)."""

PRESTOP_SLEEP_SINCE = 30
"""The ``sleep`` lifecycle action is on by default from Kubernetes 1.30 (beta; GA in 1.34). The app images need no
shell for it. On 1.28 and 1.29 no pause is rendered."""


def _drains(stack: Stack, svc: ServiceSpec) -> bool:
    """A stateless, rolled service behind a Service, on a Kubernetes with the sleep action."""
    minor = int(stack.descriptor.kubernetes.version.split(".")[1])
    return svc.role in ("dashboard", "mcp") and svc.strategy == "RollingUpdate" and minor >= PRESTOP_SLEEP_SINCE


def container(stack: Stack, svc: ServiceSpec) -> dict[str, Any]:
    """The one container of a service's pod."""
    r = svc.resources
    c: dict[str, Any] = {
        "name": svc.name,
        "image": svc.image,
        "imagePullPolicy": "IfNotPresent",
    }
    if svc.command:
        c["command"] = list(svc.command)
    c.update({
        "ports": [{"name": p.name, "containerPort": p.port, "protocol": "TCP"} for p in svc.ports],
        "env": _env(stack, svc),
        "resources": {
            "requests": {"memory": r.request_memory, "cpu": r.request_cpu},
            "limits": {"memory": r.limit_memory, "cpu": r.limit_cpu},
        },
        "readinessProbe": probe(svc.probe),
        "livenessProbe": probe(svc.probe, liveness=True),
        **({"lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_DRAIN_S}}}} if _drains(stack, svc) else {}),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
        },
    })
    mounts = [_volume_mount(m) for m in svc.mounts]
    if svc.command:
        mounts.append({"name": "tmp", "mountPath": "/tmp"})
    if mounts:
        c["volumeMounts"] = mounts
    return c


def pod_template(stack: Stack, svc: ServiceSpec) -> dict[str, Any]:
    """Pod template: non-root, RuntimeDefault seccomp, no service account token, no service-link variables,
    spread replicas."""
    uid = svc.run_as_user
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        # No Docker-link variables: a Service named neo4j or redis would put NEO4J_PORT=tcp://… and
        # REDIS_PORT=tcp://… into every pod. The Neo4j image turns NEO4J_* variables into settings and Neo4j 5
        # refuses unknown ones; a service reading REDIS_PORT as a number crashes (seen on a real kubelet).
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container(stack, svc)],
    }
    if svc.replicas > 1:
        spec["affinity"] = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": svc.name}},
                                "topologyKey": "kubernetes.io/hostname"},
        }]}}
    volumes = _volumes(svc)
    if volumes:
        spec["volumes"] = volumes
    if svc.role == "graph-db":
        spec["terminationGracePeriodSeconds"] = 120
    return {"metadata": {"labels": _meta(stack, svc.name, svc.name)["labels"]}, "spec": spec}


def deployment(stack: Stack, svc: ServiceSpec) -> Manifest:
    """A Deployment: Recreate for the single writer, RollingUpdate with no unavailability otherwise."""
    if svc.strategy == "Recreate":
        strategy: dict[str, Any] = {"type": "Recreate"}
    else:
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(stack, svc.name, svc.name),
        "spec": {
            "replicas": svc.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": {"app": svc.name}},
            "strategy": strategy,
            "template": pod_template(stack, svc),
        },
    }


def statefulset(stack: Stack, svc: ServiceSpec) -> Manifest:
    """A StatefulSet with one PVC per data mount; members start in parallel so a cluster can form."""
    claims = []
    for m in svc.mounts:
        if m.kind == "data":
            spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": m.size}}}
            if stack.descriptor.kubernetes.storage_class:
                spec["storageClassName"] = stack.descriptor.kubernetes.storage_class
            claims.append({"metadata": {"name": m.volume}, "spec": spec})
    body: dict[str, Any] = {
        "serviceName": headless_name(svc),
        "replicas": svc.replicas,
        "podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "RollingUpdate"},
        "selector": {"matchLabels": {"app": svc.name}},
        "template": pod_template(stack, svc),
    }
    if claims:
        body["volumeClaimTemplates"] = claims
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(stack, svc.name, svc.name), "spec": body}


def pod_disruption_budget(stack: Stack, svc: ServiceSpec) -> Manifest:
    """At most one replica voluntarily down at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(stack, svc.name, svc.name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": svc.name}}},
    }


def ingress(stack: Stack) -> Manifest:
    """The Ingress to the dashboard: TLS via cert-manager, body size and rate limits (ingress-nginx)."""
    ing = stack.descriptor.ingress
    annotations = {
        "nginx.ingress.kubernetes.io/proxy-body-size": ing.body_size,
        "nginx.ingress.kubernetes.io/limit-rps": str(ing.rate_limit_rps),
        "nginx.ingress.kubernetes.io/limit-burst-multiplier": "2",
    }
    spec: dict[str, Any] = {"ingressClassName": ing.ingress_class}
    if ing.tls:
        annotations["nginx.ingress.kubernetes.io/ssl-redirect"] = "true"
        if ing.cluster_issuer:
            annotations["cert-manager.io/cluster-issuer"] = ing.cluster_issuer
        spec["tls"] = [{"hosts": [ing.domain], "secretName": ing.certificate_secret_name}]
    spec["rules"] = [{
        "host": ing.domain,
        "http": {"paths": [{
            "path": "/",
            "pathType": "Prefix",
            "backend": {"service": {"name": "dashboard", "port": {"number": 80}}},
        }]},
    }]
    meta = _meta(stack, f"{stack.descriptor.project}-ingress")
    meta["annotations"] = dict(sorted(annotations.items()))
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def validate_kubernetes(objects: list[Manifest], version: str) -> None:
    """Validate every object with kubernetes-validate in strict mode for Kubernetes ``version``.

    Raises :class:`RenderError` naming the object and the field path.
    """
    from kubernetes_validate import utils as kv

    for obj in objects:
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path) or "(top level)"
            raise RenderError(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}") from None
        except (kv.SchemaNotFoundError, kv.VersionNotSupportedError, kv.InvalidSchemaError) as exc:
            raise RenderError(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}") from None
