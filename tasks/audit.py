"""Tasks of audit-helix: gather the facts the checklist needs (descriptor, renderings, credential blocks, the
live target: an engine's containers, or a Kubernetes namespace through its API server), and the gate
deploy-helix calls in prod.

Secrets are reduced to :class:`helix_ops.audit_facts.SecretFacts` inside :func:`gather_facts`; nothing returned,
logged or published holds a value.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from helix_ops.audit import DEFAULT_MAX_SECRET_AGE_DAYS, AuditFailed, AuditReport, evaluate
from helix_ops.audit_facts import AuditFacts, ContainerFacts, secret_facts
from helix_ops.audit_kubernetes import service_facts, workload_container_facts
from helix_ops.descriptor import Descriptor
from helix_ops.errors import HelixOpsError

if TYPE_CHECKING:
    from drivers.target import Target


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


def gather_facts(descriptor: Descriptor, target: Target, nginx_service: str = "nginx") -> AuditFacts:
    """Everything the checklist looks at; a fact that cannot be gathered is left ``None`` with the reason.

    ``target`` (``tasks.target.target_for``) is where the environment runs: its live facts come from
    :func:`_engine_facts` or :func:`_kube_facts` (the one place that looks at ``target.kind``)."""
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
    live = {"engine": _engine_facts, "kubernetes": _kube_facts}.get(target.kind)
    if live is None:
        for key in LIVE_KEYS:
            errors[key] = f"no live checks for a {target.kind} target"
    else:
        facts.update(live(descriptor, target, errors, nginx_service))
    facts["gather_errors"] = errors
    return AuditFacts(**facts)


LIVE_KEYS = ("containers", "neo4j", "redis", "nginx", "network", "configmaps", "rbac")
"""The keys of ``gather_errors`` a live target fills (why a live fact is missing)."""


def _engine_facts(descriptor: Descriptor, target: Target, errors: dict[str, str],
                  nginx_service: str) -> dict[str, Any]:
    """The live facts of an engine target: its containers, Bolt/RESP logins and the load balancer's conf."""
    from drivers.neo4j_users import unauthenticated_refused
    from drivers.redis_acl import RedisAcl
    from helix_ops import guide

    facts: dict[str, Any] = {}
    try:
        driver = target.driver()
    except HelixOpsError as exc:
        for key in ("containers", "neo4j", "redis", "nginx"):
            errors[key] = str(exc)
        return facts
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
    return facts


def _kube_facts(descriptor: Descriptor, target: Target, errors: dict[str, str],
                nginx_service: str) -> dict[str, Any]:
    """The live facts of a Kubernetes target, through the API server: NetworkPolicies and Services, every
    workload container (image, securityContext), ConfigMaps against the blocks' secret values (reduced to
    ConfigMap/key names here), helix-ops' Role against deployments/rbac/role.yaml; then Bolt and RESP logins
    through ``target.endpoint`` (a port-forward). Each group fails on its own, with its reason."""
    facts: dict[str, Any] = {}
    try:
        driver = target.driver()
    except HelixOpsError as exc:
        for key in ("containers", "network", "configmaps", "rbac"):
            errors[key] = str(exc)
    else:
        try:
            facts.update(_kube_reads(descriptor, driver, errors))
        finally:
            driver.close()
    facts.update(_auth_facts(target, errors))
    return facts


def _kube_reads(descriptor: Descriptor, driver, errors: dict[str, str]) -> dict[str, Any]:
    from drivers import kube_audit

    facts: dict[str, Any] = {}
    try:
        facts["live_network_policies"] = kube_audit.network_policies(driver)
        facts["services"] = service_facts(kube_audit.services(driver))
    except HelixOpsError as exc:
        errors["network"] = str(exc)
    try:
        facts["containers"] = workload_container_facts([*kube_audit.workloads(driver), *kube_audit.pods(driver)])
    except HelixOpsError as exc:
        errors["containers"] = str(exc)
    try:
        values = _secret_values(descriptor)
    except Exception as exc:  # noqa: BLE001 - the message could name a block, never a value; keep the type
        errors["configmaps"] = f"credential blocks do not load ({type(exc).__name__}): nothing to compare"
    else:
        try:
            facts["configmap_leaks"] = tuple(kube_audit.configmap_leaks(kube_audit.config_maps(driver), values))
        except HelixOpsError as exc:
            errors["configmaps"] = str(exc)
        finally:
            values = {}
    try:
        name, allowed = kube_audit.allowed_role()
        facts["role_name"], facts["allowed_role_rules"] = name, tuple(allowed)
        facts["role_rules"] = tuple(kube_audit.role_rules(driver, name))
    except HelixOpsError as exc:
        errors["rbac"] = str(exc)
    except (OSError, ValueError) as exc:
        errors["rbac"] = f"cannot read deployments/rbac/role.yaml: {exc}"
    return facts


def _secret_values(descriptor: Descriptor) -> dict[str, str]:
    """Every secret value of the environment (its blocks), to look for in ConfigMaps. Stays in this task."""
    from blocks.secrets import load_environment_secrets, secret_values

    secrets = load_environment_secrets(descriptor)
    values = dict(secret_values(secrets))
    if secrets.anthropic_placeholder:
        values.pop("anthropic-api-key", None)
    if secrets.neo4j_alternate_password is not None:
        values["neo4j-alternate-password"] = secrets.neo4j_alternate_password.get_secret_value()
    return values


def _auth_facts(target: Target, errors: dict[str, str]) -> dict[str, Any]:
    """Bolt logins without / with a wrong password and a PING without AUTH, reached through
    ``target.endpoint`` (on Kubernetes a port-forward through the API server to a ready pod)."""
    from drivers.neo4j_users import unauthenticated_refused
    from drivers.redis_acl import RedisAcl
    from helix_ops import guide

    facts: dict[str, Any] = {}
    try:
        with target.endpoint("neo4j", guide.NEO4J_BOLT_PORT) as (host, port):
            no_auth, wrong = unauthenticated_refused(f"bolt://{host}:{port}")
        facts["neo4j_unauthenticated_refused"] = no_auth
        facts["neo4j_wrong_password_refused"] = wrong
    except Exception as exc:  # noqa: BLE001 - unreachable is a finding ("not checked"), not a crash
        errors["neo4j"] = _why(exc)
    try:
        with target.endpoint("redis", guide.REDIS_PORT) as (host, port):
            facts["redis_unauthenticated_refused"] = RedisAcl(host, port).unauthenticated_refused()
    except Exception as exc:  # noqa: BLE001
        errors["redis"] = _why(exc)
    return facts


def _why(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, HelixOpsError) else f"{type(exc).__name__}: {exc}"


@task(name="audit-environment", retries=1, retry_delay_seconds=2, timeout_seconds=180, cache_policy=NO_CACHE)
def audit_environment(descriptor: Descriptor, target: Target, exceptions: Mapping[str, str] | None = None,
                      max_secret_age_days: int = DEFAULT_MAX_SECRET_AGE_DAYS) -> AuditReport:
    """Gather the facts and evaluate the checklist (returns the report: findings only, no secret)."""
    return evaluate(gather_facts(descriptor, target), exceptions, max_secret_age_days)


def publish(report: AuditReport, override_reason: str | None = None) -> None:
    """The report as a markdown artifact (``audit-<env>``), with the override reason when one was given."""
    text = report.markdown()
    if override_reason:
        text += f"\n**Override**: deploy allowed despite the failures above. Reason: {override_reason}\n"
    create_markdown_artifact(text, key=f"audit-{report.environment}",
                             description=f"security checklist of {report.environment}")


def require_audit_pass(descriptor: Descriptor, target: Target | str | None = None, *,
                       override_reason: str | None = None, exceptions: Mapping[str, str] | None = None,
                       max_secret_age_days: int = DEFAULT_MAX_SECRET_AGE_DAYS) -> AuditReport:
    """deploy-helix's prod gate: audit the environment on ``target`` and raise :class:`AuditFailed` while a
    required item fails, unless ``override_reason`` is given (then the deploy goes on and the reason is
    published with the report and logged as a warning). Call it inside a flow (it publishes an artifact).

    ``target`` is the flow's ``tasks.target.target_for(desc, Connection(...))``.

    Example (deploy-helix, before applying the plan in prod)::

        if desc.environment == "prod":
            require_audit_pass(desc, target, override_reason=audit_override or None)
    """
    logger = get_run_logger()
    report = audit_environment(descriptor, target, exceptions, max_secret_age_days)
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
