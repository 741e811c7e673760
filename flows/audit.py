"""``audit-helix``: the guide's Security Checklist as executable checks against one environment.

Load the descriptor → gather facts (renderings, credential blocks, the live engine target) → evaluate every
item → publish a markdown artifact (pass / fail / how to fix). Read-only: it holds no environment lease.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.deploy import descriptor_path
from helix_ops.audit import DEFAULT_MAX_SECRET_AGE_DAYS
from helix_ops.descriptor import load_descriptor
from tasks.audit import audit_environment, publish


@flow(name="audit-helix", log_prints=False)
def audit_helix(env: str = "local", descriptor: str | None = None, engine_url: str | None = None,
                exceptions: dict[str, str] | None = None, max_secret_age_days: int = DEFAULT_MAX_SECRET_AGE_DAYS,
                fail_on_findings: bool = False) -> dict[str, Any]:
    """Audit one environment against the Security Checklist and publish the report (artifact ``audit-<env>``).

    Args:
        env / descriptor: which environment (``deployments/<env>.yaml`` unless a path is given).
        engine_url: the Docker Engine API address of the environment.
        exceptions: item id → the reason a failure is accepted here (recorded in the report), e.g.
            ``{"tls": "loopback-only developer environment"}`` for ``local``.
        max_secret_age_days: the oldest a credential may be (default 35: the prod rotation is monthly).
        fail_on_findings: fail the run when a required item fails (so a schedule shows red).

    Returns the report as a dict (``passed``, ``counts``, ``findings``). Example:
    ``prefect deployment run audit-helix/prod``.
    """
    logger = get_run_logger()
    desc = load_descriptor(descriptor_path(env, descriptor))
    report = audit_environment(desc, engine_url, exceptions, max_secret_age_days)
    publish(report)
    for f in report.findings:
        logger.info("%s: %s — %s", f.item.id, f.status, f.detail)
    if fail_on_findings and not report.passed:
        from helix_ops.audit import AuditFailed

        raise AuditFailed(report.environment, report.blocking())
    return report.to_dict()
