"""Credential blocks for Helix: Neo4j, Redis, the dashboard's NextAuth secret and the Anthropic API key.

Every secret is a pydantic :class:`~pydantic.SecretStr`: ``repr``, ``str``, logs and ``model_dump`` show
``'**********'``; only ``get_secret_value()`` reveals it. Validation errors never echo their input
(``hide_input_in_errors``), so a mistyped field cannot print a password.

Block type slugs all start with ``helix-``. Register them once with :func:`register_block_types` (the
bootstrap does it: ``python -m blocks.bootstrap --env local``).

Example::

    from blocks import Neo4jCredentials
    creds = Neo4jCredentials.load("helix-local-neo4j")
    driver = GraphDatabase.driver(uri, auth=(creds.user, creds.password.get_secret_value()))
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, model_validator

from blocks.inputs import USER_PATTERN


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (what ``rotated_at`` records)."""
    return datetime.now(timezone.utc)


class HelixBlock(Block):
    """Common settings of the helix credential blocks: unknown fields refused, inputs never echoed."""

    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid", hide_input_in_errors=True)

    @model_validator(mode="before")
    @classmethod
    def _accept_own_slug(cls, values: Any) -> Any:
        # Prefect passes ``block_type_slug`` along with the data; it is not a field, and extra="forbid" would
        # refuse it. Any other unknown key (a typo such as ``pasword``) is still refused.
        if isinstance(values, dict) and "block_type_slug" in values:
            values = dict(values)
            slug = values.pop("block_type_slug")
            if slug and slug != cls.get_block_type_slug():
                raise ValueError(f"block_type_slug {slug!r} is not {cls.get_block_type_slug()!r}")
        return values


class Neo4jCredentials(HelixBlock):
    """Neo4j login: ``user`` and ``password``, plus an optional alternate pair.

    The alternate pair (``alternate_user``/``alternate_password``) exists for zero-downtime rotation with two
    users (Enterprise): clients switch to the alternate user while the active one's password changes. Leave
    it empty on Community, where only ``neo4j`` exists.

    Attributes:
        user: the active user (default ``neo4j``).
        password: the active user's password.
        alternate_user: the second user, or None.
        alternate_password: the second user's password, or None.
        rotated_at: when ``password`` was last set (UTC).

    Example::

        Neo4jCredentials(password="...").save("helix-local-neo4j")
    """

    _block_type_name = "Helix Neo4j Credentials"
    _block_type_slug = "helix-neo4j-credentials"
    _description = "Neo4j user and password for a Helix environment (optional alternate user for rotation)."

    user: str = Field(default="neo4j", pattern=USER_PATTERN, description="The active Neo4j user.")
    password: SecretStr = Field(description="The active user's password.")
    alternate_user: str | None = Field(default=None, pattern=USER_PATTERN, description="Second user, for rotation.")
    alternate_password: SecretStr | None = Field(default=None, description="The second user's password.")
    rotated_at: datetime = Field(default_factory=utc_now, description="When the password was last set (UTC).")

    @model_validator(mode="after")
    def _pair(self) -> Neo4jCredentials:
        if (self.alternate_user is None) != (self.alternate_password is None):
            raise ValueError("alternate_user and alternate_password go together: set both or neither")
        if self.alternate_user is not None and self.alternate_user == self.user:
            raise ValueError("alternate_user must differ from user")
        return self


class RedisCredentials(HelixBlock):
    """Redis ACL login (``username`` defaults to ``default``, which ``requirepass`` protects) and Sentinel.

    Attributes:
        username: the ACL user (``default``).
        password: the Redis password (``requirepass``/``masterauth``).
        sentinel_master_name: the master name Sentinel monitors, when Redis runs under Sentinel.
        sentinel_password: the password of the Sentinels themselves, if they require one.
        rotated_at: when ``password`` was last set (UTC).
    """

    _block_type_name = "Helix Redis Credentials"
    _block_type_slug = "helix-redis-credentials"
    _description = "Redis password (and optional Sentinel settings) for a Helix environment."

    username: str = Field(default="default", pattern=USER_PATTERN, description="Redis ACL user.")
    password: SecretStr = Field(description="Redis password.")
    sentinel_master_name: str | None = Field(
        default=None, pattern=r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", description="Sentinel master name."
    )
    sentinel_password: SecretStr | None = Field(default=None, description="Password of the Sentinels, if any.")
    rotated_at: datetime = Field(default_factory=utc_now, description="When the password was last set (UTC).")


class HelixAppSecrets(HelixBlock):
    """The dashboard's secrets: ``nextauth_secret`` (NEXTAUTH_SECRET, signs sessions).

    The descriptor names this block under ``credentials.dashboard``. The Anthropic key has its own block
    (:class:`AnthropicCredentials`, ``credentials.anthropic``) because the descriptor names it separately and
    it is rotated by someone else (the Anthropic console), not generated here.

    Attributes:
        nextauth_secret: at least 32 characters (the guide's rule; checked by the bootstrap).
        rotated_at: when the secret was last set (UTC).
    """

    _block_type_name = "Helix App Secrets"
    _block_type_slug = "helix-app-secrets"
    _description = "The Helix dashboard's NextAuth secret."

    nextauth_secret: SecretStr = Field(description="NEXTAUTH_SECRET: signs and encrypts sessions.")
    rotated_at: datetime = Field(default_factory=utc_now, description="When the secret was last set (UTC).")


class AnthropicCredentials(HelixBlock):
    """The Anthropic API key used by mcp-discovery and mcp-derivation (ANTHROPIC_API_KEY).

    Attributes:
        api_key: the key.
        placeholder: True when the bootstrap stored a generated stand-in because no key was supplied (the
            services start, but calls to Anthropic fail until a real key is set with ``--overwrite``).
        rotated_at: when the key was last set (UTC).
    """

    _block_type_name = "Helix Anthropic Credentials"
    _block_type_slug = "helix-anthropic-credentials"
    _description = "Anthropic API key for Helix Discovery and Derivation."

    api_key: SecretStr = Field(description="ANTHROPIC_API_KEY.")
    placeholder: bool = Field(default=False, description="True if this is a generated stand-in, not a real key.")
    rotated_at: datetime = Field(default_factory=utc_now, description="When the key was last set (UTC).")
