"""Creating an environment's blocks: which blocks, from which inputs, and what to do with existing ones.

:func:`bootstrap` is what ``python -m blocks.bootstrap`` runs; see that module for the rules (create missing
blocks, keep existing ones, ``overwrite`` applies supplied values, ``rotate`` generates new secrets).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials, S3Bucket
from prefect_aws.client_parameters import AwsClientParameters
from prefect_docker import DockerHost
from pydantic import SecretStr, ValidationError

from blocks.credentials import AnthropicCredentials, HelixAppSecrets, Neo4jCredentials, RedisCredentials, utc_now
from blocks.inputs import INPUT_ENTRY, generate_secret, read_inputs
from blocks.storage import LocalBackupStorage
from helix_ops.descriptor import Descriptor, LocalStorage
from helix_ops.errors import ConfigError, DriverError, HelixOpsError

HELIX_BLOCK_TYPES: tuple[type[Block], ...] = (
    Neo4jCredentials,
    RedisCredentials,
    HelixAppSecrets,
    AnthropicCredentials,
    LocalBackupStorage,
)
"""The block types this package defines (slugs ``helix-...``)."""

REUSED_BLOCK_TYPES: tuple[type[Block], ...] = (AwsCredentials, S3Bucket, DockerHost)
"""Integration block types helix uses as they are."""


# --- block specs ------------------------------------------------------------------------------------------

Fields = dict[str, Any]


@dataclass(frozen=True)
class BlockSpec:
    """How to build one block: ``supplied`` (from inputs), ``generated`` (fresh secrets), ``fixed`` (from the
    descriptor). ``secret_fields`` are the fields whose change stamps ``rotated_at``; ``compared`` are the
    fields whose values decide whether an overwrite changes anything."""

    name: str
    cls: type[Block]
    entry: str
    supplied: Fields
    generated: Callable[[], Fields]
    fixed: Fields
    compared: tuple[str, ...]
    secret_fields: tuple[str, ...]
    notes: Callable[[Fields], str] = lambda fields: ""


def _secret(value: str | None) -> SecretStr | None:
    return None if value is None else SecretStr(value)


def _drop_none(fields: Fields) -> Fields:
    return {k: v for k, v in fields.items() if v is not None}


def block_specs(descriptor: Descriptor, inputs: Mapping[str, str]) -> list[BlockSpec]:
    """The blocks an environment needs, in creation order (the S3 credentials before the bucket)."""
    creds = descriptor.credentials
    redis = descriptor.services.redis
    specs = [
        BlockSpec(
            creds.neo4j, Neo4jCredentials, "neo4j",
            supplied=_drop_none({"user": inputs.get("HELIX_NEO4J_USER"),
                                 "password": _secret(inputs.get("HELIX_NEO4J_PASSWORD"))}),
            generated=lambda: {"password": SecretStr(generate_secret())},
            fixed={},
            compared=("user", "password"),
            secret_fields=("password",),
        ),
        BlockSpec(
            creds.redis, RedisCredentials, "redis",
            supplied=_drop_none({"password": _secret(inputs.get("HELIX_REDIS_PASSWORD")),
                                 "sentinel_password": _secret(inputs.get("HELIX_REDIS_SENTINEL_PASSWORD"))}),
            generated=lambda: {"password": SecretStr(generate_secret())},
            fixed={"sentinel_master_name": redis.sentinel.master_name if redis.mode == "sentinel" else None},
            compared=("password", "sentinel_password", "sentinel_master_name"),
            secret_fields=("password", "sentinel_password"),
        ),
        BlockSpec(
            creds.dashboard, HelixAppSecrets, "dashboard",
            supplied=_drop_none({"nextauth_secret": _secret(inputs.get("HELIX_NEXTAUTH_SECRET"))}),
            generated=lambda: {"nextauth_secret": SecretStr(generate_secret())},
            fixed={},
            compared=("nextauth_secret",),
            secret_fields=("nextauth_secret",),
        ),
        BlockSpec(
            creds.anthropic, AnthropicCredentials, "anthropic",
            supplied=_drop_none({"api_key": _secret(inputs.get("HELIX_ANTHROPIC_API_KEY"))})
            | ({"placeholder": False} if "HELIX_ANTHROPIC_API_KEY" in inputs else {}),
            generated=lambda: {"api_key": SecretStr(generate_secret()), "placeholder": True},
            fixed={},
            compared=("api_key", "placeholder"),
            secret_fields=("api_key",),
            notes=lambda f: "placeholder key: set HELIX_ANTHROPIC_API_KEY and rerun with --overwrite"
            if f.get("placeholder") else "",
        ),
    ]
    storage = descriptor.backup.storage
    if creds.storage is not None and isinstance(storage, LocalStorage):
        specs.append(BlockSpec(
            creds.storage, LocalBackupStorage, "storage", supplied={}, generated=dict,
            fixed={"path": storage.path}, compared=("path",), secret_fields=(),
        ))
    elif creds.storage is not None:
        keys = "HELIX_S3_ACCESS_KEY_ID" in inputs
        params = AwsClientParameters(endpoint_url=storage.endpoint) if storage.endpoint else AwsClientParameters()
        specs.append(BlockSpec(
            creds.storage, AwsCredentials, "storage",
            supplied={"aws_access_key_id": inputs["HELIX_S3_ACCESS_KEY_ID"],
                      "aws_secret_access_key": SecretStr(inputs["HELIX_S3_SECRET_ACCESS_KEY"])} if keys else {},
            generated=dict,
            fixed={"region_name": storage.region, "aws_client_parameters": params},
            compared=("aws_access_key_id", "aws_secret_access_key", "region_name", "aws_client_parameters"),
            secret_fields=(),
            notes=lambda f: "" if f.get("aws_access_key_id") else "no keys: boto's default credential chain",
        ))
        specs.append(BlockSpec(
            creds.storage, S3Bucket, "storage", supplied={}, generated=dict,
            fixed={"bucket_name": storage.bucket, "bucket_folder": storage.prefix},
            compared=("bucket_name", "bucket_folder"), secret_fields=(),
        ))
    return specs


# --- applying ---------------------------------------------------------------------------------------------

Action = Literal["created", "kept", "updated", "rotated"]


@dataclass(frozen=True)
class Outcome:
    """What happened to one block; ``note`` never holds a value."""

    name: str
    block_type: str
    action: Action
    note: str = ""

    def line(self) -> str:
        """``created helix-local-neo4j (helix-neo4j-credentials): password generated``."""
        text = f"{self.action} {self.name} ({self.block_type})"
        return f"{text}: {self.note}" if self.note else text


def register_block_types() -> list[str]:
    """Register the helix block types and the reused integration types with the Prefect API; their slugs."""
    for cls in (*HELIX_BLOCK_TYPES, *REUSED_BLOCK_TYPES):
        cls.register_type_and_schema()
    return [cls.get_block_type_slug() for cls in (*HELIX_BLOCK_TYPES, *REUSED_BLOCK_TYPES)]


def bootstrap(
    descriptor: Descriptor,
    environ: Mapping[str, str],
    *,
    overwrite: bool = False,
    rotate: bool = False,
) -> list[Outcome]:
    """Create (or keep, update, rotate) the blocks of ``descriptor``'s environment; see the module docs.

    All inputs are checked before the first block is written. Raises :class:`ConfigError` for bad input,
    :class:`DriverError` when the Prefect API fails.
    """
    inputs = read_inputs(environ)
    specs = block_specs(descriptor, inputs)
    try:
        register_block_types()
        outcomes = []
        saved: dict[str, Block] = {}
        for spec in specs:
            outcome, block = _apply(spec, inputs, overwrite=overwrite, rotate=rotate, saved=saved)
            saved[spec.entry] = block
            outcomes.append(outcome)
        return outcomes
    except HelixOpsError:
        raise
    except ValidationError as exc:  # a bug or a changed schema; locations only, inputs are never shown
        where = ", ".join(".".join(map(str, e["loc"])) or "(block)" for e in exc.errors())
        raise HelixOpsError(f"{exc.title} does not validate at {where}") from None
    except Exception as exc:  # API failures; the type is enough and names no value
        raise DriverError(f"Prefect API failed: {type(exc).__name__}", hint="is PREFECT_API_URL reachable?") from exc


def _existing(spec: BlockSpec) -> Block | None:
    try:
        return spec.cls.load(spec.name)
    except ValueError as exc:
        if "Unable to find block document" in str(exc):
            return None
        raise ConfigError(
            f"credentials.{spec.entry}",
            f"block {spec.name!r} exists but does not load as {spec.cls.get_block_type_slug()} "
            f"({type(exc).__name__}); delete it or fix its type",
        ) from None


def _apply(
    spec: BlockSpec, inputs: Mapping[str, str], *, overwrite: bool, rotate: bool, saved: Mapping[str, Block]
) -> tuple[Outcome, Block]:
    slug = spec.cls.get_block_type_slug()
    existing = _existing(spec)
    extra: Fields = {}
    if spec.cls is S3Bucket:
        extra["credentials"] = saved["storage"]  # the AwsCredentials block saved just before, by reference
    if existing is None:
        generated = spec.generated()
        fields = {**generated, **spec.fixed, **spec.supplied, **extra}
        block = spec.cls(**_drop_none(fields))
        block.save(spec.name)
        made = [f for f in spec.secret_fields if f in generated and f not in spec.supplied]
        note = "; ".join(filter(None, [f"{', '.join(made)} generated" if made else "", spec.notes(fields)]))
        return Outcome(spec.name, slug, "created", note), block
    current = {f: getattr(existing, f) for f in spec.compared}
    if rotate:
        wanted = {**current, **spec.generated(), **spec.fixed, **spec.supplied}
        if spec.cls is AnthropicCredentials and "api_key" not in spec.supplied and not current["placeholder"]:
            wanted = current  # a real API key is never replaced by a placeholder
    elif overwrite:
        wanted = {**current, **spec.fixed, **spec.supplied}
    else:
        ignored = sorted(_ignored_inputs(spec, inputs))
        note = f"{', '.join(ignored)} ignored: block exists (use --overwrite)" if ignored else "exists"
        return Outcome(spec.name, slug, "kept", note), existing
    if wanted == current:
        return Outcome(spec.name, slug, "kept", "unchanged"), existing
    changed = sorted(f for f in spec.compared if wanted.get(f) != current.get(f))
    kept = {f: getattr(existing, f) for f in type(existing).model_fields if f not in {"rotated_at", "credentials"}}
    fields = {**kept, **wanted, **extra}
    if "rotated_at" in type(existing).model_fields and set(changed) & set(spec.secret_fields):
        fields["rotated_at"] = utc_now()
    elif "rotated_at" in type(existing).model_fields:
        fields["rotated_at"] = existing.rotated_at
    block = spec.cls(**_drop_none(fields))
    block.save(spec.name, overwrite=True)
    return Outcome(spec.name, slug, "rotated" if rotate else "updated", f"{', '.join(changed)} changed"), block


def _ignored_inputs(spec: BlockSpec, inputs: Mapping[str, str]) -> set[str]:
    if spec.cls is S3Bucket:
        return set()
    return {name for name in inputs if INPUT_ENTRY[name] == spec.entry}
