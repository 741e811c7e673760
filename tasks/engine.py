"""Prefect tasks over the container-engine driver: one verb on one object each, with retries and timeouts.

Tasks that see secrets use ``cache_policy=NO_CACHE`` and return no secret. A task gets an ``EngineTarget``
(plain data) and connects itself, so nothing unpicklable crosses a task boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from prefect.futures import wait

from drivers.engine import EngineDriver
from drivers.engine_health import bolt_check, http_check, redis_check
from drivers.target_engine import EngineTarget
from helix_ops import guide
from helix_ops.descriptor import Descriptor
from helix_ops.errors import DriverError
from helix_ops.plan import CurrentState, compose_objects, template_hash
from helix_ops.render.compose import member_names, render_compose
from helix_ops.stack import build_stack, dependency_waves


def secret_env(descriptor: Descriptor) -> Mapping[str, str]:
    """The environment's secrets as the rendering's ``${VAR}`` names, loaded from its blocks (never returned).

    NEO4J_USER comes with NEO4J_PASSWORD from the Neo4j block, so a replica created in the middle of a rotation
    (consumers on the bridge user) gets a login that works."""
    from blocks.secrets import compose_env, load_environment_secrets

    return compose_env(load_environment_secrets(descriptor))


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
    """The check of ``container``'s health (``drivers.engine_health.http_check`` / ``bolt_check`` / ``redis_check``)
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


# --- deploy-helix's three steps on the engine (tasks.target.deployer_for picks them by the target's kind) ----

def plan_deploy(target: EngineTarget, desc: Descriptor, config_text: str | None) -> Any:
    """The deploy plan: the Compose rendering's containers, networks and volumes against the live labels."""
    from helix_ops.plan import compute_plan, engine_objects
    from helix_ops.render.compose import render_compose
    from helix_ops.stack import build_stack

    return compute_plan(engine_objects(render_compose(build_stack(desc))), read_current_state(target))


def apply_deploy(target: EngineTarget, desc: Descriptor, config_text: str | None, plan: Any, deadline_s: float,
                 log: Any = None) -> list[str]:
    """Carry out ``plan`` in its order (call from a flow): networks and volumes ensured, each service rolled
    with health gates (:func:`apply_service`), removed services last. Returns the names changed."""
    from helix_ops.plan import compose_objects, template_hash
    from helix_ops.render.compose import render_compose
    from helix_ops.stack import build_stack

    stack = build_stack(desc)
    by_identity = {o.identity: o for o in compose_objects(render_compose(stack))}
    changed: list[str] = []
    for change in plan.changes:
        kind, name = change.identity.split("/", 1)
        if change.action == "noop":
            continue
        if change.action == "delete":
            if kind == "service":
                remove_service(target, name)
                changed.append(name)
            continue
        obj = by_identity[change.identity]
        if kind == "network":
            apply_network(target, name, obj.spec, obj.spec_hash)
        elif kind == "volume":
            apply_volume(target, name, obj.spec_hash)
        else:
            svc = stack.service(name)
            apply_service(target, name, obj.spec, template_hash(obj.spec),
                          ProbeSpec(svc.probe.kind, svc.probe.port, svc.probe.path), desc,
                          health_deadline_s=deadline_s)
            changed.append(name)
    return changed


def deploy_status(target: EngineTarget, desc: Descriptor) -> list[dict[str, Any]]:
    """Per service: image, replicas, health, endpoint, and ``healthy`` (every replica answered its probe)."""
    from helix_ops.stack import build_stack

    probes = {s.name: ProbeSpec(s.probe.kind, s.probe.port, s.probe.path) for s in build_stack(desc).services}
    rows = service_status(target, probes, desc)
    return [{**r, "healthy": bool(r["health"]) and not r["health"].startswith(("unhealthy", "absent"))}
            for r in rows]


# --- rotate-helix-secrets' two steps on the engine ------------------------------------------------------------

def _member_of(service: str, base: str) -> bool:
    return service == base or (service.startswith(base + "-") and service[len(base) + 1:].isdigit())


@task(name="rotation-endpoints", retries=1, timeout_seconds=60, cache_policy=NO_CACHE)
def rotation_endpoints(target: EngineTarget) -> dict[str, Any]:
    """Loopback addresses of every running Redis server (``redis``, ``redis-2``, …), of every Sentinel
    (``redis-sentinel``, ``redis-sentinel-2``, …) and of Neo4j's Bolt (``None`` when no Neo4j runs: only a
    Neo4j rotation needs it, and says so)."""
    driver = target.driver()
    redis, sentinels, neo4j = [], [], []
    for c in driver.containers():
        service = c.labels.get("helix-ops.service", "")
        if c.status != "running":
            continue
        if _member_of(service, "redis"):
            redis.append((*driver.probe_address(c, guide.REDIS_PORT), service))
        elif _member_of(service, "redis-sentinel"):
            sentinels.append((*driver.probe_address(c, guide.SENTINEL_PORT), service))
        elif service == "neo4j":
            neo4j.append(driver.probe_address(c, guide.NEO4J_BOLT_PORT))
    if not redis:
        raise DriverError(f"project {target.project} has no running redis",
                          hint="deploy the environment first (deploy-helix)")
    redis.sort(key=lambda r: r[2])
    sentinels.sort(key=lambda r: r[2])
    return {"redis": [[h, p] for h, p, _ in redis], "redis_services": [s for _, _, s in redis],
            "sentinels": [[h, p] for h, p, _ in sentinels], "sentinel_services": [s for _, _, s in sentinels],
            "neo4j": f"bolt://{neo4j[0][0]}:{neo4j[0][1]}" if neo4j else None}


@task(name="deployed-services", retries=1, timeout_seconds=60, cache_policy=NO_CACHE)
def deployed_services(target: EngineTarget) -> list[str]:
    """The services of the project with at least one replica, running or stopped (a stop-first roll keeps the
    old replicas, stopped, until the new ones are healthy: a service whose roll was killed counts)."""
    return sorted({c.labels.get("helix-ops.service", "") for c in target.driver().containers()} - {""})


def roll_consumers(target: EngineTarget, descriptor: Descriptor, config_text: str | None,
                   services: tuple[str, ...], roll_id: str, health_timeout_s: float, parallelism: int = 1) -> list[dict[str, Any]]:
    """Restart the running ``services`` through the rolling machinery of deploy and upgrade
    (``tasks.engine.apply_service`` with ``roll_id``): every replica is re-created from the descriptor's spec,
    so it reads the blocks' current credentials, start-first behind health gates (the load balancer follows
    the dashboard's replicas; mcp-graph, the single writer, stops first). ``parallelism`` services roll at
    once (they are independent consumers). A service the environment does not have (no replica, running or
    stopped: e.g. the apps of a data-tier-only stack) is not started."""
    stack = build_stack(descriptor)
    specs = {o.identity: o.spec for o in compose_objects(render_compose(stack))}
    base = {member: svc.name for svc in stack.services for member in member_names(svc)}  # redis-2 → redis
    deployed = set(deployed_services(target))
    todo = [name for name in services if name in deployed]
    reports: list[dict[str, Any]] = []
    for i in range(0, len(todo), max(1, parallelism)):
        futures = []
        for name in todo[i:i + max(1, parallelism)]:
            spec = specs[f"service/{name}"]
            svc = stack.service(base[name])
            futures.append(apply_service.submit(target, name, spec, template_hash(spec),
                                                ProbeSpec(svc.probe.kind, svc.probe.port, svc.probe.path),
                                                descriptor, health_deadline_s=health_timeout_s, roll_id=roll_id))
        wait(futures)  # a failed service must not abandon the others mid-roll (mcp-graph stops first)
        reports += [f.result() for f in futures]
    return reports


@contextmanager
def rotation_access(target: EngineTarget) -> Iterator[Callable[[], dict[str, Any]]]:
    """For the body: a function that finds the rotation's endpoints anew (published ports; a roll that
    re-creates a Redis replica or a Sentinel changes its address)."""
    yield lambda: rotation_endpoints(target)


# --- upgrade-helix / scale-helix's steps on the engine ----------------------------------------------------------

def running_images(target: EngineTarget) -> dict[str, str]:
    """Service → the image its containers run now."""
    from helix_ops.changes import images_from_state

    return images_from_state(read_current_state(target))


def service_of(identity: str) -> str | None:
    """The service a plan identity rolls (``service/<name>``), or None for a network or volume."""
    kind, _, name = identity.partition("/")
    return name if kind == "service" else None


def is_rollout_failure(exc: Exception) -> bool:
    """Whether a failed roll is one the rollback answers (on the engine: every failure of a health gate)."""
    return True


def roll_services(target: EngineTarget, desired: Descriptor, config_text: str | None, changes: list[Any],
                  health_timeout_s: float, drain_s: float, parallel: bool = False
                  ) -> tuple[list[dict[str, Any]], list[str], dict[str, Exception]]:
    """Roll the services of ``changes`` (plan changes) to what ``desired`` renders, in dependency order, one
    service at a time; with ``parallel``, wave by wave (services whose dependencies are all in earlier waves
    roll at the same time). Stops after the first service (or wave) with a failure.
    Returns (reports, services done, failures by service)."""
    return _apply_services(target, desired, [service_of(c.identity) for c in changes], health_timeout_s, drain_s,
                           parallel)


def roll_back(target: EngineTarget, previous: Descriptor, config_text: str | None, done: list[str],
              failures: Mapping[str, Exception], health_timeout_s: float, drain_s: float) -> list[str]:
    """Roll the services done and the failing ones back to what ``previous`` renders; what could not be."""
    _, _, failed = _apply_services(target, previous, [*done, *failures], health_timeout_s, drain_s)
    return [f"{name}: {exc}" for name, exc in sorted(failed.items())]


def _apply_services(target: EngineTarget, desc: Descriptor, names: list[str], health_timeout_s: float,
                    drain_s: float, parallel: bool = False
                    ) -> tuple[list[dict[str, Any]], list[str], dict[str, Exception]]:
    stack = build_stack(desc)
    specs = {o.identity.split("/", 1)[1]: o.spec for o in compose_objects(render_compose(stack))
             if o.identity.startswith("service/")}
    reports: list[dict[str, Any]] = []
    done: list[str] = []
    waves = dependency_waves(stack, names) if parallel else [[n] for n in stack.names() if n in names]
    for wave in waves:
        futures = {}
        for name in wave:
            svc = stack.service(name)
            probe = ProbeSpec(svc.probe.kind, svc.probe.port, svc.probe.path)
            futures[name] = apply_service.submit(target, name, specs[name], template_hash(specs[name]), probe, desc,
                                                 health_deadline_s=health_timeout_s, drain_s=drain_s)
        failures: dict[str, Exception] = {}
        for name, future in futures.items():
            try:
                reports.append(future.result())
                done.append(name)
            except Exception as exc:  # noqa: BLE001 - collected, the caller rolls back
                failures[name] = exc
        if failures:
            return reports, done, failures
    return reports, done, {}
