"""``provision-helix``: pre-flight checks before the first deploy, then the target's objects and secrets.

Checks (``helix_ops.preflight``; facts gathered by ``tasks/provision.py`` for the target's kind):

* engine: reachable and recent enough (Docker 24; Podman 4.3, whose compat API reports 1.41), Docker Compose
  2.20 when present, the stack's memory requests against the host's free memory, the load balancer's host port
  free, the volumes absent or this project's; then networks and volumes are created;
* Kubernetes, through the API server: reachable and ≥ 1.28, the namespace exists (or this identity may create
  it), every verb of ``deployments/rbac/role.yaml`` allowed (SelfSubjectAccessReviews), the PVCs' StorageClass
  (or a default one), the rendering's requests against the schedulable nodes' allocatable memory and CPU;
  nothing is created there but the secrets' blocks (deploy-helix applies the namespace and the objects).

Any failure stops the flow before it changes anything, with each fix listed.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.params import EnvName, run_name
from drivers.target import Connection
from helix_ops.descriptor import descriptor_file
from helix_ops import preflight
from helix_ops.descriptor import load_descriptor
from helix_ops.errors import ConfigError
from flows.lease import environment_lease
from tasks.provision import preflight_checks, provision_objects, provision_secrets, summary
from tasks.target import target_for


class PreflightFailed(ConfigError):
    """One or more pre-flight checks failed; ``checks`` are the failures, each with its fix."""

    def __init__(self, environment: str, checks: list[preflight.Check]) -> None:
        self.environment = environment
        self.checks = checks
        super().__init__("preflight", f"{environment}: " + " | ".join(c.line() for c in checks))

    def __reduce__(self):
        return (type(self), (self.environment, self.checks))


@flow(name="provision-helix", log_prints=False, flow_run_name=run_name("provision-{env}"))
def provision_helix(env: EnvName = "local", descriptor: str | None = None, engine_url: str | None = None,
                    env_file: str | None = None, memory_available: int | None = None,
                    lease_ttl_s: float = 120, lease_wait_s: float = 600,
                    container_labels: dict[str, str] | None = None, docker_host_block: str | None = None,
                    kubeconfig: str | None = None, kube_context: str | None = None,
                    cluster_block: str | None = None) -> dict[str, Any]:
    """Check that ``env`` can be deployed, then create its target's objects and its missing secrets.

    Args:
        env / descriptor: the environment (``deployments/<env>.yaml`` unless a path is given).
        engine_url / docker_host_block (target ``engine``): the Docker Engine API address, or a prefect-docker
            ``DockerHost`` block naming it; default: ``DOCKER_HOST`` or the local socket.
        env_file: also write the Compose ``.env`` here (mode 0600).
        memory_available: override the engine host's measured free memory (bytes), e.g. for a remote engine.
        container_labels: extra labels on the networks and volumes it creates.
        kubeconfig / kube_context / cluster_block (target ``kubernetes``): the cluster, from a kubeconfig file
            (and context) or a prefect-kubernetes ``KubernetesClusterConfig`` block; none: ``$KUBECONFIG``,
            ``~/.kube/config`` or, inside a pod, its service account. The checks run as that identity.

    Raises :class:`PreflightFailed` (every failed check with its fix) before changing anything.
    Example: ``prefect deployment run provision-helix/staging``, then ``deploy-helix/staging``.
    """
    logger = get_run_logger()
    desc = load_descriptor(descriptor_file(env, descriptor))
    target = target_for(desc, Connection(engine_url=engine_url, docker_host_block=docker_host_block,
                                         container_labels=container_labels or {}, kubeconfig=kubeconfig,
                                         kube_context=kube_context, cluster_block=cluster_block))
    checks = preflight_checks(desc, target, memory_available)
    for c in checks:
        (logger.warning if c.status != "pass" else logger.info)("%s", c.line())
    failed = preflight.failures(checks)
    if failed:
        create_markdown_artifact(preflight.markdown(desc.environment, checks), key=f"preflight-{desc.environment}",
                                 description=f"provision-helix pre-flight for {desc.environment}: failed")
        raise PreflightFailed(desc.environment, failed)
    owner = f"flow-run/{flow_run.get_id() or 'local'}"
    actions: list[str] = []
    with environment_lease(desc.environment, owner, ttl_s=lease_ttl_s, wait_s=lease_wait_s):
        actions += provision_objects(desc, target)
        actions += provision_secrets(desc, env_file)
    create_markdown_artifact(preflight.markdown(desc.environment, checks, actions), key=f"preflight-{desc.environment}",
                             description=f"provision-helix for {desc.environment}")
    return {"environment": desc.environment, **summary(checks), "actions": actions}
