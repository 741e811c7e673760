"""Tasks of audit-helix: gather the facts the checklist needs (descriptor, renderings, credential blocks, the
live engine target), and the gate deploy-helix calls in prod.

Secrets are reduced to :class:`helix_ops.audit.SecretFacts` inside :func:`gather_facts`; nothing returned,
logged or published holds a value.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from helix_ops.audit import (
    DEFAULT_MAX_SECRET_AGE_DAYS,
    AuditFacts,
    AuditFailed,
    AuditReport,
    ContainerFacts,
    evaluate,
    secret_facts,
)
from helix_ops.descriptor import Descriptor
from helix_ops.errors import HelixOpsError


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _block_facts(descriptor: Descriptor) -> dict[str, Any]:
    from blocks.credentials import AnthropicCredentials, HelixAppSecrets, Neo4jCredentials, RedisCredentials

    creds = descriptor.credentials
    neo4j = Neo4jCredentials.load(creds.neo4j)
    redis = RedisCredentials.load(creds.redis)
    app = HelixAppSecrets.load(creds.dashboard)
    anthropic = AnthropicCredentials.load(creds.anthropic)
    n = secret_facts("Neo4j password", neo4j.password.get_secret_value(), neo4j.rotated_at)
    r = secret_facts("Redis password", redis.password.get_secret_value(), redis.rotated_at)
    a = secret_facts("NEXTAUTH_SECRET", app.nextauth_secret.get_secret_value(), app.rotated_at)
    ages = [n, r, a]
    if not anthropic.placeholder:  # a placeholder is not a credential anyone rotates
        ages.append(secret_facts("Anthropic API key", "x" * 40, anthropic.rotated_at))
    return {"neo4j_password": n, "redis_password": r, "nextauth_secret": a, "secret_ages": tuple(ages)}


def _read_file(container, path: str) -> str:
    stream, _ = container.get_archive(path)
    data = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmembers()[0]
        return tar.extractfile(member).read().decode(errors="replace")


def _container_facts(c) -> ContainerFacts:
    from drivers.engine import IMAGE_LABEL, SERVICE_LABEL

    published = []
    for key, bindings in (c.attrs.get("NetworkSettings", {}).get("Ports") or {}).items():
        for b in bindings or []:
            published.append((int(key.split("/")[0]), b.get("HostIp") or "", int(b.get("HostPort") or 0)))
    image = c.attrs.get("Config", {}).get("Image") or c.labels.get(IMAGE_LABEL, "")
    return ContainerFacts(name=c.name, service=c.labels.get(SERVICE_LABEL, "?"), image=image,
                          user=str(c.attrs.get("Config", {}).get("User") or ""), published=tuple(sorted(published)))


def gather_facts(descriptor: Descriptor, engine_url: str | None, nginx_service: str = "nginx") -> AuditFacts:
    """Everything the checklist looks at; a fact that cannot be gathered is left ``None`` with the reason."""
    from drivers.engine import EngineDriver
    from drivers.neo4j_users import unauthenticated_refused
    from drivers.redis_acl import RedisAcl
    from helix_ops import guide
    from helix_ops.render.kubernetes import render_kubernetes
    from helix_ops.render.nginx import render_nginx_conf
    from helix_ops.stack import build_stack

    stack = build_stack(descriptor)
    facts: dict[str, Any] = {
        "environment": descriptor.environment, "target": descriptor.target, "now": _now(),
        "tls": descriptor.ingress.tls, "log_level": descriptor.log_level,
        "nginx_conf": render_nginx_conf(stack), "kubernetes": render_kubernetes(stack),
        "load_balancer": nginx_service,
    }
    errors: dict[str, str] = {}
    try:
        facts.update(_block_facts(descriptor))
    except Exception as exc:  # noqa: BLE001 - a missing block is a finding, not a crash
        errors["blocks"] = f"credential blocks do not load ({type(exc).__name__})"
    if descriptor.target == "engine":
        try:
            driver = EngineDriver.connect(engine_url, descriptor.project, descriptor.environment, timeout=30)
        except HelixOpsError as exc:
            for key in ("containers", "neo4j", "redis", "nginx"):
                errors[key] = str(exc)
        else:
            running = [c for c in driver.containers() if c.status == "running"]
            facts["containers"] = tuple(_container_facts(c) for c in running)
            by_service: dict[str, list] = {}
            for c in running:
                by_service.setdefault(c.labels.get("helix-ops.service", "?"), []).append(c)
            if by_service.get("neo4j"):
                try:
                    host, port = driver.probe_address(by_service["neo4j"][0], guide.NEO4J_BOLT_PORT)
                    no_auth, wrong = unauthenticated_refused(f"bolt://{host}:{port}")
                    facts["neo4j_unauthenticated_refused"] = no_auth
                    facts["neo4j_wrong_password_refused"] = wrong
                except HelixOpsError as exc:
                    errors["neo4j"] = str(exc)
            else:
                errors["neo4j"] = "no running neo4j container"
            if by_service.get("redis"):
                try:
                    host, port = driver.probe_address(by_service["redis"][0], guide.REDIS_PORT)
                    facts["redis_unauthenticated_refused"] = RedisAcl(host, port).unauthenticated_refused()
                except HelixOpsError as exc:
                    errors["redis"] = str(exc)
            else:
                errors["redis"] = "no running redis container"
            if by_service.get(nginx_service):
                try:
                    facts["live_nginx_conf"] = _read_file(by_service[nginx_service][0], "/etc/nginx/nginx.conf")
                except Exception as exc:  # noqa: BLE001
                    errors["nginx"] = f"cannot read /etc/nginx/nginx.conf: {type(exc).__name__}"
            else:
                errors["nginx"] = "no running load balancer"
    else:
        for key in ("containers", "neo4j", "redis", "nginx"):
            errors[key] = "live checks of a Kubernetes target are not implemented yet (render-only)"
    facts["gather_errors"] = errors
    return AuditFacts(**facts)


@task(name="audit-environment", retries=1, retry_delay_seconds=2, timeout_seconds=180, cache_policy=NO_CACHE)
def audit_environment(descriptor: Descriptor, engine_url: str | None, exceptions: Mapping[str, str] | None = None,
                      max_secret_age_days: int = DEFAULT_MAX_SECRET_AGE_DAYS) -> AuditReport:
    """Gather the facts and evaluate the checklist (returns the report: findings only, no secret)."""
    return evaluate(gather_facts(descriptor, engine_url), exceptions, max_secret_age_days)


def publish(report: AuditReport, override_reason: str | None = None) -> None:
    """The report as a markdown artifact (``audit-<env>``), with the override reason when one was given."""
    text = report.markdown()
    if override_reason:
        text += f"\n**Override**: deploy allowed despite the failures above. Reason: {override_reason}\n"
    create_markdown_artifact(text, key=f"audit-{report.environment}",
                             description=f"security checklist of {report.environment}")


def require_audit_pass(descriptor: Descriptor, engine_url: str | None = None, *,
                       override_reason: str | None = None, exceptions: Mapping[str, str] | None = None,
                       max_secret_age_days: int = DEFAULT_MAX_SECRET_AGE_DAYS) -> AuditReport:
    """deploy-helix's prod gate: audit the environment and raise :class:`AuditFailed` while a required item
    fails, unless ``override_reason`` is given (then the deploy goes on and the reason is published with the
    report and logged as a warning). Call it inside a flow (it publishes an artifact).

    Example (deploy-helix, before applying the plan in prod)::

        if desc.environment == "prod":
            require_audit_pass(desc, engine_url, override_reason=audit_override or None)
    """
    logger = get_run_logger()
    report = audit_environment(descriptor, engine_url, exceptions, max_secret_age_days)
    blocking = report.blocking()
    publish(report, override_reason if blocking else None)
    if not blocking:
        logger.info("security audit of %s passed (%s)", report.environment, report.counts())
        return report
    if override_reason and override_reason.strip():
        logger.warning("security audit of %s fails %s; overridden: %s", report.environment,
                       ", ".join(f.item.id for f in blocking), override_reason.strip())
        return report
    raise AuditFailed(report.environment, blocking)
