"""The JSON state file accepted by ``helix-ops plan --state FILE`` (validated like every input)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class StateObject(BaseModel):
    """One object as found: identity, recorded spec hash, readable fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    identity: Annotated[StrictStr, Field(min_length=1)]
    spec_hash: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{8,64}$")] | None = None
    fields: dict[str, Any] = {}


class StateFile(BaseModel):
    """``{"objects": [...]}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    objects: list[StateObject] = []
