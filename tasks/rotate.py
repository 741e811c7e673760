"""The steps of rotate-helix-secrets, each idempotent, as Prefect tasks (``rotation-step``, one run per
``credential:step``); the loop that drives them from the recorded state is the flow's (``flows/rotate.py``).

Every step reads what it needs from the rotation-state block (``blocks.rotation_state``) and the credential
blocks, acts on the servers, then records itself; see ``helix_ops.rotation`` for the protocol. Passwords
travel only inside these functions: nothing returned or logged holds one.

"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from helix_ops import rotation
from helix_ops.descriptor import Descriptor
from helix_ops.errors import DriverError
from helix_ops.rotation import CredentialState
from helix_ops.wait import Deadline


@dataclass(frozen=True)
class RotationTarget:
    """Where the credentials live: Redis servers (host, port), the Neo4j Bolt URI, an optional ``.env``.

    Sentinel mode adds the Sentinels' addresses, ``redis_services`` names the service of each Redis endpoint
    (``redis``, ``redis-2``…) and ``sentinel_services`` the Sentinels' (what a roll re-creates).
    ``refresh`` returns the target found anew: a roll that re-creates Redis replicas changes their addresses.
    """

    descriptor: Descriptor
    redis_endpoints: tuple[tuple[str, int], ...]
    neo4j_uri: str | None
    env_file: str | None = None
    log: Callable[[str], None] = field(default=print, compare=False)
    redis_services: tuple[str, ...] = ()
    sentinel_endpoints: tuple[tuple[str, int], ...] = ()
    sentinel_services: tuple[str, ...] = ()
    refresh: Callable[[], RotationTarget] | None = field(default=None, compare=False)


def now() -> datetime:
    return datetime.now(timezone.utc)


def _new_secret() -> SecretStr:
    from blocks.inputs import generate_secret

    return SecretStr(generate_secret())


def _blocks(d: Descriptor):
    from blocks.credentials import HelixAppSecrets, Neo4jCredentials, RedisCredentials

    c = d.credentials
    return Neo4jCredentials.load(c.neo4j), RedisCredentials.load(c.redis), HelixAppSecrets.load(c.dashboard)


def _save_block(block, name: str, **changes: Any) -> None:
    data = {k: getattr(block, k) for k in type(block).model_fields}
    data.update(changes)
    type(block)(**data).save(name, overwrite=True)


def cred_state(state, credential: str) -> CredentialState:
    started = state.started_at or now()
    return CredentialState(credential, state.rotation_id or "", state.step(credential), started, state.updated_at)


def _same(a: SecretStr | None, b: SecretStr | None) -> bool:
    return a is not None and b is not None and a.get_secret_value() == b.get_secret_value()


# --- redis ------------------------------------------------------------------------------------------------


def _redis_nodes(t: RotationTarget, username: str):
    from drivers.redis_acl import RedisAcl

    if not t.redis_endpoints:
        raise DriverError("no Redis server to rotate on", hint="is the redis service running?")
    return [RedisAcl(h, p, username) for h, p in t.redis_endpoints]


def _sentinels(t: RotationTarget, redis_block):
    from drivers.redis_acl import SentinelAuth

    redis = t.descriptor.services.redis
    if redis.mode != "sentinel":
        return []
    if not t.sentinel_endpoints:
        raise DriverError("Redis runs in Sentinel mode but no Sentinel was found", hint="is redis-sentinel running?")
    master = redis_block.sentinel_master_name or redis.sentinel.master_name
    return [SentinelAuth(h, p, master, redis_block.sentinel_password) for h, p in t.sentinel_endpoints]


def redis_followers(t: RotationTarget, candidates: Sequence[SecretStr | None]) -> tuple[str, ...]:
    """The services a Redis roll re-creates besides the consumers (Sentinel mode): the Redis members that are
    replicas now, then every Sentinel. Their start scripts write ``masterauth`` / ``auth-pass`` from the
    environment, so only a container created from the blocks' new password keeps it across a restart. The
    primary of the moment is not re-created (that would stop the writes); its ``masterauth`` is set live."""
    if t.descriptor.services.redis.mode != "sentinel":
        return ()
    _, redis_block, _ = _blocks(t.descriptor)
    candidates = [*candidates, redis_block.password]
    replicas = []
    for service, acl in zip(t.redis_services, _redis_nodes(t, redis_block.username)):
        with acl.login(candidates) as conn:
            if acl.role(conn) == "slave":
                replicas.append(service)
    return (*sorted(replicas), *sorted(t.sentinel_services))


def redis_step(t: RotationTarget, state, step: str):
    """Do one Redis step; returns the state with the step's data (recording is the caller's)."""
    d = t.descriptor
    _, redis_block, _ = _blocks(d)
    if step == "pending":
        return state.updated(redis_new=_new_secret(), redis_old=redis_block.password)
    new, old = state.redis_new, state.redis_old
    nodes = _redis_nodes(t, redis_block.username)
    if step == "set":
        for acl in nodes:
            with acl.login([old, new]) as conn:
                added = acl.add_password(conn, new)
                how = acl.persist(conn)
            t.log(f"redis {acl.host}:{acl.port}: new password {'added' if added else 'already held'}; {how}")
    elif step == "tested":
        for acl in nodes:
            if not acl.can_login(new):
                raise DriverError(f"the new Redis password does not log in on {acl.host}:{acl.port}",
                                  hint="the set step did not reach this node; rerun the rotation")
    elif step == "auth-set":
        for acl in nodes:
            with acl.login([new, old]) as conn:
                changed = acl.set_masterauth(conn, new)
            t.log(f"redis {acl.host}:{acl.port}: masterauth {'switched' if changed else 'already'} to the new password")
        for sentinel in _sentinels(t, redis_block):
            sentinel.set_auth_pass(new)
            t.log(f"sentinel {sentinel.host}:{sentinel.port}: auth-pass of {sentinel.master} set to the new password")
    elif step == "current":
        if not _same(redis_block.password, new):
            _save_block(redis_block, d.credentials.redis, password=new, rotated_at=now())
    elif step == "retired":
        for acl in nodes:
            with acl.login([new]) as conn:
                removed = False if _same(old, new) else acl.remove_password(conn, old)
                how = acl.persist(conn)
            if not _same(old, new) and acl.can_login(old):
                raise DriverError(f"the old Redis password still logs in on {acl.host}:{acl.port}", hint="")
            t.log(f"redis {acl.host}:{acl.port}: old password {'removed' if removed else 'already gone'}; {how}")
        for sentinel in _sentinels(t, redis_block):
            _wait_sentinel_usable(sentinel, SENTINEL_DEADLINE_S)
    return state


SENTINEL_DEADLINE_S = 30.0
"""How long a Sentinel may take to see the master and its replicas usable after the old password went (a
Sentinel or replica the roll re-created is still connecting)."""


def _wait_sentinel_usable(sentinel, deadline_s: float) -> None:
    """Wait until ``sentinel`` reports nothing wrong with the master and its replicas; WaitTimeout with its
    last problems after ``deadline_s`` (the rotation is then incomplete; rerunning it finishes it)."""
    what = (f"sentinel {sentinel.host}:{sentinel.port} to see the master and its replicas usable within "
            f"{deadline_s:.0f}s (check the Sentinel's log (auth-pass) and the replicas' masterauth; rerun the "
            "rotation to finish it)")
    for poll in Deadline(deadline_s).polls(what, 1):
        problems = sentinel.problems()
        if not problems:
            return
        poll.seen = "; ".join(problems)


# --- neo4j ------------------------------------------------------------------------------------------------


def neo4j_step(t: RotationTarget, state, step: str):
    from drivers import neo4j_users as nu

    d = t.descriptor
    if t.neo4j_uri is None:
        raise DriverError("no Neo4j server to rotate on", hint="is the neo4j service running?")
    neo4j_block, _, _ = _blocks(d)
    uri = t.neo4j_uri
    if step == "pending":
        primary = neo4j_block.user
        bridge = neo4j_block.alternate_user or rotation.DEFAULT_BRIDGE_USER
        if bridge == primary:
            raise DriverError(f"the Neo4j bridge user {bridge} is the primary user", hint="fix alternate_user")
        return state.updated(neo4j_primary_user=primary, neo4j_bridge_user=bridge, neo4j_old=neo4j_block.password,
                             neo4j_bridge_password=_new_secret(), neo4j_primary_new=_new_secret())
    primary, bridge = state.neo4j_primary_user, state.neo4j_bridge_user
    old, bridge_pw, new = state.neo4j_old, state.neo4j_bridge_password, state.neo4j_primary_new
    logins = [(primary, old), (primary, new), (bridge, bridge_pw)]
    if step == "bridge-set":
        if not nu.can_login(uri, bridge, bridge_pw):
            with nu.admin(uri, logins) as drv:
                t.log(f"neo4j: {nu.set_password(drv, bridge, bridge_pw, create=True)}")
    elif step in ("bridge-tested", "primary-tested"):
        user, pw = (bridge, bridge_pw) if step == "bridge-tested" else (primary, new)
        if not nu.can_login(uri, user, pw):
            raise DriverError(f"the new Neo4j login of {user} is refused", hint="rerun the rotation")
    elif step == "bridge-current":
        if neo4j_block.user != bridge or not _same(neo4j_block.password, bridge_pw):
            _save_block(neo4j_block, d.credentials.neo4j, user=bridge, password=bridge_pw,
                        alternate_user=primary, alternate_password=old)
    elif step == "primary-set":
        if not nu.can_login(uri, primary, new):
            with nu.admin(uri, [(bridge, bridge_pw), (primary, new), (primary, old)]) as drv:
                t.log(f"neo4j: {nu.set_password(drv, primary, new)}")
    elif step == "primary-current":
        if neo4j_block.user != primary or not _same(neo4j_block.password, new):
            _save_block(neo4j_block, d.credentials.neo4j, user=primary, password=new, alternate_user=bridge,
                        alternate_password=bridge_pw, rotated_at=now())
    elif step == "retired":
        with nu.admin(uri, [(primary, new)]) as drv:
            t.log(f"neo4j: {nu.drop_user(drv, bridge)}")
        if nu.can_login(uri, bridge, bridge_pw) or (not _same(old, new) and nu.can_login(uri, primary, old)):
            raise DriverError("a retired Neo4j login still works", hint="check the users with SHOW USERS")
        if neo4j_block.alternate_user is not None:
            _save_block(neo4j_block, d.credentials.neo4j, alternate_user=None, alternate_password=None)
    return state


# --- nextauth ---------------------------------------------------------------------------------------------


def nextauth_step(t: RotationTarget, state, step: str):
    d = t.descriptor
    _, _, app = _blocks(d)
    if step == "pending":
        return state.updated(nextauth_new=_new_secret())
    if step == "current" and not _same(app.nextauth_secret, state.nextauth_new):
        _save_block(app, d.credentials.dashboard, nextauth_secret=state.nextauth_new, rotated_at=now())
    return state


STEP_FUNCTIONS = {"redis": redis_step, "neo4j": neo4j_step, "nextauth": nextauth_step}


# --- the tasks the flow's loop calls (flows/rotate.py drive_rotation) ---------------------------------------


@task(name="rotation-step", task_run_name="{credential}:{step}", timeout_seconds=900, cache_policy=NO_CACHE)
def rotation_step(t: RotationTarget, state, credential: str, step: str):
    """One step of one credential (``redis:auth-set``…); returns the state with the step's data. Not retried
    here: the next run resumes the protocol from its recorded state."""
    return STEP_FUNCTIONS[credential](t, state, step)


@task(name="redis-roll-followers", retries=2, retry_delay_seconds=2, timeout_seconds=120, cache_policy=NO_CACHE)
def roll_followers(t: RotationTarget, candidates: Sequence[SecretStr | None]) -> tuple[str, ...]:
    """:func:`redis_followers` as a task."""
    return redis_followers(t, candidates)


@task(name="write-env-file", retries=1, timeout_seconds=60, cache_policy=NO_CACHE)
def write_env(t: RotationTarget) -> None:
    """Keep the Compose ``.env`` (mode 0600) in step with the blocks, when the run keeps one."""
    if t.env_file:
        from blocks.secrets import compose_env, load_environment_secrets, write_env_file

        write_env_file(t.env_file, compose_env(load_environment_secrets(t.descriptor)))
