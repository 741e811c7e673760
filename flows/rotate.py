"""``rotate-helix-secrets``: zero-downtime rotation of the Redis password, the Neo4j login and NEXTAUTH_SECRET.

Load the descriptor → hold the environment lease → find the live Redis and Neo4j → run (or resume) the
staged protocol of ``helix_ops.rotation`` (``tasks/rotate.drive_rotation``), whose consumer rolls are
health-gated rolling restarts of the same specs (new containers read the blocks' new values) → publish a
summary artifact (no secret) as the audit record.

Crash safety: the protocol state lives in a Prefect block, written after every step; a new run resumes it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.deploy import descriptor_path
from helix_ops import guide
from helix_ops.descriptor import Descriptor, load_descriptor
from helix_ops.errors import DriverError
from tasks.engine import EngineTarget, ProbeSpec, connect_engine
from tasks.lease import environment_lease
from tasks.rotate import RotationTarget, drive_rotation


@task(name="rotation-endpoints", retries=1, timeout_seconds=60, cache_policy=NO_CACHE)
def rotation_endpoints(target: EngineTarget) -> dict[str, Any]:
    """Loopback addresses of every running Redis server (``redis``, ``redis-2``, …) and of Neo4j's Bolt."""
    driver = target.driver()
    redis, neo4j = [], []
    for c in driver.containers():
        service = c.labels.get("helix-ops.service", "")
        if c.status != "running":
            continue
        if service == "redis" or (service.startswith("redis-") and service[6:].isdigit()):
            redis.append(driver.probe_address(c, guide.REDIS_PORT))
        elif service == "neo4j":
            neo4j.append(driver.probe_address(c, guide.NEO4J_BOLT_PORT))
    if not redis or not neo4j:
        raise DriverError(f"project {target.project} has no running {'redis' if not redis else 'neo4j'}",
                          hint="deploy the environment first (deploy-helix)")
    return {"redis": sorted(redis), "neo4j": f"bolt://{neo4j[0][0]}:{neo4j[0][1]}"}


@task(name="restart-service", timeout_seconds=900, cache_policy=NO_CACHE)
def restart_service(target: EngineTarget, descriptor: Descriptor, name: str, roll_id: str,
                    health_deadline_s: float = 180) -> dict[str, Any]:
    """Replace every replica of ``name`` by one created from the same spec (so it reads the blocks' current
    secrets), gated on health: start-first for stateless services (old replicas go once the new ones are
    healthy; the load balancer is pointed at the new dashboard replicas before the old ones go), stop-first
    for the single writer. Labels (spec hash) are kept, so deploy-helix still sees no change."""
    from blocks.secrets import compose_env, load_environment_secrets
    from drivers.engine import HASH_LABEL, container_plans
    from helix_ops.render.compose import render_compose
    from helix_ops.stack import build_stack
    from tasks.engine import _health_check

    stack = build_stack(descriptor)
    spec = dict(render_compose(stack)["services"][name])
    # The stack names the Neo4j user literally (neo4j); during a rotation the consumers log in as the bridge
    # user, so the restarted replicas take the user from the block like the password (same value at rest).
    env = dict(spec.get("environment", {}))
    if "NEO4J_USER" in env:
        env["NEO4J_USER"] = "${NEO4J_USER}"
        spec["environment"] = env
    svc = stack.service(name)
    probe = ProbeSpec(svc.probe.kind, svc.probe.port, svc.probe.path)
    driver = target.driver()
    old = [c for c in driver.containers(name)]
    if not old:
        return {"service": name, "restarted": 0, "note": "not running: nothing to roll"}
    spec_hash = old[0].labels.get(HASH_LABEL, "")
    secrets = compose_env(load_environment_secrets(descriptor))
    plans = [dataclasses.replace(p, name=f"{p.name}-{roll_id}")
             for p in container_plans(target.project, target.environment, name, spec, spec_hash, {}, probe.port,
                                      target.extra_labels)]
    start_first = spec.get("deploy", {}).get("update_config", {}).get("order") == "start-first"
    if not start_first:
        driver.remove(old)
    new = []
    for plan in plans:
        container = driver.create_container(plan, secrets)
        driver.wait_healthy(container, _health_check(driver, container, probe, secrets),
                            f"{name} ({plan.name}) to be healthy", health_deadline_s)
        new.append(container)
    if name == "dashboard":
        _point_load_balancer(driver, stack, [c.name for c in new] + [c.name for c in old if start_first])
    if start_first:
        driver.remove(old)
    if name == "dashboard":
        _point_load_balancer(driver, stack, [c.name for c in new])
    return {"service": name, "restarted": len(new), "containers": [c.name for c in new]}


def _point_load_balancer(driver, stack, members: list[str]) -> None:
    """Write nginx.conf naming ``members`` into the running load balancer and reload it gracefully."""
    from drivers.engine import _tar_of
    from helix_ops.render.nginx import render_nginx_conf

    conf = render_nginx_conf(stack, members=sorted(members))
    for c in driver.containers("nginx"):
        if c.status != "running":
            continue
        c.put_archive("/", _tar_of({"/etc/nginx/nginx.conf": conf}))
        for argv in (["nginx", "-t", "-q"], ["nginx", "-s", "reload"]):
            result = c.exec_run(argv)
            if result.exit_code != 0:
                raise DriverError(f"{' '.join(argv)} in {c.name} failed", hint="check the rendered nginx.conf")


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
                         container_labels: dict[str, str] | None = None) -> dict[str, Any]:
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

    Example: ``prefect deployment run rotate-helix-secrets/prod`` (scheduled monthly).
    """
    logger = get_run_logger()
    desc = load_descriptor(descriptor_path(env, descriptor))
    target = EngineTarget(engine_url, desc.project, desc.environment, container_labels or {})
    connect_engine(target)
    owner = f"flow-run/{flow_run.get_id() or 'local'}"
    with environment_lease(desc.environment, owner, ttl_s=lease_ttl_s, wait_s=lease_wait_s):
        endpoints = rotation_endpoints(target)
        rt = RotationTarget(desc, tuple(tuple(e) for e in endpoints["redis"]), endpoints["neo4j"], env_file,
                            log=logger.info)

        def roll(services: tuple[str, ...], roll_id: str) -> None:
            for name in services:
                restart_service(target, desc, name, roll_id, health_timeout_s)

        result = drive_rotation(rt, credentials, roll)
    create_markdown_artifact(summary_markdown(desc.environment, result), key=f"rotation-{desc.environment}",
                             description=f"rotate-helix-secrets for {desc.environment}")
    return {"environment": desc.environment, **result}
