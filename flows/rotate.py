"""``rotate-helix-secrets``: zero-downtime rotation of the Redis password, the Neo4j login and NEXTAUTH_SECRET.

Load the descriptor → hold the environment lease → find the live Redis and Neo4j → run (or resume) the
staged protocol of ``helix_ops.rotation`` (``tasks/rotate.drive_rotation``), whose consumer rolls go through
deploy's and upgrade's rolling machinery → publish a summary artifact (no secret) as the audit record.

On every target (``drivers/target.py``; the per-target steps are ``rotation_access`` and ``roll_consumers`` of
``tasks/engine.py`` and ``tasks/kube.py``): on the engine, Redis, its Sentinels and Neo4j are reached through
their published ports and consumers rolled by ``apply_service`` with a roll id (every replica re-created from
the descriptor's spec, health-gated, so it reads the blocks' new values); on Kubernetes, Redis and Neo4j are
reached through port-forwards, the ``helix-secrets`` Secret is written from the blocks and exactly the
workloads reading a changed value are rolled (their pod-template checksum), each gated on its rollout.

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

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from drivers.target import Connection
from tasks.lease import environment_lease
from tasks.rotate import RotationTarget, drive_rotation
from tasks.target import open_environment


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
                         container_labels: dict[str, str] | None = None, roll_parallelism: int = 1,
                         kubeconfig: str | None = None, kube_context: str | None = None,
                         cluster_block: str | None = None, docker_host_block: str | None = None) -> dict[str, Any]:
    """Rotate ``credentials`` (default: redis, neo4j, nextauth) of one environment with no downtime.

    A rotation left unfinished by a crashed run is resumed first. The blocks (and ``env_file``, mode 0600, when
    given) hold the new values at the end; ``rotated_at`` records when. Nothing secret is logged or returned.

    Args:
        env / descriptor: the environment (``deployments/<env>.yaml`` unless a path is given).
        engine_url / docker_host_block / kubeconfig / kube_context / cluster_block: how the target is reached
            (see deploy-helix).
        credentials: a subset of ``["redis", "neo4j", "nextauth"]``.
        env_file: the Compose ``.env`` to keep in step.
        health_timeout_s: how long each restarted replica may take to become healthy.
        container_labels: extra labels on restarted containers (the test bed's clean-up labels).
        roll_parallelism: how many consumer services roll at once (1: one after the other).

    Example: ``prefect deployment run rotate-helix-secrets/prod`` (scheduled monthly).
    """
    logger = get_run_logger()
    desc, config_text, target, steps = open_environment(env, descriptor, Connection(
        engine_url=engine_url, docker_host_block=docker_host_block, container_labels=container_labels or {},
        kubeconfig=kubeconfig, kube_context=kube_context, cluster_block=cluster_block))
    owner = f"flow-run/{flow_run.get_id() or 'local'}"
    with environment_lease(desc.environment, owner, ttl_s=lease_ttl_s, wait_s=lease_wait_s), \
            steps.rotation_access(target) as find_endpoints:
        def find_target() -> RotationTarget:
            endpoints = find_endpoints()
            return RotationTarget(desc, tuple(tuple(e) for e in endpoints["redis"]), endpoints["neo4j"], env_file,
                                  log=logger.info, redis_services=tuple(endpoints["redis_services"]),
                                  sentinel_endpoints=tuple(tuple(e) for e in endpoints["sentinels"]),
                                  sentinel_services=tuple(endpoints["sentinel_services"]), refresh=find_target)

        rt = find_target()

        def roll(services: tuple[str, ...], roll_id: str) -> None:
            steps.roll_consumers(target, desc, config_text, services, roll_id, health_timeout_s, roll_parallelism)

        result = drive_rotation(rt, credentials, roll)
    create_markdown_artifact(summary_markdown(desc.environment, result), key=f"rotation-{desc.environment}",
                             description=f"rotate-helix-secrets for {desc.environment}")
    return {"environment": desc.environment, **result}
