"""The one ``Target`` interface: where an environment runs, whatever runs it.

A flow asks its target; it never asks which target it has. Two implementations:

* :class:`drivers.target_engine.EngineTarget`: a Docker Engine API (Docker or Podman, local socket, ``tcp://``
  or ``ssh://``; a prefect-docker ``DockerHost`` block names it);
* :class:`drivers.target_kube.KubeTarget`: a Kubernetes API server (kubeconfig, a prefect-kubernetes
  ``KubernetesClusterConfig`` block, or in-cluster).

Both are frozen, picklable plain data that connect on each call, so a target crosses Prefect task boundaries
and nothing unpicklable does. ``tasks.target.target_for`` builds the right one from a descriptor and a
:class:`Connection` (the flow's connection parameters); it is the only place that looks at
``descriptor.target``. This module names the interface only: it imports neither implementation.

What a target does (each method says what it means on both):

* ``connect()``: ping the engine / API server (its version), with a clear error when it is unreachable;
* ``live_state()``: what runs now, as the planner's :class:`helix_ops.plan.CurrentState`;
* ``endpoint(service, port)``: a context manager yielding ``(host, port)`` where the flow's own process reaches
  ``port`` of a running replica of ``service``: a published port on the engine's host, a port-forward through
  the API server's ``pods/portforward`` (or the Service's cluster DNS name from inside the cluster);
* ``running(service)``: names of the running replicas (containers, ready pods);
* ``pause_record(service)``, ``pause(service)`` / ``resume(service, record, descriptor)``: take a service out of service and bring it
  back, health-gated (the writer pause): stop its containers and start the same ones again; scale its workload
  to 0 and back to the recorded replicas. ``pause`` returns a JSON-able record (kept durably by the caller
  before anything stops) that ``resume`` needs, also in a later run after a crash;
* ``capabilities``: what only some targets can do (``"offline-neo4j-tools"``: one-off containers on Neo4j's
  data volume, for ``neo4j-admin`` dump / load / import). A flow checks a capability, never the kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from helix_ops.errors import ConfigError

if TYPE_CHECKING:
    from helix_ops.descriptor import Descriptor
    from helix_ops.plan import CurrentState

OFFLINE_NEO4J_TOOLS = "offline-neo4j-tools"


@runtime_checkable
class Target(Protocol):
    """Where one environment runs (see the module docstring)."""

    kind: ClassVar[str]
    capabilities: ClassVar[frozenset[str]]
    project: str
    environment: str

    def where(self) -> str:
        """A line naming the target for logs and artifacts (no credentials)."""

    def connect(self) -> dict[str, str]:
        """The engine's / API server's version; raises a :class:`helix_ops.errors.DriverError` when unreachable."""

    def live_state(self) -> CurrentState:
        """The environment's objects as they run now."""

    def endpoint(self, service: str, port: int) -> AbstractContextManager[tuple[str, int]]:
        """``(host, port)`` where this process reaches ``port`` of a running replica of ``service``."""

    def running(self, service: str) -> list[str]:
        """Names of the running (ready) replicas of ``service``."""

    def pause_record(self, service: str) -> dict[str, Any]:
        """What :meth:`pause` would take out now (``{"replicas": [names], ...}``): recorded before it runs."""

    def pause(self, service: str) -> dict[str, Any]:
        """Take every replica of ``service`` out of service; the record :meth:`resume` needs (JSON-able)."""

    def resume(self, service: str, record: Mapping[str, Any], descriptor: Descriptor,
               deadline_s: float = 180) -> list[str]:
        """Bring back what ``record`` says was paused and wait until it answers its health probe; one line
        each. Idempotent: what already runs is left alone."""


@dataclass(frozen=True)
class Connection:
    """How a flow reaches its environment's target: the flow parameters that name an engine or a cluster.

    Engine: ``engine_url`` (``unix://``, ``tcp://``, ``ssh://``; default ``DOCKER_HOST`` or the local socket) or
    ``docker_host_block`` (a prefect-docker ``DockerHost`` block's name; its ``base_url`` wins), plus
    ``container_labels`` put on every container. Kubernetes: ``kubeconfig`` and ``kube_context``, or
    ``cluster_block`` (a prefect-kubernetes ``KubernetesClusterConfig`` block), or ``in_cluster``; none:
    ``$KUBECONFIG``, ``~/.kube/config``, or a pod's service account.
    """

    engine_url: str | None = None
    docker_host_block: str | None = None
    container_labels: Mapping[str, str] = field(default_factory=dict)
    kubeconfig: str | None = None
    kube_context: str | None = None
    cluster_block: str | None = None
    in_cluster: bool = False


def require(target: Target, capability: str, what: str, instead: str) -> None:
    """Refuse ``what`` (before anything changes) on a target without ``capability``, saying what to do."""
    if capability not in target.capabilities:
        raise ConfigError(what, f"not available on a {target.kind} target ({target.where()}): {instead}")


def merge_records(*records: Mapping[str, Any]) -> dict[str, Any]:
    """One pause record out of several of one service: lists joined (sorted, no repeats), numbers the largest."""
    out: dict[str, Any] = {}
    for record in records:
        for key, value in record.items():
            if isinstance(value, list):
                out[key] = sorted(set(out.get(key, [])) | set(value))
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out[key] = max(out.get(key, value), value)
            else:
                out[key] = value
    return out
