"""What the bootstrap reads from the environment (HELIX_* variables) and how it generates secrets.

Light on purpose (stdlib and helix_ops only), so ``python -m blocks.bootstrap`` rejects bad input before
importing Prefect.
"""

from __future__ import annotations

import re
import secrets as _random
from collections.abc import Mapping
from dataclasses import dataclass

from helix_ops.errors import ConfigError

USER_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
"""Neo4j and Redis user names."""

GENERATED_BYTES = 32
"""``token_urlsafe(32)``: 256 random bits, 43 characters."""


def generate_secret() -> str:
    """A new random secret: 43 URL-safe characters (safe in .env, redis.conf and NEO4J_AUTH), never starting
    with ``-``: the Neo4j image passes NEO4J_AUTH's password to ``neo4j-admin dbms set-initial-password`` as an
    argument, which then reads as an option (the tool prints its usage and Neo4j never starts; 1 in 64 of
    ``token_urlsafe``'s values did that)."""
    while (value := _random.token_urlsafe(GENERATED_BYTES)).startswith("-"):
        continue
    return value


# --- inputs -----------------------------------------------------------------------------------------------

_SAFE = re.compile(r"^[\x21-\x7e]+$")
_UNSAFE_CHARS = set("'\"\\`$")


@dataclass(frozen=True)
class InputVar:
    """One environment variable the bootstrap reads."""

    name: str
    secret: bool
    min_length: int = 1
    pattern: str | None = None


INPUTS: dict[str, InputVar] = {
    v.name: v
    for v in (
        InputVar("HELIX_NEO4J_USER", secret=False, pattern=USER_PATTERN),
        InputVar("HELIX_NEO4J_PASSWORD", secret=True, min_length=8),
        InputVar("HELIX_REDIS_PASSWORD", secret=True, min_length=8),
        InputVar("HELIX_REDIS_SENTINEL_PASSWORD", secret=True, min_length=8),
        InputVar("HELIX_NEXTAUTH_SECRET", secret=True, min_length=32),
        InputVar("HELIX_ANTHROPIC_API_KEY", secret=True, min_length=8),
        InputVar("HELIX_S3_ACCESS_KEY_ID", secret=False, min_length=3),
        InputVar("HELIX_S3_SECRET_ACCESS_KEY", secret=True, min_length=8),
    )
}


def read_inputs(environ: Mapping[str, str]) -> dict[str, str]:
    """The HELIX_* inputs present in ``environ``, checked; a ConfigError names the variable, never its value."""
    found: dict[str, str] = {}
    for name, spec in INPUTS.items():
        if name not in environ:
            continue
        value = environ[name]
        if value == "":
            raise ConfigError(name, "is set but empty: unset it to have a value generated")
        if spec.pattern is not None:
            if not re.fullmatch(spec.pattern, value):
                raise ConfigError(name, f"must match {spec.pattern}")
        elif not _SAFE.match(value) or _UNSAFE_CHARS & set(value):
            raise ConfigError(
                name, "must be printable ASCII without spaces, quotes, backslash, backtick or $ "
                "(it passes through .env, redis.conf and NEO4J_AUTH)",
            )
        elif spec.secret and value.startswith("-"):
            raise ConfigError(
                name, "must not start with '-' (the Neo4j image hands NEO4J_AUTH's password to neo4j-admin as an "
                "argument, which would read it as an option): drop or move the leading '-'",
            )
        if len(value) < spec.min_length:
            raise ConfigError(name, f"must be at least {spec.min_length} characters")
        found[name] = value
    if ("HELIX_S3_ACCESS_KEY_ID" in found) != ("HELIX_S3_SECRET_ACCESS_KEY" in found):
        raise ConfigError("HELIX_S3_ACCESS_KEY_ID", "give HELIX_S3_ACCESS_KEY_ID and HELIX_S3_SECRET_ACCESS_KEY together")
    return found



INPUT_ENTRY: dict[str, str] = {
    "HELIX_NEO4J_USER": "neo4j", "HELIX_NEO4J_PASSWORD": "neo4j", "HELIX_REDIS_PASSWORD": "redis",
    "HELIX_REDIS_SENTINEL_PASSWORD": "redis", "HELIX_NEXTAUTH_SECRET": "dashboard",
    "HELIX_ANTHROPIC_API_KEY": "anthropic", "HELIX_S3_ACCESS_KEY_ID": "storage",
    "HELIX_S3_SECRET_ACCESS_KEY": "storage",
}
"""Input variable → the descriptor's ``credentials`` entry whose block it fills."""
