"""Register the helix block types and create an environment's credential blocks.

    python -m blocks.bootstrap --env local            # reads deployments/local.yaml in the cwd
    python -m blocks.bootstrap --descriptor PATH
    HELIX_NEO4J_PASSWORD=... python -m blocks.bootstrap --env staging --overwrite

Creates every block the descriptor names under ``credentials`` that does not exist yet. Secrets come from
environment variables (never from argv); a secret not supplied is generated with
``secrets.token_urlsafe(32)`` (43 characters). Existing blocks are kept, so a second run changes nothing
and says so, unless:

* ``--overwrite``: existing blocks take the values supplied through environment variables (and the
  descriptor's settings); blocks with nothing supplied are kept;
* ``--rotate``: every generated secret is generated anew (supplied values still win). This changes only the
  blocks: the running servers keep their old passwords until the rotate flow applies the new ones.

Inputs (environment variables):

========================================  =====================================================
HELIX_NEO4J_USER                          Neo4j user (default ``neo4j``)
HELIX_NEO4J_PASSWORD                      Neo4j password (8+ characters)
HELIX_REDIS_PASSWORD                      Redis password (8+)
HELIX_REDIS_SENTINEL_PASSWORD             password of the Sentinels, if they need one
HELIX_NEXTAUTH_SECRET                     dashboard NEXTAUTH_SECRET (32+)
HELIX_ANTHROPIC_API_KEY                   Anthropic API key; without it a placeholder is stored
HELIX_S3_ACCESS_KEY_ID / _SECRET_ACCESS_KEY  S3 keys (both or neither; neither: boto's default chain)
========================================  =====================================================

Supplied secrets must be printable ASCII without spaces, quotes, backslash, backtick or ``$``: they pass
through ``.env`` files, redis.conf and NEO4J_AUTH. The output names blocks and what happened, never a value.
Exit codes: 0 done, 2 invalid input (one line on stderr), 1 the Prefect API failed.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets as _random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials, S3Bucket
from prefect_aws.client_parameters import AwsClientParameters
from prefect_docker import DockerHost
from pydantic import SecretStr, ValidationError

from blocks.credentials import (
    USER_PATTERN,
    AnthropicCredentials,
    HelixAppSecrets,
    Neo4jCredentials,
    RedisCredentials,
    utc_now,
)
from blocks.storage import LocalBackupStorage
from helix_ops.descriptor import Descriptor, LocalStorage, descriptor_path, load_descriptor
from helix_ops.errors import ConfigError, DriverError, HelixOpsError

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2

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

GENERATED_BYTES = 32
"""``token_urlsafe(32)``: 256 random bits, 43 characters."""


def generate_secret() -> str:
    """A new random secret: 43 URL-safe characters (safe in .env, redis.conf and NEO4J_AUTH)."""
    return _random.token_urlsafe(GENERATED_BYTES)


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
        if len(value) < spec.min_length:
            raise ConfigError(name, f"must be at least {spec.min_length} characters")
        found[name] = value
    if ("HELIX_S3_ACCESS_KEY_ID" in found) != ("HELIX_S3_SECRET_ACCESS_KEY" in found):
        raise ConfigError("HELIX_S3_ACCESS_KEY_ID", "give HELIX_S3_ACCESS_KEY_ID and HELIX_S3_SECRET_ACCESS_KEY together")
    return found


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


_INPUT_FIELDS = {
    "HELIX_NEO4J_USER": "neo4j", "HELIX_NEO4J_PASSWORD": "neo4j", "HELIX_REDIS_PASSWORD": "redis",
    "HELIX_REDIS_SENTINEL_PASSWORD": "redis", "HELIX_NEXTAUTH_SECRET": "dashboard",
    "HELIX_ANTHROPIC_API_KEY": "anthropic", "HELIX_S3_ACCESS_KEY_ID": "storage", "HELIX_S3_SECRET_ACCESS_KEY": "storage",
}


def _ignored_inputs(spec: BlockSpec, inputs: Mapping[str, str]) -> set[str]:
    if spec.cls is S3Bucket:
        return set()
    return {name for name in inputs if _INPUT_FIELDS[name] == spec.entry}


# --- command line -----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError("arguments", message)


def build_parser() -> argparse.ArgumentParser:
    """``python -m blocks.bootstrap`` arguments (no secret is ever an argument)."""
    parser = _Parser(
        prog="python -m blocks.bootstrap",
        description="Register the helix block types and create an environment's credential blocks. "
        "Secrets come from HELIX_* environment variables or are generated; see the module docs.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--env", metavar="NAME", help="environment: reads deployments/NAME.yaml in the cwd")
    which.add_argument("--descriptor", metavar="PATH", help="path of an environment descriptor")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--overwrite", action="store_true",
                     help="apply supplied HELIX_* values and descriptor settings to existing blocks")
    how.add_argument("--rotate", action="store_true",
                     help="generate new secrets for existing blocks (servers change only via the rotate flow)")
    return parser


def _descriptor(args: argparse.Namespace) -> Descriptor:
    if args.descriptor:
        return load_descriptor(args.descriptor)
    path = descriptor_path(args.env)
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml") if p.stem != "helix.config")
        raise ConfigError(
            "--env", f"unknown environment {args.env!r}: no {path}"
            + (f" (known: {', '.join(known)})" if known else " (run from the repository root)"),
        )
    descriptor = load_descriptor(path)
    if descriptor.environment != args.env:
        raise ConfigError("environment", f"is {descriptor.environment!r}, expected {args.env!r}", str(path))
    return descriptor


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the bootstrap; returns the exit code. ``environ`` defaults to ``os.environ``."""
    env = os.environ if environ is None else environ
    try:
        args = build_parser().parse_args(argv)
        descriptor = _descriptor(args)
        outcomes = bootstrap(descriptor, env, overwrite=args.overwrite, rotate=args.rotate)
    except ConfigError as exc:
        return _fail(exc.one_line(), EXIT_INVALID)
    except HelixOpsError as exc:
        return _fail(str(exc), EXIT_FAILED)
    for outcome in outcomes:
        print(outcome.line())
    changed = [o for o in outcomes if o.action != "kept"]
    if changed:
        counts = {a: sum(o.action == a for o in outcomes) for a in ("created", "updated", "rotated", "kept")}
        print(f"environment {descriptor.environment}: " + ", ".join(f"{n} {a}" for a, n in counts.items() if n))
    else:
        print(f"environment {descriptor.environment}: nothing changed, all {len(outcomes)} blocks kept")
    return EXIT_OK


def _fail(message: str, code: int) -> int:
    print(f"blocks.bootstrap: error: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
