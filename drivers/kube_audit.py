"""What audit-helix reads of a Kubernetes namespace, through the API server (a :class:`drivers.kube.KubeDriver`).

Reads only (list / get), each group on its own so one refused read (a 403 names its verb and resource) leaves
the other facts: NetworkPolicies and Services (``network``), Deployments and StatefulSets (``containers``),
ConfigMaps (``configmaps``), helix-ops' Role (``rbac``). The reductions to audit facts are pure and live in
:mod:`helix_ops.audit_kubernetes`; the one that looks at secret values (:func:`configmap_leaks`) is here, so
the values never reach that module: it returns only which ConfigMap and key hold one.

Example::

    driver = target.driver()
    policies = network_policies(driver)          # name -> spec
    leaks = configmap_leaks(config_maps(driver), {"redis-password": "..."})   # [("helix-config", "x.yaml")]
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from lightkube.core.resource_registry import resource_registry

from drivers.kube import KubeApiError, KubeDriver
from drivers.kube_errors import ROLE_FILE

MIN_SECRET_LENGTH = 8
"""Shorter values are not searched for (a short value would match ordinary text; the strong-passwords item
fails such a value anyway)."""

ROLE_PATH = Path(__file__).resolve().parents[1] / ROLE_FILE


def _list(driver: KubeDriver, kind: str, api_version: str, plural: str) -> list[dict[str, Any]]:
    """Every ``kind`` in the driver's namespace (anyone's, not only helix-ops'), as dicts."""
    res = resource_registry.load(api_version, kind)
    with driver._api("list", plural, driver.namespace):
        return [o.to_dict() if hasattr(o, "to_dict") else dict(o)
                for o in driver.client.list(res, namespace=driver.namespace)]


def network_policies(driver: KubeDriver) -> dict[str, dict[str, Any]]:
    """NetworkPolicy name → its spec."""
    items = _list(driver, "NetworkPolicy", "networking.k8s.io/v1", "networkpolicies")
    return {p["metadata"]["name"]: p.get("spec") or {} for p in items}


def services(driver: KubeDriver) -> list[dict[str, Any]]:
    return _list(driver, "Service", "v1", "services")


def workloads(driver: KubeDriver) -> list[dict[str, Any]]:
    """Every Deployment and StatefulSet of the namespace (``kind`` set on each)."""
    out = []
    for kind, plural in (("Deployment", "deployments"), ("StatefulSet", "statefulsets")):
        for obj in _list(driver, kind, "apps/v1", plural):
            obj["kind"] = kind
            out.append(obj)
    return out


def pods(driver: KubeDriver) -> list[dict[str, Any]]:
    """Every Pod of the namespace (``kind`` set on each): what runs, also what no helix-ops workload started."""
    return [{**p, "kind": "Pod"} for p in _list(driver, "Pod", "v1", "pods")]


def config_maps(driver: KubeDriver) -> list[dict[str, Any]]:
    """Every ConfigMap of the namespace. Holds whatever the ConfigMaps hold: reduce it with
    :func:`configmap_leaks` and drop it."""
    return _list(driver, "ConfigMap", "v1", "configmaps")


def role_rules(driver: KubeDriver, name: str) -> list[dict[str, Any]]:
    """The rules of the Role ``name`` in the namespace (``[]`` when there is no such Role)."""
    res = resource_registry.load("rbac.authorization.k8s.io/v1", "Role")
    try:
        with driver._api("get", "roles.rbac.authorization.k8s.io", driver.namespace):
            obj = driver.client.get(res, name, namespace=driver.namespace)
    except KubeApiError as exc:
        if exc.code == 404:
            return []
        raise
    data = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return list(data.get("rules") or [])


def allowed_role(path: Path = ROLE_PATH) -> tuple[str, list[dict[str, Any]]]:
    """``(name, rules)`` of the Role in deployments/rbac/role.yaml: what helix-ops may be granted."""
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "Role":
            return doc["metadata"]["name"], list(doc.get("rules") or [])
    raise ValueError(f"{path} has no Role")


def configmap_leaks(configmaps: Sequence[Mapping[str, Any]], secrets: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(ConfigMap name, key)`` of every entry (``data`` or base64 ``binaryData``) that contains one of the
    ``secrets`` values (at least :data:`MIN_SECRET_LENGTH` characters). Returns names only, never a value."""
    wanted = [v for v in secrets.values() if v and len(v) >= MIN_SECRET_LENGTH]
    out = set()
    for cm in configmaps:
        name = cm["metadata"]["name"]
        entries = dict(cm.get("data") or {})
        for key, b64 in (cm.get("binaryData") or {}).items():
            try:
                entries[key] = base64.b64decode(b64).decode(errors="replace")
            except (ValueError, TypeError):
                continue
        for key, text in entries.items():
            if any(v in (text or "") for v in wanted):
                out.add((name, key))
    return sorted(out)
