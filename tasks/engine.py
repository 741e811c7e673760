"""Prefect tasks over the container-engine driver: one verb on one object each, with retries and timeouts.

Tasks that see secrets use ``cache_policy=NO_CACHE`` and return no secret. A task gets an ``EngineTarget``
(plain data) and connects itself, so nothing unpicklable crosses a task boundary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from drivers.engine import EngineDriver, bolt_check, http_check, redis_check
from helix_ops.descriptor import Descriptor
from helix_ops.plan import CurrentState


def secret_env(descriptor: Descriptor) -> Mapping[str, str]:
    """The environment's secrets as the rendering's ``${VAR}`` names, loaded from its blocks (never returned).

    NEO4J_USER comes with NEO4J_PASSWORD from the Neo4j block, so a replica created in the middle of a rotation
    (consumers on the bridge user) gets a login that works."""
    from blocks.secrets import compose_env, load_environment_secrets

    return compose_env(load_environment_secrets(descriptor))


@dataclass(frozen=True)
class EngineTarget:
    """Where and as whom to act: engine address, project, environment, extra container labels."""

    base_url: str | None
    project: str
    environment: str
    extra_labels: Mapping[str, str] = field(default_factory=dict)

    def driver(self) -> EngineDriver:
        return EngineDriver.connect(self.base_url, self.project, self.environment, self.extra_labels)


@dataclass(frozen=True)
class ProbeSpec:
    """How the flow checks a service's health: ``http`` (port, path), ``bolt`` or ``redis`` (port)."""

    kind: str
    port: int
    path: str | None = None


@task(name="connect-engine", retries=3, retry_delay_seconds=[1, 3, 5], timeout_seconds=60, cache_policy=NO_CACHE)
def connect_engine(target: EngineTarget) -> dict[str, str]:
    """Ping the engine (retried: an engine that is down fails after the retries with a clear error)."""
    return target.driver().version()


@task(name="read-current-state", retries=2, retry_delay_seconds=2, timeout_seconds=60, cache_policy=NO_CACHE)
def read_current_state(target: EngineTarget) -> CurrentState:
    """The project's services, networks and volumes as they run now (from container labels)."""
    return target.driver().current_state()


@task(name="apply-network", retries=2, retry_delay_seconds=2, timeout_seconds=60, cache_policy=NO_CACHE)
def apply_network(target: EngineTarget, name: str, spec: Mapping[str, Any], spec_hash: str) -> str:
    return target.driver().ensure_network(name, spec, spec_hash)


@task(name="apply-volume", retries=2, retry_delay_seconds=2, timeout_seconds=60, cache_policy=NO_CACHE)
def apply_volume(target: EngineTarget, name: str, spec_hash: str) -> str:
    return target.driver().ensure_volume(name, spec_hash)


def health_check(driver: EngineDriver, container, probe: ProbeSpec, secrets: Mapping[str, str]):
    """The check of ``container``'s health (``drivers.engine.http_check`` / ``bolt_check`` / ``redis_check``)
    through its loopback probe port; ``secrets`` is :func:`secret_env`'s mapping (the Bolt login is the
    blocks' user and password, the bridge user's during a rotation)."""
    host, port = driver.probe_address(container, probe.port)
    if probe.kind == "http":
        return http_check(host, port, probe.path or "/")
    if probe.kind == "bolt":
        return bolt_check(host, port, secrets.get("NEO4J_USER") or "neo4j", secrets["NEO4J_PASSWORD"])
    return redis_check(host, port, secrets["REDIS_PASSWORD"])


def balancer_conf(descriptor: Descriptor, members: list[str] | None) -> str:
    """The load balancer's nginx.conf for ``descriptor``, sending to ``members`` (dashboard replica names)."""
    from helix_ops.render.nginx import render_nginx_conf
    from helix_ops.stack import build_stack

    return render_nginx_conf(build_stack(descriptor), members=members)


def dashboard_members(driver: EngineDriver) -> list[str]:
    """The running dashboard replicas, by name, in a stable order."""
    return sorted(c.name for c in driver.containers("dashboard") if c.status == "running")


@task(name="apply-service", timeout_seconds=900, cache_policy=NO_CACHE)
def apply_service(target: EngineTarget, name: str, spec: Mapping[str, Any], spec_hash: str,
                  probe: ProbeSpec, descriptor: Descriptor, health_deadline_s: float = 180,
                  drain_s: float = 1.0, roll_id: str | None = None) -> dict[str, Any]:
    """Roll ``name`` to ``spec`` with health gates (see ``drivers.rollout.roll_service``).

    ``roll_id`` re-creates every replica even when it runs ``spec`` already (a restart that re-reads the
    blocks: rotate-helix-secrets); a rerun with the same ``roll_id`` keeps the replicas that roll created.

    Stateless services start each new replica before an old one goes; the dashboard's replicas also join and
    leave the load balancer by graceful reloads. The single writer, the databases and the load balancer stop
    first, with their downtime measured. A replica whose health does not pass by the deadline fails the task
    with the service and what was last seen; replicas that were serving keep serving.

    The secrets are loaded here from the blocks ``descriptor`` names, never passed in, logged or returned.
    """
    from drivers.rollout import RolloutFailed, roll_service

    logger = get_run_logger()
    secrets = secret_env(descriptor)
    driver = target.driver()
    files = {}
    if name == "nginx":
        files = {"nginx.conf": balancer_conf(descriptor, driver.network_addresses(dashboard_members(driver)) or None)}
    hook = None
    if name == "dashboard":
        def hook(members: list[str]) -> None:  # upstreams by address: see EngineDriver.network_addresses
            reloaded = driver.update_load_balancer(balancer_conf(descriptor, driver.network_addresses(members)))
            if reloaded:
                logger.info("load balancer now sends to %s", ", ".join(members))

    def health(container):
        return health_check(driver, container, probe, secrets)

    try:
        report = roll_service(driver, name, spec, spec_hash, files, probe.port, health, secrets, health_deadline_s,
                              members_hook=hook, drain_s=drain_s, log=logger.info, roll_id=roll_id)
    except RolloutFailed as failed:
        raise failed.cause from None
    return {**report.as_dict(), "image": spec["image"], "replicas": len(report.started) + len(report.kept)}


@task(name="remove-service", retries=1, timeout_seconds=120, cache_policy=NO_CACHE)
def remove_service(target: EngineTarget, name: str) -> list[str]:
    return target.driver().remove_service(name)


@task(name="neo4j-endpoint", retries=1, timeout_seconds=60, cache_policy=NO_CACHE)
def neo4j_endpoint(target: EngineTarget, service: str = "neo4j", port: int = 7687) -> str:
    """The Bolt URI (on loopback) where the flow reaches the environment's Neo4j."""
    driver = target.driver()
    running = [c for c in driver.containers(service) if c.status == "running"]
    if not running:
        raise RuntimeError(f"no running {service} container in project {target.project}")
    host, host_port = driver.probe_address(running[0], port)
    return f"bolt://{host}:{host_port}"


@task(name="service-status", retries=1, timeout_seconds=120, cache_policy=NO_CACHE)
def service_status(target: EngineTarget, probes: Mapping[str, ProbeSpec], descriptor: Descriptor) -> list[dict]:
    """Per service: image, running replicas, health (every replica checked now, in parallel) and the loopback
    endpoint of its probe."""
    from concurrent.futures import ThreadPoolExecutor

    secrets = secret_env(descriptor)
    driver = target.driver()
    running: dict[str, list] = {name: [] for name in probes}
    for c in driver.containers():
        name = c.labels.get("helix-ops.service")
        if name in running and c.status == "running":
            running[name].append(c)

    def check(name: str, container) -> tuple[str, str]:
        probe = probes[name]
        host, port = driver.probe_address(container, probe.port)
        try:
            return f"{host}:{port}", health_check(driver, container, probe, secrets)()
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return f"{host}:{port}", f"unhealthy: {exc}"

    jobs = [(name, c) for name, cs in running.items() for c in cs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda job: check(*job), jobs))
    by_service: dict[str, list[tuple[str, str]]] = {name: [] for name in probes}
    for (name, _), result in zip(jobs, results):
        by_service[name].append(result)
    rows = []
    for name in probes:
        checks = by_service[name]
        bad = [h for _, h in checks if h.startswith("unhealthy")]
        health = bad[0] if bad else (checks[0][1] if checks else "absent")
        image = running[name][0].labels.get("helix-ops.image", "") if running[name] else ""
        rows.append({"service": name, "image": image, "replicas": len(checks), "health": health,
                     "endpoint": checks[0][0] if checks else ""})
    return rows
