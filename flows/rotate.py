"""``rotate-helix-secrets``: zero-downtime rotation of the Redis password, the Neo4j login and NEXTAUTH_SECRET.

Load the descriptor → the change gate (``flows/gate.py``: plan, approval by the environment's policy, the
environment lease, the change record) → find the live Redis and Neo4j → run (or resume) the
staged protocol of ``helix_ops.rotation`` (:func:`drive_rotation`, over the step tasks of ``tasks/rotate.py``), whose consumer rolls go through
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

import os
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.params import Credential, EnvName, Parallelism, run_name
from drivers.target import Connection
from flows.gate import Applied, Change, Proposal, run_change, who_asked
from helix_ops import rotation
from helix_ops.errors import ChangeRefused, HelixOpsError
from helix_ops.rotation import CRASH_ENV, parse_crash_point
from tasks.rotate import RotationTarget, cred_state, now, roll_followers, rotation_step, write_env
from tasks.target import open_environment


class RotationRefused(ChangeRefused):
    """The approval the environment's policy asks for was not given: nothing rotated."""


class InjectedCrash(HelixOpsError):
    """Raised where ``HELIX_ROTATE_CRASH_AFTER`` asks (tests of crash-resume)."""


def drive_rotation(t: RotationTarget, credentials: Sequence[str] | None,
                   roll: Callable[[tuple[str, ...], str], Any]) -> dict[str, Any]:
    """Run (or resume) the rotation of ``credentials`` to the end; returns what happened (no secret).

    A rotation found in progress is finished first, whatever ``credentials`` says (the credentials it has
    already finished are not started over). ``roll(services, roll_id)`` restarts those services so they read
    the blocks; it is called once per roll batch (two for a full rotation), and again with the same
    ``roll_id`` when a resumed run finds that roll done but not recorded (its replicas are then kept).
    """
    from blocks.rotation_state import load_rotation_state, save_rotation_state

    d = t.descriptor
    crash = parse_crash_point(os.environ.get(CRASH_ENV))
    state = load_rotation_state(d)
    resumed = state.in_progress()
    wanted = rotation.parse_credentials(credentials)
    done = state.done() if resumed else []
    todo = [c for c in rotation.CREDENTIALS if c in resumed or (c in wanted and c not in done)]
    if state.rotation_id is None:
        state = state.updated(rotation_id=uuid.uuid4().hex[:12], started_at=now())
    rid = state.rotation_id
    done_log: list[str] = []
    rolls: list[dict[str, Any]] = []

    def crash_check(cred: str, step: str, before: bool) -> None:
        if crash and crash.credential == cred and crash.step == step and crash.before_record == before:
            raise InjectedCrash(f"injected crash {'before recording' if before else 'after'} {cred}:{step}")

    def run_step(cred: str, step: str) -> None:
        nonlocal state
        state = rotation_step(t, state, cred, step)
        crash_check(cred, step, True)
        cs = rotation.record(cred_state(state, cred), step, now())
        state = state.updated(**{f"{cred}_step": cs.done})
        save_rotation_state(d, state)
        done_log.append(f"{cred}:{step}")
        t.log(f"rotation {rid}: {cred} {step} done")
        crash_check(cred, step, False)

    finished: list[str] = []
    while True:
        for cred in todo:
            if cred in finished:
                continue
            for step in rotation.steps_before_roll(cred_state(state, cred)):
                run_step(cred, step)
            if cred_state(state, cred).finished and cred not in finished:
                state = state.cleared(cred)
                save_rotation_state(d, state)
                finished.append(cred)
        open_states = [cred_state(state, c) for c in todo if c not in finished]
        followers = {}
        if any(rotation.FOLLOWER_ROLLS.get(s.credential) == rotation.pending_roll(s) for s in open_states):
            followers = {"redis": roll_followers(t, [state.redis_new, state.redis_old])}
        batch = rotation.roll_batch(open_states, followers)
        if batch is None:
            break
        for cred, step in batch.steps.items():  # the block switch, idempotent
            state = rotation_step(t, state, cred, step)
        write_env(t)
        served = state.rolled()
        if state.roll_id and all(served.get(c) == s for c, s in batch.steps.items()):
            roll_id = state.roll_id  # a crash split the recording of that roll: its replicas are current
        else:
            roll_id, served = rotation.batch_roll_id(rid, batch.steps), dict(batch.steps)
        t.log(f"rotation {rid}: rolling {', '.join(batch.services)} ({roll_id})")
        roll(batch.services, roll_id)
        if t.refresh is not None:  # re-created Redis replicas and Sentinels have new addresses
            t = t.refresh()
        state = state.updated(roll_id=roll_id, roll_steps=",".join(f"{c}={s}" for c, s in served.items()))
        save_rotation_state(d, state)
        rolls.append({"services": list(batch.services), "completes": dict(batch.steps)})
        for cred, step in batch.steps.items():
            crash_check(cred, step, True)
            cs = rotation.record(cred_state(state, cred), step, now())
            state = state.updated(**{f"{cred}_step": cs.done})
            save_rotation_state(d, state)
            done_log.append(f"{cred}:{step}")
            crash_check(cred, step, False)
    write_env(t)
    return {"rotation_id": rid, "resumed": resumed, "rotated": finished, "steps": done_log, "rolls": rolls}


def summary_markdown(env: str, result: dict[str, Any]) -> str:
    lines = [f"# Secret rotation of `{env}`", "", f"rotation id `{result['rotation_id']}`",
             f"resumed: {', '.join(result['resumed']) or 'nothing'}; rotated: {', '.join(result['rotated']) or 'nothing'}",
             "", "| roll | services | completes |", "|---|---|---|"]
    for i, r in enumerate(result["rolls"], 1):
        lines.append(f"| {i} | {', '.join(r['services'])} | "
                     f"{', '.join(f'{c}:{s}' for c, s in r['completes'].items())} |")
    lines += ["", "Steps: " + ", ".join(f"`{s}`" for s in result["steps"])]
    return "\n".join(lines) + "\n"


@flow(name="rotate-helix-secrets", log_prints=False,
      flow_run_name=run_name("rotate-{env}-{credentials}", credentials="all"))
def rotate_helix_secrets(env: EnvName = "local", descriptor: str | None = None, engine_url: str | None = None,
                         credentials: list[Credential] | None = None, env_file: str | None = None,
                         health_timeout_s: float = 180, lease_ttl_s: float = 120, lease_wait_s: float = 1800,
                         container_labels: dict[str, str] | None = None, roll_parallelism: Parallelism = 1,
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

    def plan() -> Proposal:
        from blocks.rotation_state import load_rotation_state

        state = load_rotation_state(desc)
        resumed = state.in_progress()
        wanted = rotation.parse_credentials(credentials)
        done = state.done() if resumed else []
        todo = [c for c in rotation.CREDENTIALS if c in resumed or (c in wanted and c not in done)]
        lines = [f"rotate {c}" + (" (resuming an unfinished rotation)" if c in resumed else "") for c in todo]
        return Proposal(markdown="\n".join([f"# Secret rotation plan for `{desc.environment}`", "",
                                             *[f"- {line}" for line in lines or ["nothing to rotate"]]]),
                        lines=tuple(lines), is_noop=False, identity={"rotate": todo, "resumed": resumed},
                        change={"credentials": todo})

    def apply(_proposal: Proposal) -> Applied:
        with steps.rotation_access(target) as find_endpoints:
            def find_target() -> RotationTarget:
                endpoints = find_endpoints()
                return RotationTarget(desc, tuple(tuple(e) for e in endpoints["redis"]), endpoints["neo4j"],
                                      env_file, log=logger.info, redis_services=tuple(endpoints["redis_services"]),
                                      sentinel_endpoints=tuple(tuple(e) for e in endpoints["sentinels"]),
                                      sentinel_services=tuple(endpoints["sentinel_services"]), refresh=find_target)

            def roll(services: tuple[str, ...], roll_id: str) -> None:
                steps.roll_consumers(target, desc, config_text, services, roll_id, health_timeout_s,
                                     roll_parallelism)

            result = drive_rotation(find_target(), credentials, roll)
        # no secret: the ids, the steps and the services rolled
        return Applied(after={"rotated": result["rotated"], "rotation_id": result["rotation_id"]},
                       detail=f"rotated {', '.join(result['rotated']) or 'nothing'}; steps {len(result['steps'])}",
                       value=result)

    outcome = run_change(Change(desc, "rotate", who_asked(), plan, apply, lease_ttl_s=lease_ttl_s,
                                lease_wait_s=lease_wait_s))
    if outcome.status == "refused":
        raise RotationRefused(f"rotation of {desc.environment} refused: {outcome.decision.line()}; nothing rotated")
    assert outcome.applied is not None
    result = outcome.applied.value
    create_markdown_artifact(summary_markdown(desc.environment, result), key=f"rotation-{desc.environment}",
                             description=f"rotate-helix-secrets for {desc.environment}")
    return {"environment": desc.environment, **result}
