"""The staged credential-rotation protocol as a pure state machine (rotate-helix-secrets).

Every credential moves through an ordered list of steps; the state records the last step *completed*, so a
run that dies anywhere resumes at the next step, and every step is written to be idempotent (doing it twice
is the same as once). The generic shape is::

    pending → set (on the servers) → tested → current (consumers rolled; previous still valid) → retired

* **redis** (ACL user ``default``, several passwords at once): ``set`` adds the new password
  (``ACL SETUSER default >new``) and persists it; ``auth-set`` switches what the servers themselves log in
  with to the new password, live, while both are valid: ``masterauth`` on every Redis node (any node may be a
  replica after a failover) and, in Sentinel mode, ``SENTINEL SET <master> auth-pass`` on every Sentinel;
  ``current`` switches the block and rolls the consumers and, in Sentinel mode, re-creates the Sentinels and
  the replicas (their start scripts build the config from the environment, so only a container created from
  the blocks' new password keeps it across a restart: see :data:`FOLLOWER_ROLLS`); ``retired`` removes the
  old password (``<old``) and persists again.
* **neo4j** (one password per user; Community has no ``SET STATUS SUSPENDED``): two alternating users.
  The consumers move to a *bridge* user holding a fresh password, the primary user gets its new password
  while nobody uses it, the consumers move back, and the bridge user is dropped. So the steady state is
  always the primary user (``neo4j``), which the stack's ``NEO4J_AUTH`` and health checks name::

      pending → bridge-set → bridge-tested → bridge-current → primary-set → primary-tested
              → primary-current → retired (bridge user dropped)

* **nextauth** (NEXTAUTH_SECRET; NextAuth accepts one secret, so sessions signed with the old one end):
  ``pending → current (dashboard rolled) → retired``.

Steps named in :data:`ROLL_STEPS` end with a rolling restart of the credential's consumers. A flow batches
them: it advances every credential up to its next roll step (:func:`steps_before_roll`), rolls the union of
consumers once, then records the roll steps (:func:`roll_batch`). A full rotation of all three costs two
rolls.

Example::

    state = start("redis", rotation_id="r1", now=t)
    state = record(state, "set", now=t)      # after the servers hold the new password
    next_step(state)                          # 'tested'
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from helix_ops import guide
from helix_ops.errors import ConfigError

Credential = Literal["redis", "neo4j", "nextauth"]
CREDENTIALS: tuple[Credential, ...] = ("redis", "neo4j", "nextauth")

STEPS: dict[str, tuple[str, ...]] = {
    "redis": ("pending", "set", "tested", "auth-set", "current", "retired"),
    "neo4j": ("pending", "bridge-set", "bridge-tested", "bridge-current", "primary-set", "primary-tested",
              "primary-current", "retired"),
    "nextauth": ("pending", "current", "retired"),
}
"""Each credential's protocol, in order."""

ROLL_STEPS = frozenset({"current", "bridge-current", "primary-current"})
"""Steps that switch the credentials block and then roll the consumers."""

CONSUMERS: dict[str, tuple[str, ...]] = {
    "redis": guide.APP_SERVICES,
    "neo4j": guide.APP_SERVICES,
    "nextauth": ("dashboard",),
}
"""The services that read each credential and so are rolled when it changes (the servers themselves
read the new password live: Redis from its ACL, Neo4j from its system database)."""

FOLLOWER_ROLLS: dict[str, str] = {"redis": "current"}
"""The roll step at which a credential's *followers* are re-created with the consumers: servers whose start
script writes the credential into their config from the environment (Sentinel mode: the Sentinels'
``auth-pass`` and the replicas' ``masterauth``). Their live value is switched earlier (``auth-set``); the
re-creation makes it survive a restart. Which containers they are (the replicas of the moment) is found live,
so the flow passes them to :func:`roll_batch`."""

DEFAULT_BRIDGE_USER = "helix_rotation"
"""The Neo4j bridge user when the credentials block names no ``alternate_user``."""


def steps(credential: str) -> tuple[str, ...]:
    """The protocol of ``credential``; ConfigError for an unknown one."""
    if credential not in STEPS:
        raise ConfigError(f"credentials.{credential}", f"cannot rotate it (known: {', '.join(CREDENTIALS)})")
    return STEPS[credential]


def parse_credentials(names: Iterable[str] | None) -> tuple[str, ...]:
    """The credentials to rotate, validated and in protocol order (``None``: all of them)."""
    if names is None:
        return CREDENTIALS
    wanted = list(names)
    for name in wanted:
        steps(name)
    if not wanted:
        raise ConfigError("credentials", "name at least one credential to rotate")
    return tuple(c for c in CREDENTIALS if c in wanted)


@dataclass(frozen=True)
class CredentialState:
    """Where one credential's rotation stands: ``done`` is the last completed step (``None``: not started)."""

    credential: str
    rotation_id: str
    done: str | None
    started_at: datetime
    updated_at: datetime

    @property
    def finished(self) -> bool:
        return self.done == steps(self.credential)[-1]


def start(credential: str, rotation_id: str, now: datetime) -> CredentialState:
    """A new rotation of ``credential``, nothing done yet."""
    steps(credential)
    return CredentialState(credential, rotation_id, None, now, now)


def next_step(state: CredentialState) -> str | None:
    """The step to run next, or ``None`` when the rotation is finished."""
    order = steps(state.credential)
    if state.done is None:
        return order[0]
    index = order.index(state.done)
    return order[index + 1] if index + 1 < len(order) else None


def record(state: CredentialState, step: str, now: datetime) -> CredentialState:
    """``state`` with ``step`` completed. Recording the step already recorded is a no-op (a resumed run
    repeats its last step); recording anything but the next step is a ConfigError (a bug or a state written
    by someone else)."""
    order = steps(state.credential)
    if step not in order:
        raise ConfigError(f"rotation.{state.credential}", f"{step!r} is not a step (steps: {', '.join(order)})")
    if step == state.done:
        return state
    expected = next_step(state)
    if step != expected:
        raise ConfigError(f"rotation.{state.credential}",
                          f"cannot record {step!r} after {state.done or 'nothing'}: next is {expected}")
    return replace(state, done=step, updated_at=now)


def steps_before_roll(state: CredentialState) -> tuple[str, ...]:
    """The steps to run now, up to (not including) the next roll step or the end."""
    out = []
    order = steps(state.credential)
    start_at = 0 if state.done is None else order.index(state.done) + 1
    for step in order[start_at:]:
        if step in ROLL_STEPS:
            break
        out.append(step)
    return tuple(out)


def pending_roll(state: CredentialState) -> str | None:
    """The roll step ``state`` waits for once :func:`steps_before_roll` are done, or ``None``."""
    order = steps(state.credential)
    start_at = 0 if state.done is None else order.index(state.done) + 1
    for step in order[start_at:]:
        if step in ROLL_STEPS:
            return step
    return None


@dataclass(frozen=True)
class RollBatch:
    """One rolling restart: which credentials' roll steps it completes and which services it restarts."""

    steps: Mapping[str, str]
    services: tuple[str, ...]


def roll_batch(states: Iterable[CredentialState],
               followers: Mapping[str, Iterable[str]] | None = None) -> RollBatch | None:
    """The roll every state is waiting for (after their :func:`steps_before_roll`), services in stack order,
    then the followers (``{"redis": ("redis-2", "redis-sentinel", ...)}``) of each credential whose
    :data:`FOLLOWER_ROLLS` step this roll completes, in the order given, each once.

    ``None`` when no credential waits for a roll."""
    waiting = {s.credential: step for s in states if (step := pending_roll(s)) is not None}
    if not waiting:
        return None
    wanted = {svc for cred in waiting for svc in CONSUMERS[cred]}
    services = [s for s in guide.APP_SERVICES if s in wanted]
    for cred, step in waiting.items():
        if FOLLOWER_ROLLS.get(cred) == step:
            services += [f for f in (followers or {}).get(cred, ()) if f not in services]
    return RollBatch(waiting, tuple(services))


CRASH_ENV = "HELIX_ROTATE_CRASH_AFTER"
"""Tests only: ``<credential>:<step>`` makes the flow die right after recording that step
(``<credential>:<step>!`` dies after doing the step but before recording it)."""


@dataclass(frozen=True)
class CrashPoint:
    """Where a test asked the rotation to die."""

    credential: str
    step: str
    before_record: bool


def parse_crash_point(text: str | None) -> CrashPoint | None:
    """``"redis:set"`` → CrashPoint; empty → None; anything malformed is a ConfigError."""
    if not text:
        return None
    before = text.endswith("!")
    cred, _, step = text.rstrip("!").partition(":")
    if step not in steps(cred):
        raise ConfigError(CRASH_ENV, f"{text!r}: expected <credential>:<step>[!] with a step of {cred}")
    return CrashPoint(cred, step, before)


def all_crash_points() -> list[str]:
    """Every ``credential:step`` (what the crash-resume tests iterate over)."""
    return [f"{c}:{s}" for c in CREDENTIALS for s in STEPS[c]]


def batch_roll_id(rotation_id: str, steps: dict[str, str]) -> str:
    """The id of the roll that completes ``steps`` in rotation ``rotation_id``: the same for a rerun of that
    roll (a resumed run keeps the replicas the crashed one already re-created), another for the next roll."""
    key = ",".join(f"{c}={s}" for c, s in sorted(steps.items()))
    return f"r{rotation_id[:6]}{hashlib.sha256(key.encode()).hexdigest()[:4]}"
