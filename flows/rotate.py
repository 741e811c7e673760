"""``rotate-helix-secrets``: zero-downtime rotation of the Redis password, the Neo4j login and NEXTAUTH_SECRET.

Load the descriptor → hold the environment lease → find the live Redis and Neo4j → run (or resume) the
staged protocol of ``helix_ops.rotation`` (``tasks/rotate.drive_rotation``), whose consumer rolls go through
deploy's and upgrade's rolling machinery (``tasks.engine.apply_service`` with a roll id: every replica
re-created from the descriptor's spec, health-gated, so it reads the blocks' new values) → publish a summary
artifact (no secret) as the audit record.

Redis in Sentinel mode: while both passwords are valid (``auth-set``) every node's ``masterauth`` and every
Sentinel's ``auth-pass`` switch to the new password live; the Redis roll then also re-creates the replicas of
the moment and the Sentinels (their start scripts build the config from the container's environment, so a
restart keeps the new password only in a container created from the blocks' new value); the old password is
removed last and the Sentinels must then see the master and replicas usable. The primary of the moment is
not re-created (that would stop the writes): its ``masterauth`` is set live only.

Crash safety: the protocol state lives in a Prefect block, written after every step; a new run resumes it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.runtime import flow_run

from flows.deploy import descriptor_path
from helix_ops import guide
from helix_ops.descriptor import Descriptor, load_descriptor
from helix_ops.errors import DriverError
from helix_ops.plan import compose_objects, template_hash
from helix_ops.render.compose import member_names, render_compose
from helix_ops.stack import build_stack
from tasks.engine import EngineTarget, ProbeSpec, apply_service, connect_engine
from tasks.lease import environment_lease
from tasks.rotate import RotationTarget, drive_rotation


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


@task(name="running-services", retries=1, timeout_seconds=60, cache_policy=NO_CACHE)
def running_services(target: EngineTarget) -> list[str]:
    """The services of the project with at least one running replica."""
    return sorted({c.labels.get("helix-ops.service", "") for c in target.driver().containers()
                   if c.status == "running"} - {""})


def roll_consumers(target: EngineTarget, descriptor: Descriptor, services: tuple[str, ...], roll_id: str,
                   health_timeout_s: float, parallelism: int = 1) -> list[dict[str, Any]]:
    """Restart the running ``services`` through the rolling machinery of deploy and upgrade
    (``tasks.engine.apply_service`` with ``roll_id``): every replica is re-created from the descriptor's spec,
    so it reads the blocks' current credentials, start-first behind health gates (the load balancer follows
    the dashboard's replicas; mcp-graph, the single writer, stops first). ``parallelism`` services roll at
    once (they are independent consumers). A service that does not run is not started."""
    stack = build_stack(descriptor)
    specs = {o.identity: o.spec for o in compose_objects(render_compose(stack))}
    base = {member: svc.name for svc in stack.services for member in member_names(svc)}  # redis-2 → redis
    running = set(running_services(target))
    todo = [name for name in services if name in running]
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


def summary_markdown(env: str, result: dict[str, Any]) -> str:
    lines = [f"# Secret rotation of `{env}`", "", f"rotation id `{result['rotation_id']}`",
             f"resumed: {', '.join(result['resumed']) or 'nothing'}; rotated: {', '.join(result['rotated']) or 'nothing'}",
             "", "| roll | services | completes |", "|---|---|---|"]
    for i, r in enumerate(result["rolls"], 1):
        lines.append(f"| {i} | {', '.join(r['services'])} | "
                     f"{', '.join(f'{c}:{s}' for c, s in r['completes'].items())} |")
    lines += ["", "Steps: " + ", ".join(f"`{s}`" for s in result["steps"])]
    return "\n".join(lines) + "\n"


@flow(name="rotate-helix-secrets", log_prints=False)
def rotate_helix_secrets(env: str = "local", descriptor: str | None = None, engine_url: str | None = None,
                         credentials: list[str] | None = None, env_file: str | None = None,
                         health_timeout_s: float = 180, lease_ttl_s: float = 120, lease_wait_s: float = 1800,
                         container_labels: dict[str, str] | None = None, roll_parallelism: int = 1) -> dict[str, Any]:
    """Rotate ``credentials`` (default: redis, neo4j, nextauth) of one environment with no downtime.

    A rotation left unfinished by a crashed run is resumed first. The blocks (and ``env_file``, mode 0600, when
    given) hold the new values at the end; ``rotated_at`` records when. Nothing secret is logged or returned.

    Args:
        env / descriptor: the environment (``deployments/<env>.yaml`` unless a path is given).
        engine_url: the Docker Engine API address.
        credentials: a subset of ``["redis", "neo4j", "nextauth"]``.
        env_file: the Compose ``.env`` to keep in step.
        health_timeout_s: how long each restarted replica may take to become healthy.
        container_labels: extra labels on restarted containers (the test bed's clean-up labels).
        roll_parallelism: how many consumer services roll at once (1: one after the other).

    Example: ``prefect deployment run rotate-helix-secrets/prod`` (scheduled monthly).
    """
    logger = get_run_logger()
    desc = load_descriptor(descriptor_path(env, descriptor))
    target = EngineTarget(engine_url, desc.project, desc.environment, container_labels or {})
    connect_engine(target)
    owner = f"flow-run/{flow_run.get_id() or 'local'}"
    with environment_lease(desc.environment, owner, ttl_s=lease_ttl_s, wait_s=lease_wait_s):
        def find_target() -> RotationTarget:
            endpoints = rotation_endpoints(target)
            return RotationTarget(desc, tuple(tuple(e) for e in endpoints["redis"]), endpoints["neo4j"], env_file,
                                  log=logger.info, redis_services=tuple(endpoints["redis_services"]),
                                  sentinel_endpoints=tuple(tuple(e) for e in endpoints["sentinels"]),
                                  sentinel_services=tuple(endpoints["sentinel_services"]), refresh=find_target)

        rt = find_target()

        def roll(services: tuple[str, ...], roll_id: str) -> None:
            roll_consumers(target, desc, services, roll_id, health_timeout_s, roll_parallelism)

        result = drive_rotation(rt, credentials, roll)
    create_markdown_artifact(summary_markdown(desc.environment, result), key=f"rotation-{desc.environment}",
                             description=f"rotate-helix-secrets for {desc.environment}")
    return {"environment": desc.environment, **result}
