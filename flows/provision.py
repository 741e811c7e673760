"""``provision-helix``: pre-flight checks before the first deploy, then networks, volumes and secrets.

Checks (``helix_ops.preflight``): the engine is reachable and recent enough (Docker 24; Podman 4.3, whose
compat API reports 1.41), Docker Compose 2.20 when present, Kubernetes 1.28 for that target (render-only),
the stack's memory requests against the host's free memory, the load balancer's host port free, the volumes
absent or this project's. Any failure stops the flow before it changes anything, with each fix listed.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.deploy import descriptor_path
from helix_ops import preflight
from helix_ops.descriptor import load_descriptor
from helix_ops.errors import ConfigError
from tasks.lease import environment_lease
from tasks.provision import preflight_checks, provision_engine_objects, provision_secrets, summary


class PreflightFailed(ConfigError):
    """One or more pre-flight checks failed; ``checks`` are the failures, each with its fix."""

    def __init__(self, environment: str, checks: list[preflight.Check]) -> None:
        self.environment = environment
        self.checks = checks
        super().__init__("preflight", f"{environment}: " + " | ".join(c.line() for c in checks))

    def __reduce__(self):
        return (type(self), (self.environment, self.checks))


@flow(name="provision-helix", log_prints=False)
def provision_helix(env: str = "local", descriptor: str | None = None, engine_url: str | None = None,
                    env_file: str | None = None, memory_available: int | None = None,
                    lease_ttl_s: float = 120, lease_wait_s: float = 600,
                    container_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Check that ``env`` can be deployed, then create its networks, volumes and missing secrets.

    Args:
        env / descriptor: the environment (``deployments/<env>.yaml`` unless a path is given).
        engine_url: the Docker Engine API address.
        env_file: also write the Compose ``.env`` here (mode 0600).
        memory_available: override the measured free memory (bytes), e.g. for a remote engine's host.
        container_labels: extra labels on the networks and volumes it creates.

    Raises :class:`PreflightFailed` (every failed check with its fix) before changing anything.
    Example: ``prefect deployment run provision-helix/staging``, then ``deploy-helix/staging``.
    """
    logger = get_run_logger()
    desc = load_descriptor(descriptor_path(env, descriptor))
    checks = preflight_checks(desc, engine_url, memory_available)
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
        if desc.target == "engine":
            actions += provision_engine_objects(desc, engine_url, container_labels or {})
        actions += provision_secrets(desc, env_file)
    create_markdown_artifact(preflight.markdown(desc.environment, checks, actions), key=f"preflight-{desc.environment}",
                             description=f"provision-helix for {desc.environment}")
    return {"environment": desc.environment, **summary(checks), "actions": actions}
