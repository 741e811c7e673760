"""Where a credential rotation in progress is recorded: one Prefect block per environment.

:class:`RotationState` holds, for each credential being rotated, the protocol step last *completed*
(``helix_ops.rotation``) and the values the next steps need: the new password(s) and the previous one, all
``SecretStr``. It is written after every step, so a run that dies resumes from it. When a credential's
rotation finishes its fields are cleared; the credentials block's ``rotated_at`` says when.

Example::

    state = load_rotation_state(descriptor)          # an empty state when the block does not exist
    state.redis_step                                 # 'set'
    save_rotation_state(descriptor, state)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field, SecretStr

from blocks.credentials import HelixBlock, utc_now
from helix_ops.descriptor import Descriptor
from helix_ops.errors import ConfigError, DriverError

SECRET_FIELDS = ("redis_new", "redis_old", "neo4j_bridge_password", "neo4j_primary_new", "neo4j_old",
                 "nextauth_new")


class RotationState(HelixBlock):
    """The rotation in progress of one environment (all fields empty when none is).

    Attributes:
        rotation_id: the run that started the rotation in progress.
        redis_step / neo4j_step / nextauth_step: the last completed step, ``None`` when not rotating.
        redis_new / redis_old: the Redis password being introduced and the one being retired.
        neo4j_primary_user / neo4j_bridge_user: the steady-state user and the temporary one.
        neo4j_bridge_password / neo4j_primary_new / neo4j_old: the bridge user's password, the primary user's
            new password and its previous one.
        nextauth_new: the NEXTAUTH_SECRET being introduced.
        roll_id / roll_steps: the last consumer roll that completed and the roll steps it served
            (``redis=current,neo4j=bridge-current``): a resumed run whose pending roll steps it served reuses
            it (the replicas it created are kept) instead of restarting every consumer again.
        done_credentials: the credentials this rotation has finished (``redis,neo4j``): a resumed run does not
            start them over.
        started_at / updated_at: when the rotation started and the state was last written (UTC).
    """

    _block_type_name = "Helix Rotation State"
    _block_type_slug = "helix-rotation-state"
    _description = "A credential rotation in progress for one Helix environment (resumable protocol state)."

    rotation_id: str | None = None
    redis_step: str | None = None
    redis_new: SecretStr | None = None
    redis_old: SecretStr | None = None
    neo4j_step: str | None = None
    neo4j_primary_user: str | None = None
    neo4j_bridge_user: str | None = None
    neo4j_bridge_password: SecretStr | None = None
    neo4j_primary_new: SecretStr | None = None
    neo4j_old: SecretStr | None = None
    nextauth_step: str | None = None
    nextauth_new: SecretStr | None = None
    roll_id: str | None = None
    roll_steps: str | None = None
    done_credentials: str | None = None
    started_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utc_now)

    CLEARED: ClassVar[dict[str, tuple[str, ...]]] = {
        "redis": ("redis_step", "redis_new", "redis_old"),
        "neo4j": ("neo4j_step", "neo4j_primary_user", "neo4j_bridge_user", "neo4j_bridge_password",
                  "neo4j_primary_new", "neo4j_old"),
        "nextauth": ("nextauth_step", "nextauth_new"),
    }

    def step(self, credential: str) -> str | None:
        return getattr(self, f"{credential}_step")

    def in_progress(self) -> list[str]:
        """The credentials whose rotation has started and not finished."""
        return [c for c in self.CLEARED if self.step(c) is not None]

    def updated(self, **changes: Any) -> RotationState:
        data = {k: getattr(self, k) for k in type(self).model_fields}
        data.update(changes, updated_at=utc_now())
        return RotationState(**data)

    def cleared(self, credential: str) -> RotationState:
        """The state once ``credential``'s rotation has finished: its fields emptied; when nothing else is in
        progress, the whole rotation (id, rolls, finished list) too."""
        done = ",".join(dict.fromkeys([*self.done(), credential]))
        state = self.updated(**{f: None for f in self.CLEARED[credential]}, done_credentials=done)
        if not state.in_progress():
            state = state.updated(rotation_id=None, started_at=None, roll_id=None, roll_steps=None,
                                  done_credentials=None)
        return state

    def done(self) -> list[str]:
        """The credentials the rotation in progress has already finished."""
        return [c for c in (self.done_credentials or "").split(",") if c]

    def rolled(self) -> dict[str, str]:
        """The roll steps the last completed roll served (credential → step)."""
        pairs = (item.partition("=") for item in (self.roll_steps or "").split(",") if item)
        return {c: s for c, _, s in pairs}


def rotation_state_block_name(descriptor: Descriptor) -> str:
    """``helix-rotation-<project>-<environment>``: one per environment of one project."""
    name = f"helix-rotation-{descriptor.project}-{descriptor.environment}"
    return name[:100].rstrip("-")


def load_rotation_state(descriptor: Descriptor) -> RotationState:
    """The environment's rotation state; an empty one when the block does not exist yet."""
    name = rotation_state_block_name(descriptor)
    try:
        return RotationState.load(name)
    except ValueError as exc:
        if "Unable to find block document" in str(exc):
            return RotationState()
        raise ConfigError(f"rotation-state.{name}", f"does not load: {type(exc).__name__}") from None
    except Exception as exc:  # API errors: the type is enough
        raise DriverError(f"cannot load Prefect block {name!r}: {type(exc).__name__}",
                          hint="is PREFECT_API_URL reachable?") from exc


_REGISTERED: set[str] = set()


def _register_once() -> None:
    """Register the block type on the current API once per process (it costs several API calls)."""
    from prefect.settings import PREFECT_API_URL

    api = str(PREFECT_API_URL.value() or "")
    if api not in _REGISTERED:
        RotationState.register_type_and_schema()
        _REGISTERED.add(api)


def save_rotation_state(descriptor: Descriptor, state: RotationState) -> None:
    """Write the environment's rotation state (registering the block type on first use)."""
    name = rotation_state_block_name(descriptor)
    try:
        _register_once()
        state.save(name, overwrite=True)
    except Exception as exc:  # noqa: BLE001
        raise DriverError(f"cannot save Prefect block {name!r}: {type(exc).__name__}",
                          hint="is PREFECT_API_URL reachable?") from exc
