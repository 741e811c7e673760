"""``audit-helix``: the guide's Security Checklist as executable checks against one environment.

Load the descriptor → open its target (a container engine or a Kubernetes cluster, from the connection
parameters) → gather facts (renderings, credential blocks, the live target) → evaluate every item → publish a
markdown artifact (pass / fail / how to fix). Read-only: it holds no environment lease.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.params import EnvName, run_name
from drivers.target import Connection
from tasks.target import target_for
from helix_ops.descriptor import descriptor_file
from helix_ops.audit import DEFAULT_MAX_SECRET_AGE_DAYS
from helix_ops.descriptor import load_descriptor
from tasks.audit import audit_environment, publish


@flow(name="audit-helix", log_prints=False, flow_run_name=run_name("audit-{env}"))
def audit_helix(env: EnvName = "local", descriptor: str | None = None, engine_url: str | None = None,
                exceptions: dict[str, str] | None = None, max_secret_age_days: int = DEFAULT_MAX_SECRET_AGE_DAYS,
                fail_on_findings: bool = False, container_labels: dict[str, str] | None = None,
                kubeconfig: str | None = None, kube_context: str | None = None, cluster_block: str | None = None,
                in_cluster: bool = False, docker_host_block: str | None = None) -> dict[str, Any]:
    """Audit one environment against the Security Checklist and publish the report (artifact ``audit-<env>``).

    Args:
        env / descriptor: which environment (``deployments/<env>.yaml`` unless a path is given).
        engine_url / docker_host_block / container_labels (target ``engine``): the Docker Engine API address
            of the environment (or a prefect-docker ``DockerHost`` block's name) and extra container labels.
        kubeconfig / kube_context / cluster_block / in_cluster (target ``kubernetes``): how to reach the API
            server (a kubeconfig file and context, a prefect-kubernetes ``KubernetesClusterConfig`` block, or the
            pod's service account; none: ``$KUBECONFIG``).
        exceptions: item id → the reason a failure is accepted here (recorded in the report), e.g.
            ``{"tls": "loopback-only developer environment"}`` for ``local``.
        max_secret_age_days: the oldest a credential may be (default 35: the prod rotation is monthly).
        fail_on_findings: fail the run when a required item fails (so a schedule shows red).

    Returns the report as a dict (``passed``, ``counts``, ``findings``). Example:
    ``prefect deployment run audit-helix/prod``.
    """
    logger = get_run_logger()
    desc = load_descriptor(descriptor_file(env, descriptor))
    target = target_for(desc, Connection(engine_url=engine_url, docker_host_block=docker_host_block,
                                          container_labels=container_labels or {}, kubeconfig=kubeconfig,
                                          kube_context=kube_context, cluster_block=cluster_block,
                                          in_cluster=in_cluster))
    logger.info("auditing %s on %s", desc.environment, target.where())
    report = audit_environment(desc, target, exceptions, max_secret_age_days)
    publish(report)
    for f in report.findings:
        logger.info("%s: %s — %s", f.item.id, f.status, f.detail)
    if fail_on_findings and not report.passed:
        from helix_ops.audit import AuditFailed

        raise AuditFailed(report.environment, report.blocking())
    return report.to_dict()
