"""The Kubernetes :class:`drivers.target.Target`: one environment's objects in one namespace, through the API
server (``drivers.kube.KubeDriver``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from drivers.kube import KubeDriver

if TYPE_CHECKING:
    from helix_ops.descriptor import Descriptor
    from helix_ops.plan import CurrentState


@dataclass(frozen=True)
class KubeTarget:
    """Where and whose: the cluster (kubeconfig file, a prefect-kubernetes ``KubernetesClusterConfig`` block,
    in-cluster, or ``$KUBECONFIG`` / ``~/.kube/config`` / the pod's service account when none is named) and
    the environment's project, name and namespace."""

    project: str
    environment: str
    namespace: str
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    cluster_block: str | None = None
    timeout_s: float = 10

    kind: ClassVar[str] = "kubernetes"
    capabilities: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def for_descriptor(cls, desc: Descriptor, kubeconfig: str | None = None, context: str | None = None,
                       in_cluster: bool = False, cluster_block: str | None = None) -> KubeTarget:
        from helix_ops.errors import ConfigError

        if desc.target != "kubernetes":
            raise ConfigError("target", f"environment {desc.environment} targets {desc.target}, not kubernetes")
        return cls(desc.project, desc.environment, desc.kubernetes.namespace, kubeconfig, context, in_cluster,
                   cluster_block)

    def driver(self) -> KubeDriver:
        config_dict = None
        context = self.context
        if self.cluster_block:
            from prefect_kubernetes.credentials import KubernetesClusterConfig

            block = KubernetesClusterConfig.load(self.cluster_block)
            config_dict, context = block.config, context or block.context_name
        return KubeDriver.connect(self.project, self.environment, self.namespace, self.kubeconfig, context,
                                  self.in_cluster, config_dict, self.timeout_s)

    def where(self) -> str:
        how = ("in-cluster" if self.in_cluster else f"block {self.cluster_block}" if self.cluster_block
               else self.kubeconfig or "$KUBECONFIG")
        return f"kubernetes ({how}), namespace {self.namespace}"

    @contextmanager
    def _driver(self) -> Iterator[KubeDriver]:
        driver = self.driver()
        try:
            yield driver
        finally:
            driver.close()

    def connect(self) -> dict[str, str]:
        with self._driver() as d:
            return d.version()

    def live_state(self) -> CurrentState:
        with self._driver() as d:
            return d.current_state()

    def running(self, service: str) -> list[str]:
        with self._driver() as d:
            return _ready_pods(d, service)

    @contextmanager
    def endpoint(self, service: str, port: int) -> Iterator[tuple[str, int]]:
        """A port-forward through the API server to a ready pod of ``service`` (in-cluster: the Service's DNS
        name), open for the body."""
        with self._driver() as d, d.endpoint(service, port) as address:
            yield address

    def pause_record(self, service: str) -> dict[str, Any]:
        """What :meth:`pause` would stop now: the running pods and the workload's replicas."""
        with self._driver() as d:
            return {"replicas": _ready_pods(d, service), "scale": d.replicas(service) or 0}

    def pause(self, service: str) -> dict[str, Any]:
        """Scale ``service``'s workload to 0 (waits until its pods are gone); the record keeps its replicas."""
        with self._driver() as d:
            pods = _ready_pods(d, service)
            return {"replicas": pods, "scale": d.scale(service, 0)}

    def resume(self, service: str, record: Mapping[str, Any], descriptor: Descriptor,
               deadline_s: float = 180) -> list[str]:
        """Scale back to the recorded replicas and wait until they are ready (their readiness probe is the
        health gate); nothing when it already runs them."""
        want = int(record.get("scale") or 0)
        with self._driver() as d:
            if want == 0 or d.replicas(service) == want and len(_ready_pods(d, service)) >= want:
                return []
            d.scale(service, want, deadline_s=deadline_s)
        return [f"{service}: {want} ready"]


def _ready_pods(driver: KubeDriver, service: str) -> list[str]:
    """Names of ``service``'s pods that run, are ready and are not being deleted."""
    return sorted(p["name"] for p in driver.pods(service) if p["phase"] == "Running" and p["ready"]
                  and not p["deleting"])
