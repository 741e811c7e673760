"""Backups, the pure part: backup ids and the manifest.

Nothing here does I/O: drivers (``drivers/storage/``, ``drivers/neo4j_export.py`` and its siblings,
``drivers/redis_backup.py``) do the work, flows decide with these functions. The decisions over listed backups
(GFS retention, which backup to restore, which Neo4j strategy) are in :mod:`helix_ops.backup_plan`; the argv of
``neo4j-admin`` / ``redis-cli`` / ``redis-check-rdb`` and the reading of their output in
:mod:`helix_ops.backup_tools`.

* :func:`new_backup_id` / :func:`validate_backup_id`: ``<env>-<YYYYMMDDTHHMMSSZ>-<6 hex>``; anything else
  (path separators, ``..``, spaces, upper case, unicode) is a :class:`ConfigError`.
* :class:`Manifest`: versioned, frozen, ``extra="forbid"``; one :class:`ObjectEntry` per stored object
  (stored size and sha256, raw size and sha256, compression, encryption), tool and server versions, edition,
  counts, duration, strategy. Written **last**: a backup without a manifest does not exist.

Example::

    bid = new_backup_id("prod", now)            # 'prod-20250102T020000Z-a1b2c3'
    m = Manifest.from_json(data)                # data: the bytes of a backup's MANIFEST_NAME
    m.verified, m.objects_of("neo4j")
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from helix_ops.errors import ConfigError

MANIFEST_NAME = "manifest.json"
"""The manifest's object name inside a backup (written last)."""

MANIFEST_VERSION = 1

_ENV_PART = r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?"
_TS_PART = r"[0-9]{8}T[0-9]{6}Z"
_RAND_PART = r"[0-9a-f]{6}"
BACKUP_ID_PATTERN = rf"^{_ENV_PART}-{_TS_PART}-{_RAND_PART}$"
"""The backup id's shape as a portable regex (JSON schema, the Prefect UI's JavaScript, Python): the flows'
``backup_id`` parameters carry it; :func:`validate_backup_id` also checks the time and refuses a final newline."""
_ID = re.compile(rf"^(?P<env>{_ENV_PART})-(?P<ts>{_TS_PART})-(?P<rand>{_RAND_PART})\Z")
_OBJECT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}\Z")
_ENV = re.compile(rf"^{_ENV_PART}\Z")

Component = Literal["neo4j", "redis"]
Neo4jStrategy = Literal["logical", "dump", "online-backup"]
RedisStrategy = Literal["redis-cli-rdb", "bgsave"]


# --- ids ----------------------------------------------------------------------------------------------------


def new_backup_id(environment: str, now: dt.datetime, rand: str | None = None) -> str:
    """A fresh backup id: ``<environment>-<UTC time as YYYYMMDDTHHMMSSZ>-<6 random hex>``.

    ``now`` must be timezone-aware. The id sorts by time within an environment.
    """
    if not _ENV.match(environment):
        raise ConfigError("environment", f"{environment!r} is not an environment name (a-z, 0-9, '-')")
    if now.tzinfo is None:
        raise ConfigError("now", "must be timezone-aware")
    suffix = rand if rand is not None else secrets.token_hex(3)
    return validate_backup_id(f"{environment}-{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{suffix}")


def validate_backup_id(backup_id: object) -> str:
    """Return ``backup_id`` if it is a well-formed backup id, else raise :class:`ConfigError`.

    Refuses anything that could leave the backup folder or confuse a key listing: ``/``, ``\\``, ``..``,
    whitespace, NUL, upper case, non-ASCII, an impossible timestamp.
    """
    if not isinstance(backup_id, str):
        raise ConfigError("backup_id", f"expected a string, got {type(backup_id).__name__}")
    shown = backup_id if len(backup_id) <= 80 else backup_id[:77] + "..."
    if not _ID.match(backup_id):
        raise ConfigError("backup_id", f"{shown!r} is not a backup id (expected <env>-<YYYYMMDDTHHMMSSZ>-<6 hex>, "
                                       "e.g. prod-20250102T020000Z-a1b2c3)")
    backup_time(backup_id)
    return backup_id


def backup_time(backup_id: str) -> dt.datetime:
    """The UTC time encoded in a backup id."""
    match = _ID.match(backup_id)
    if not match:
        raise ConfigError("backup_id", f"{backup_id!r} is not a backup id")
    try:
        return dt.datetime.strptime(match.group("ts"), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise ConfigError("backup_id", f"{backup_id!r} holds an impossible time") from None


def backup_environment(backup_id: str) -> str:
    """The environment part of a backup id."""
    match = _ID.match(validate_backup_id(backup_id))
    assert match is not None
    return match.group("env")


def validate_object_name(name: object) -> str:
    """An object name inside a backup (``neo4j.jsonl.zst``): lower-case letters, digits, ``._-``, no ``..``."""
    if not isinstance(name, str) or not _OBJECT.match(name) or ".." in name:
        raise ConfigError("object", f"{name!r} is not an object name (a-z, 0-9, '.', '_', '-'; no '..')")
    return name


# --- manifest -----------------------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Sha256 = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]


class ObjectEntry(_Frozen):
    """One stored object of a backup.

    ``size``/``sha256`` are of the bytes as stored (compressed, maybe encrypted): what verify re-reads.
    ``raw_size``/``raw_sha256`` are of the content before compression (what a restore gets back).
    """

    name: StrictStr
    component: Component
    kind: StrictStr
    size: Annotated[StrictInt, Field(ge=0)]
    sha256: Sha256
    raw_size: Annotated[StrictInt, Field(ge=0)]
    raw_sha256: Sha256
    compression: Literal["zstd", "none"] = "zstd"
    encryption: Literal["none", "aes-256-gcm-chunked"] = "none"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        try:
            return validate_object_name(v)
        except ConfigError as exc:
            raise ValueError(exc.message) from None


class Neo4jInfo(_Frozen):
    """What was backed up from Neo4j and how."""

    strategy: Neo4jStrategy
    server_version: StrictStr
    edition: Literal["community", "enterprise"]
    database: StrictStr = "neo4j"
    format_version: StrictInt | None = None
    nodes: Annotated[StrictInt, Field(ge=0)]
    relationships: Annotated[StrictInt, Field(ge=0)]
    labels: dict[StrictStr, StrictInt] = {}
    relationship_types: dict[StrictStr, StrictInt] = {}
    constraints: StrictInt = 0
    indexes: StrictInt = 0
    writer_paused: StrictBool = False
    downtime_s: float | None = None
    tool: StrictStr = ""
    warnings: tuple[StrictStr, ...] = ()


class RedisInfo(_Frozen):
    """What was backed up from Redis and how."""

    strategy: RedisStrategy
    server_version: StrictStr
    keys: Annotated[StrictInt, Field(ge=0)]
    keys_by_db: dict[StrictStr, StrictInt] = {}
    expires: Annotated[StrictInt, Field(ge=0)] = 0
    rdb_check: StrictStr = ""
    tool: StrictStr = ""


class Verification(_Frozen):
    """A verify-helix-backup result recorded in the manifest."""

    at: dt.datetime
    by: StrictStr
    ok: StrictBool
    checks: tuple[StrictStr, ...] = ()


class Manifest(_Frozen):
    """The manifest of one backup (JSON, written last). ``manifest_version`` says how to read it."""

    manifest_version: Literal[1] = MANIFEST_VERSION
    backup_id: StrictStr
    environment: StrictStr
    project: StrictStr
    created_at: dt.datetime
    finished_at: dt.datetime
    duration_s: Annotated[float, Field(ge=0)]
    tool: StrictStr
    components: tuple[Component, ...]
    objects: tuple[ObjectEntry, ...]
    encrypted: StrictBool = False
    key_fingerprint: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{16}$")] | None = None
    neo4j: Neo4jInfo | None = None
    redis: RedisInfo | None = None
    safety_for: StrictStr | None = None
    verification: Verification | None = None

    @field_validator("backup_id")
    @classmethod
    def _id(cls, v: str) -> str:
        try:
            return validate_backup_id(v)
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    @field_validator("objects")
    @classmethod
    def _unique(cls, v: tuple[ObjectEntry, ...]) -> tuple[ObjectEntry, ...]:
        names = [o.name for o in v]
        if len(set(names)) != len(names):
            raise ValueError("object names must be unique")
        return v

    @property
    def verified(self) -> bool:
        return self.verification is not None and self.verification.ok

    def object(self, name: str) -> ObjectEntry:
        for o in self.objects:
            if o.name == name:
                return o
        raise ConfigError("object", f"backup {self.backup_id} has no object {name!r}")

    def objects_of(self, component: str) -> tuple[ObjectEntry, ...]:
        return tuple(o for o in self.objects if o.component == component)

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        """Parse a manifest; an unreadable one is a :class:`BackupIntegrityError`-worthy ConfigError.

        The bytes pass :func:`helix_ops.safe_load.load_json` first (size, UTF-8, depth, duplicate keys)."""
        from helix_ops.safe_load import MANIFEST_LIMIT, load_json

        try:
            load_json(data, limit=MANIFEST_LIMIT, what="manifest")
        except ConfigError as exc:
            raise ConfigError("manifest", f"not a readable helix-ops manifest: {exc.one_line()}") from None
        try:
            return cls.model_validate_json(data)
        except ValueError as exc:
            raise ConfigError("manifest", f"not a readable helix-ops manifest: {str(exc).splitlines()[0]}") from None

    def with_verification(self, verification: Verification) -> Manifest:
        return self.model_copy(update={"verification": verification})


def manifest_markdown(m: Manifest) -> str:
    """The manifest as a markdown artifact (no secret is ever in a manifest)."""
    lines = [f"# Backup `{m.backup_id}`", "",
             f"- environment: `{m.environment}` (project `{m.project}`)",
             f"- created: {m.created_at.isoformat()}, duration {m.duration_s:.1f}s, tool {m.tool}",
             f"- components: {', '.join(m.components)}; encrypted: {'yes' if m.encrypted else 'no'}",
             f"- verified: {m.verification.at.isoformat() + ' by ' + m.verification.by if m.verified else 'no'}"]
    if m.neo4j:
        n = m.neo4j
        lines.append(f"- neo4j: {n.strategy} of {n.database} on {n.edition} {n.server_version}: {n.nodes} nodes, "
                     f"{n.relationships} relationships, {n.constraints} constraints, {n.indexes} indexes"
                     + (f", downtime {n.downtime_s:.1f}s" if n.downtime_s is not None else "")
                     + ("; writer paused during the export" if n.writer_paused else ""))
        for w in n.warnings:
            lines.append(f"  - warning: {w}")
    if m.redis:
        r = m.redis
        lines.append(f"- redis: {r.strategy} of Redis {r.server_version}: {r.keys} keys ({r.expires} with TTL); "
                     f"check: {r.rdb_check or 'n/a'}")
    lines += ["", "| object | component | stored bytes | raw bytes | sha256 (stored) |", "|---|---|---|---|---|"]
    lines += [f"| `{o.name}` | {o.component} | {o.size} | {o.raw_size} | `{o.sha256[:16]}…` |" for o in m.objects]
    return "\n".join(lines)
