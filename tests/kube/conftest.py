"""Helpers for the Kubernetes-target tests: a descriptor for a fresh namespace, its blocks, and reads of the
cluster as the admin (a real client, not the driver under test)."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.paths import REPO

KINDS = ("NetworkPolicy", "Secret", "ConfigMap", "Service", "StatefulSet", "Deployment", "PodDisruptionBudget",
         "Ingress", "Pod")


def write_descriptor(dest: Path, environment: str, namespace: str, sentinel: bool = True,
                     **tags: str) -> Path:
    """A ``target: kubernetes`` descriptor (from staging.yaml) for ``namespace``, its own blocks, with
    ``tags`` (service → image tag) overridden."""
    data = yaml.safe_load((REPO / "deployments" / "staging.yaml").read_text())
    data["environment"] = environment
    data["kubernetes"]["namespace"] = namespace
    data["kubernetes"]["ingress_namespace"] = f"{namespace}-ingress"
    data["kubernetes"]["version"] = "1.31"
    if sentinel:
        data["services"]["redis"]["mode"] = "sentinel"
    data["services"]["dashboard"]["replicas"] = 2
    for service, tag in tags.items():
        data["services"][service.replace("_", "-")]["image"]["tag"] = tag
    data["credentials"] = {k: f"{environment}-{k}" for k in ("neo4j", "redis", "dashboard", "anthropic", "storage")}
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "deployments" / "helix.config.yaml", dest.parent / "helix.config.yaml")
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def new_names(prefix: str = "k") -> tuple[str, str]:
    """(environment, namespace), unique for this run."""
    tag = secrets.token_hex(3)
    return f"{prefix}{tag}", f"hx-{prefix}{tag}"


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("audit")
    old = os.environ.get("HELIX_OPS_AUDIT_DIR")
    os.environ["HELIX_OPS_AUDIT_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("HELIX_OPS_AUDIT_DIR", None)
    else:
        os.environ["HELIX_OPS_AUDIT_DIR"] = old


class Admin:
    """Reads of one namespace as the cluster admin (lightkube, not the driver under test)."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        from lightkube import Client, KubeConfig

        self.client = Client(KubeConfig.from_file(str(kubeconfig)), namespace=namespace, field_manager="tests")
        self.namespace = namespace

    def res(self, kind: str):
        from drivers.kube import API_VERSIONS
        from lightkube.core.resource_registry import resource_registry

        more = {"EndpointSlice": "discovery.k8s.io/v1", "Event": "v1"}
        return resource_registry.load({**API_VERSIONS, **more}.get(kind, "v1"), kind)

    def objects(self, kinds=KINDS) -> dict[str, dict[str, Any]]:
        """``Kind/name`` → the object (as a dict), every object of ``kinds`` in the namespace."""
        out = {}
        for kind in kinds:
            for obj in self.client.list(self.res(kind), namespace=self.namespace):
                d = obj.to_dict()
                out[f"{kind}/{d['metadata']['name']}"] = d
        return out

    def versions(self) -> dict[str, str]:
        return {k: v["metadata"]["resourceVersion"] for k, v in self.objects().items()}

    def pods(self, app: str) -> dict[str, str]:
        """Pod name → uid of ``app``'s live (not terminating) pods."""
        out = {}
        for p in self.client.list(self.res("Pod"), namespace=self.namespace, labels={"app": app}):
            if not p.metadata.deletionTimestamp:
                out[p.metadata.name] = p.metadata.uid
        return out

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return self.client.get(self.res(kind), name, namespace=self.namespace).to_dict()

    def create(self, obj: dict[str, Any]) -> None:
        from lightkube import codecs

        self.client.create(codecs.from_dict(obj), namespace=self.namespace)

    def create_namespace(self, pod_security: str = "restricted") -> None:
        """This namespace, its pods held to the Pod Security level ``pod_security``."""
        from lightkube.resources.core_v1 import Namespace

        self.client.create(Namespace.from_dict({"metadata": {"name": self.namespace, "labels": {
            "pod-security.kubernetes.io/enforce": pod_security}}}))

    def delete_namespace(self) -> None:
        from lightkube.resources.core_v1 import Namespace

        try:
            self.client.delete(Namespace, self.namespace)
        except Exception:  # noqa: BLE001 - best effort clean-up
            pass


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """The API-server-down test runs last of the whole session: after the test bed's API server restarts,
    kwok has been seen to stop moving new pods to Ready (a test-bed issue), which would fail any later rollout."""
    last = [i for i in items if i.name == "test_an_api_server_that_is_down_is_a_clear_error_with_a_hint"]
    items[:] = [i for i in items if i not in last] + last


def write_node_descriptor(dest: Path, environment: str, namespace: str, s3_endpoint: str, bucket: str) -> Path:
    """A ``target: kubernetes`` descriptor for the bed's real node (``kube_node``): the local images (Neo4j,
    Redis, the probe as the dashboard and MCP services), each service's memory at the guide's minimum and a
    small CPU request, so the whole stack fits one 2-core node; backups go to the bed's S3 ``bucket``. Its
    ingress controller's namespace (whose pods the dashboard's NetworkPolicy lets in) is ``<namespace>-ingress``."""
    from helix_ops.guide import SIZING

    data = yaml.safe_load((REPO / "deployments" / "staging.yaml").read_text())
    local = yaml.safe_load((REPO / "deployments" / "local.yaml").read_text())
    data["environment"] = environment
    data["kubernetes"]["namespace"] = namespace
    data["kubernetes"]["ingress_namespace"] = f"{namespace}-ingress"
    data["ingress"]["domain"] = f"{environment}.example.com"
    for name, spec in local["services"].items():
        service = {k: v for k, v in spec.items() if k != "host_port"}
        if name != "nginx":
            memory = SIZING[name].min_memory
            service["resources"] = {"requests": {"cpu": "50m", "memory": memory},
                                    "limits": {"cpu": "1", "memory": memory}}
        if name == "neo4j":
            service.update(heap_initial="256Mi", heap_max="512Mi", pagecache="128Mi", storage="1Gi")
        if name == "redis":
            service["storage"] = "1Gi"
        data["services"][name] = service
    data["backup"]["storage"] = {"kind": "s3", "bucket": bucket, "prefix": f"{environment}/", "endpoint": s3_endpoint}
    data["credentials"] = {k: f"{environment}-{k}" for k in ("neo4j", "redis", "dashboard", "anthropic", "storage")}
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "deployments" / "helix.config.yaml", dest.parent / "helix.config.yaml")
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest
