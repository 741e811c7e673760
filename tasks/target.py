"""Prefect tasks over any :class:`drivers.target.Target` (the engine or a Kubernetes cluster)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from types import ModuleType
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from drivers.target import Connection, Target
from drivers.target_engine import EngineTarget
from drivers.target_kube import KubeTarget
from helix_ops.descriptor import Descriptor
from helix_ops.errors import ConfigError
from helix_ops.plan import CurrentState


def engine_url_of(conn: Connection) -> str | None:
    """The engine address: the ``DockerHost`` block's ``base_url`` when a block is named, else ``engine_url``."""
    if not conn.docker_host_block:
        return conn.engine_url
    try:
        from prefect_docker.host import DockerHost

        block = DockerHost.load(conn.docker_host_block)
    except ValueError as exc:
        raise ConfigError("docker_host_block", f"no DockerHost block named {conn.docker_host_block!r} ({exc}); "
                                               "create one in the Prefect UI (Blocks → Docker Host) or leave it "
                                               "unset for DOCKER_HOST") from None
    return block.base_url or conn.engine_url


def target_for(descriptor: Descriptor, conn: Connection | None = None) -> Target:
    """The environment's target, reached as the flow's connection parameters say (no I/O yet): the one
    switch on ``descriptor.target``."""
    conn = conn or Connection()
    if descriptor.target == "kubernetes":
        return KubeTarget(descriptor.project, descriptor.environment, descriptor.kubernetes.namespace,
                          conn.kubeconfig, conn.kube_context, conn.in_cluster, conn.cluster_block)
    return EngineTarget(engine_url_of(conn), descriptor.project, descriptor.environment,
                        dict(conn.container_labels))





@task(name="connect-target", retries=3, retry_delay_seconds=[1, 3, 5], timeout_seconds=60, cache_policy=NO_CACHE)
def connect_target(target: Target) -> dict[str, Any]:
    """Ping the engine / API server (retried: one that is down fails after the retries with a clear error)."""
    version = target.connect()
    get_run_logger().info("target: %s (%s)", target.where(), ", ".join(f"{k} {v}" for k, v in version.items()))
    return version


@task(name="read-live-state", retries=2, retry_delay_seconds=2, timeout_seconds=120, cache_policy=NO_CACHE)
def read_live_state(target: Target) -> CurrentState:
    """The environment's objects as they run now."""
    return target.live_state()


DEPLOYERS = {"engine": "tasks.engine", "kubernetes": "tasks.kube"}


def deployer_for(target: Target) -> ModuleType:
    """The module with deploy-helix's three steps for ``target`` (``plan_deploy``, ``apply_deploy``,
    ``deploy_status``, with one signature on every target): how a render becomes live differs per target
    (Compose containers through the engine, manifests by server-side apply), so it is chosen here, once."""
    return import_module(DEPLOYERS[target.kind])


@dataclass(frozen=True)
class Environment:
    """What a flow that changes an environment starts from: its descriptor, the helix.config.yaml text it names,
    its target and the target's steps (:func:`deployer_for`)."""

    descriptor: Descriptor
    config_text: str | None
    target: Target
    steps: ModuleType

    def __iter__(self):  # desc, config_text, target, steps = open_environment(...)
        return iter((self.descriptor, self.config_text, self.target, self.steps))


def open_environment(env: str, descriptor: str | None, conn: Connection,
                     keep_overrides: bool = True) -> Environment:
    """Load ``deployments/<env>.yaml`` (or ``descriptor``) and the helix.config.yaml it names, open its target
    as ``conn`` says and ping it (call from a flow: the ping is a task).

    With ``keep_overrides`` (the default) the descriptor comes with the image tags and replica counts that
    upgrade-helix and scale-helix kept (``helix_ops/overrides.py``), so that a flow re-applying a workload
    (a rotation's roll) does not undo them; deploy-helix loads them itself (it lists them, or resets them)."""
    from helix_ops.descriptor import descriptor_file, load_descriptor
    from tasks.kube import helix_config_text
    from tasks.overrides import load_overrides

    path = descriptor_file(env, descriptor)
    desc = load_descriptor(path)
    if keep_overrides:
        desc = load_overrides(desc).applied_to(desc)
    target = target_for(desc, conn)
    steps = deployer_for(target)
    config_text = helix_config_text(desc, path)
    connect_target(target)
    return Environment(desc, config_text, target, steps)
