"""``helix.config.yaml``: the application's own configuration, as the guide shows it.

The file holds ``${VAR}`` references (the Helix services resolve them from their environment). helix-ops
validates it by interpolating with an explicit environment mapping and checking the typed result.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from helix_ops._validation import load_yaml_mapping, validate_model
from helix_ops.errors import ConfigError
from helix_ops.interpolate import interpolate_tree
from helix_ops.safe_load import HELIX_CONFIG_LIMIT, read_text



class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSection(_Model):
    """``server``: identity and logging."""

    uid_prefix: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9]*$")
    log_level: Literal["debug", "info", "warn", "error"] = "info"


class GraphSection(_Model):
    """``graph``: the Neo4j connection."""

    type: Literal["neo4j"]
    uri: str = Field(pattern=r"^(bolt|neo4j)(\+s|\+ssc)?://[^\s/]+(:\d+)?/?$")
    user: str = Field(min_length=1)
    password: str = Field(min_length=1)
    max_connection_pool_size: int = Field(default=100, gt=0)
    connection_timeout: int = Field(default=30000, gt=0, description="milliseconds")


class EventsSection(_Model):
    """``events``: the Redis (or Sentinel) connection."""

    type: Literal["redis"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    password: str = Field(min_length=1)
    tls: bool = False


class EnforcementSection(_Model):
    """``enforcement``: graph integrity rules."""

    uid_validation: Literal["strict", "lenient", "off"] = "strict"
    orphan_prevention: bool = True
    gate_enforcement: bool = True


class Gate(_Model):
    """One approval gate."""

    enabled: bool = True
    timeout_hours: float = Field(gt=0)


class HelixConfig(_Model):
    """The whole ``helix.config.yaml`` after interpolation."""

    server: ServerSection
    graph: GraphSection
    events: EventsSection
    enforcement: EnforcementSection = EnforcementSection()
    gates: dict[str, Gate] = {}

    @field_validator("gates")
    @classmethod
    def _gate_names(cls, gates: dict[str, Gate]) -> dict[str, Gate]:
        for name in gates:
            if not name.startswith("gate_") or not name[5:].isdigit():
                raise ValueError(f"gate name {name!r} must look like gate_<number>")
        return gates


def read_helix_config_text(path: str | Path) -> str:
    """The text of the helix.config.yaml at ``path``: at most :data:`~helix_ops.safe_load.HELIX_CONFIG_LIMIT`
    bytes of UTF-8 (else one :class:`ConfigError` line naming the file)."""
    return read_text(path, what="helix.config.yaml", limit=HELIX_CONFIG_LIMIT)


def load_helix_config(path: str | Path, env: Mapping[str, str]) -> HelixConfig:
    """Read (bounded) and validate the helix.config.yaml at ``path``: :func:`parse_helix_config` of the file."""
    return parse_helix_config(read_helix_config_text(path), env, str(path))


def parse_helix_config(text: str, env: Mapping[str, str], source: str | None = None) -> HelixConfig:
    """Parse, interpolate (with ``env``, never os.environ here) and validate a helix.config.yaml text.

    >>> cfg = parse_helix_config(open("deployments/helix.config.yaml").read(), my_env)  # doctest: +SKIP
    """
    raw = load_yaml_mapping(text, source)  # bounded: no aliases, no duplicate keys, at most 64 levels
    try:
        data = interpolate_tree(raw, env)
    except ConfigError as exc:
        raise exc.with_source(source) if source else exc from None
    return validate_model(HelixConfig, data, source)
