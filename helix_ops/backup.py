"""Backups, the pure part: ids, the manifest, GFS retention, strategy choice and ``neo4j-admin`` argv.

Nothing here does I/O: drivers (``drivers/storage.py``, ``drivers/neo4j_backup.py``, ``drivers/redis_backup.py``)
do the work, flows decide with these functions.

* :func:`new_backup_id` / :func:`validate_backup_id`: ``<env>-<YYYYMMDDTHHMMSSZ>-<6 hex>``; anything else
  (path separators, ``..``, spaces, upper case, unicode) is a :class:`ConfigError`.
* :class:`Manifest`: versioned, frozen, ``extra="forbid"``; one :class:`ObjectEntry` per stored object
  (stored size and sha256, raw size and sha256, compression, encryption), tool and server versions, edition,
  counts, duration, strategy. Written **last**: a backup without a manifest does not exist.
* :func:`plan_retention`: grandfather-father-son (N daily, weekly, monthly), never deleting the newest backup
  nor the newest verified one; the plan *is* the dry run.
* :func:`choose_neo4j_strategy`: edition → strategy unless one is named.
* :func:`neo4j_dump_argv` & co: Neo4j 5 ``neo4j-admin database …`` argument lists (never shell strings);
  :func:`parse_enterprise_backup_output` reads the summary table of ``database backup`` (exit 1 may mean
  "succeeded with problems").

Example::

    bid = new_backup_id("prod", now)            # 'prod-20250102T020000Z-a1b2c3'
    plan = plan_retention(summaries, Retention(daily=7, weekly=4, monthly=12), now, tz="Europe/Berlin")
    plan.delete                                  # ids to delete, oldest first, each with a reason in plan.reasons
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from helix_ops.errors import ConfigError, PlanError

MANIFEST_NAME = "manifest.json"
"""The manifest's object name inside a backup (written last)."""

MANIFEST_VERSION = 1

_ID = re.compile(r"^(?P<env>[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?)-(?P<ts>\d{8}T\d{6}Z)-(?P<rand>[0-9a-f]{6})\Z")
_OBJECT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}\Z")
_ENV = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?\Z")

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
        """Parse a manifest; an unreadable one is a :class:`BackupIntegrityError`-worthy ConfigError."""
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


# --- retention ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupSummary:
    """What retention needs to know about one listed backup (one with a manifest)."""

    backup_id: str
    created_at: dt.datetime
    components: tuple[str, ...]
    verified: bool = False


@dataclass(frozen=True)
class RetentionPlan:
    """What retention would do: ``keep`` and ``delete`` (ids, newest first) with a reason for each."""

    keep: tuple[str, ...]
    delete: tuple[str, ...]
    reasons: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [f"keep {b}: {self.reasons[b]}" for b in self.keep] + \
               [f"delete {b}: {self.reasons[b]}" for b in self.delete]


def plan_retention(backups: Iterable[BackupSummary], daily: int, weekly: int, monthly: int,
                   tz: str = "UTC") -> RetentionPlan:
    """Grandfather-father-son over ``backups`` (each group of equal ``components`` on its own).

    Keeps the newest backup of each of the ``daily`` most recent days that have one, of the ``weekly`` most
    recent ISO weeks and of the ``monthly`` most recent months (calendar days in ``tz``); always keeps the
    newest backup and the newest verified backup of each group. Everything else is deleted.
    """
    zone = zoneinfo.ZoneInfo(tz)
    groups: dict[tuple[str, ...], list[BackupSummary]] = {}
    for b in backups:
        validate_backup_id(b.backup_id)
        if b.created_at.tzinfo is None:
            raise PlanError(f"backup {b.backup_id} has a naive creation time")
        groups.setdefault(tuple(sorted(b.components)), []).append(b)
    reasons: dict[str, str] = {}
    keep: list[BackupSummary] = []
    delete: list[BackupSummary] = []
    for comps, items in groups.items():
        items.sort(key=lambda b: (b.created_at, b.backup_id), reverse=True)
        why: dict[str, list[str]] = {}

        def bucket(n: int, name: str, key) -> None:  # noqa: ANN001
            seen: list[object] = []
            for b in items:
                k = key(b.created_at.astimezone(zone))
                if k in seen:
                    continue
                if len(seen) >= n:
                    break
                seen.append(k)
                why.setdefault(b.backup_id, []).append(f"{name} {k}")

        bucket(daily, "daily", lambda t: t.date().isoformat())
        bucket(weekly, "weekly", lambda t: "%d-W%02d" % t.isocalendar()[:2])
        bucket(monthly, "monthly", lambda t: f"{t.year}-{t.month:02d}")
        if items:
            why.setdefault(items[0].backup_id, []).append("newest")
        newest_verified = next((b for b in items if b.verified), None)
        if newest_verified is not None:
            why.setdefault(newest_verified.backup_id, []).append("newest verified")
        label = "+".join(comps) or "empty"
        for b in items:
            if b.backup_id in why:
                keep.append(b)
                reasons[b.backup_id] = f"[{label}] " + ", ".join(why[b.backup_id])
            else:
                delete.append(b)
                reasons[b.backup_id] = f"[{label}] outside {daily} daily / {weekly} weekly / {monthly} monthly"
    order = lambda b: (b.created_at, b.backup_id)  # noqa: E731
    return RetentionPlan(tuple(b.backup_id for b in sorted(keep, key=order, reverse=True)),
                         tuple(b.backup_id for b in sorted(delete, key=order, reverse=True)), reasons)


def choose_restore_candidate(manifests: Sequence[Manifest], backup_id: str | None, component: str | None = None,
                             require_verified: bool = True) -> Manifest:
    """The backup to restore: ``backup_id`` if given (it must be listed), else the newest verified one
    (holding ``component`` if given). Raises :class:`PlanError` when there is none."""
    if backup_id:
        validate_backup_id(backup_id)
        for m in manifests:
            if m.backup_id == backup_id:
                return m
        raise PlanError(f"backup {backup_id} is not listed (no manifest: it never completed, or was deleted)")
    pool = [m for m in manifests if (not component or component in m.components)
            and (m.verified or not require_verified) and m.safety_for is None]
    if not pool:
        what = "verified backup" if require_verified else "backup"
        raise PlanError(f"there is no {what}{' holding ' + component if component else ''} to restore: "
                        "name one with backup_id, or run verify-helix-backup first")
    return max(pool, key=lambda m: (m.created_at, m.backup_id))


# --- strategies ---------------------------------------------------------------------------------------------


def choose_neo4j_strategy(edition: str, requested: str = "auto") -> Neo4jStrategy:
    """``auto``: Enterprise → ``online-backup``, Community → ``logical`` (online, no downtime).

    A named strategy is checked against the edition: ``online-backup`` needs Enterprise.
    """
    edition = edition.lower()
    if edition not in ("community", "enterprise"):
        raise ConfigError("neo4j.edition", f"unknown Neo4j edition {edition!r}")
    if requested == "auto":
        return "online-backup" if edition == "enterprise" else "logical"
    if requested not in ("logical", "dump", "online-backup"):
        raise ConfigError("neo4j_strategy", f"{requested!r}: expected auto, logical, dump or online-backup")
    if requested == "online-backup" and edition != "enterprise":
        raise ConfigError("neo4j_strategy", "online-backup (neo4j-admin database backup) needs Neo4j Enterprise; "
                                            "use logical (online) or dump (offline) on Community")
    return requested  # type: ignore[return-value]


FLOW_STRATEGIES = ("logical", "dump")
"""What backup-helix can run today (the Enterprise online backup is argv and output parsing only)."""


def backup_strategy_for(detected_edition: str, descriptor_edition: str, requested: str) -> tuple[str, str]:
    """``(strategy, why)`` of a backup-helix run: ``requested`` (the flow parameter, else the descriptor's
    ``backup.neo4j_strategy``) checked against the edition the running server reports. ``auto`` picks by that
    edition; Enterprise's ``online-backup`` is not runnable by the flows yet, so ``auto`` gives ``logical`` there,
    and says so."""
    edition = detected_edition.lower()
    note = "" if edition == descriptor_edition.lower() else (
        f"; the server reports {edition} while the descriptor says {descriptor_edition.lower()}")
    chosen = choose_neo4j_strategy(edition, requested)
    if requested == "auto" and chosen == "online-backup":
        return "logical", (f"auto on Neo4j {edition}: the online backup is not wired into the flows yet, "
                           f"so the logical export (online){note}")
    if chosen not in FLOW_STRATEGIES:
        raise ConfigError("neo4j_strategy", f"{chosen!r} cannot run in backup-helix yet; use one of "
                                            f"{', '.join(FLOW_STRATEGIES)}")
    how = "picked by edition" if requested == "auto" else "as requested"
    return chosen, f"{chosen} on Neo4j {edition} ({how}){note}"


# --- neo4j-admin argv (Neo4j 5) -----------------------------------------------------------------------------

_DB = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}\Z")
_ADDR = re.compile(r"^[A-Za-z0-9.-]+:\d{1,5}\Z")


def _database(name: str) -> str:
    if not _DB.match(name):
        raise ConfigError("database", f"{name!r} is not a Neo4j database name")
    return name


def _path(p: str, what: str) -> str:
    if not p.startswith("/") or "\0" in p or "\n" in p:
        raise ConfigError(what, f"{p!r} must be an absolute path")
    return p


def neo4j_dump_argv(database: str, to_path: str, admin: str = "neo4j-admin") -> list[str]:
    """``neo4j-admin database dump <db> --to-path=<dir> --overwrite-destination=true`` (server stopped)."""
    return [admin, "database", "dump", _database(database), f"--to-path={_path(to_path, 'to_path')}",
            "--overwrite-destination=true"]


def neo4j_load_argv(database: str, from_path: str, admin: str = "neo4j-admin") -> list[str]:
    """``neo4j-admin database load <db> --from-path=<dir> --overwrite-destination=true`` (server stopped)."""
    return [admin, "database", "load", _database(database), f"--from-path={_path(from_path, 'from_path')}",
            "--overwrite-destination=true"]


def neo4j_import_argv(database: str, folder: str, nodes: list[tuple[str, str]],
                      relationships: list[tuple[str, str]], *, multiline: bool = False,
                      admin: str = "neo4j-admin") -> list[str]:
    """``neo4j-admin database import full`` of CSV files in ``folder`` (``(header, data)`` file names) over
    ``database`` (server stopped): integer ids, U+001F between list elements, no bad entry tolerated."""
    folder = _path(folder, "folder").rstrip("/")
    for header, data in [*nodes, *relationships]:
        for name in (header, data):
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}\Z", name):
                raise ConfigError("csv file", f"{name!r}: expected a plain file name")
    # the database before the options: after a --nodes / --relationships list it would be read as one more file
    return [admin, "database", "import", "full", _database(database), "--overwrite-destination=true",
            "--id-type=integer",
            "--array-delimiter=U+001F", "--bad-tolerance=0", "--skip-bad-relationships=false",
            "--skip-duplicate-nodes=false", f"--multiline-fields={'true' if multiline else 'false'}",
            f"--report-file={folder}/import.report",
            *(f"--nodes={folder}/{h},{folder}/{d}" for h, d in nodes),
            *(f"--relationships={folder}/{h},{folder}/{d}" for h, d in relationships)]


STAGING_DATABASE = "helix-restore"
"""The database a restore's import writes into while Neo4j still serves the old store (Community never
hosts a second user database, so the server ignores it); swapped in during the window."""
BEFORE_RESTORE = "helix-restore-before"
"""Where the swap keeps the replaced store (under the data folder) until the restored one is up."""

_STORE_SWAP = {
    # $1 data folder, $2 database, $3 staging database, $4 the folder keeping the replaced store
    "in": 'set -eu; cd "$1"; for d in databases transactions; do mkdir -p "$4/$d"; rm -rf "${4:?}/$d/$2"; '
          'if [ -e "$d/$2" ]; then mv "$d/$2" "$4/$d/$2"; fi; mv "$d/$3" "$d/$2"; done',
    "back": 'set -eu; cd "$1"; for d in databases transactions; do if [ -e "$4/$d/$2" ]; then '
            'rm -rf "${d:?}/$2"; mv "$4/$d/$2" "$d/$2"; fi; done; rmdir "$4/databases" "$4/transactions" "$4" '
            '2>/dev/null || true',
    "drop": 'set -eu; cd "$1"; rm -rf "./$4" "databases/$3" "transactions/$3"',
    # exit 3: a store is kept aside in $4 (a restore interrupted inside its window, or whose drop failed): any
    # database's, since drop removes all of $4; an unmatched glob stays literal and does not exist
    "check": 'set -eu; cd "$1"; for f in "$4"/*/*; do if [ -e "$f" ]; then echo "$f" >&2; exit 3; fi; done',
}
LEFTOVER_EXIT = 3
"""``check``'s exit code when a previous restore's kept-aside store is still there."""


def neo4j_store_swap_argv(op: str, data: str, database: str, staging: str = STAGING_DATABASE) -> list[str]:
    """argv that, over Neo4j's data folder ``data`` (server stopped for ``in`` and ``back``), swaps the
    ``staging`` database's store and transaction logs in for ``database``'s, keeping the replaced ones aside
    (``in``); puts them back (``back``: the restored store did not come up); removes what is kept aside
    and any staging leftovers (``drop``); or exits :data:`LEFTOVER_EXIT` when a store is still kept aside
    (``check``: a restore was interrupted between ``in`` and ``drop``). A fixed script; the names come as
    arguments, checked first."""
    if op not in _STORE_SWAP:
        raise ConfigError("store swap", f"{op!r}: expected one of {sorted(_STORE_SWAP)}")
    if _database(database) == _database(staging):
        raise ConfigError("store swap", f"the staging database must differ from {database!r}")
    return ["sh", "-c", _STORE_SWAP[op], "helix-store-swap", _path(data, "data"), database, staging, BEFORE_RESTORE]


def neo4j_check_argv(database: str, from_path: str | None = None, admin: str = "neo4j-admin") -> list[str]:
    """``neo4j-admin database check <db> [--from-path=<dump dir>]`` (never on a database in use)."""
    argv = [admin, "database", "check", _database(database)]
    if from_path:
        argv.append(f"--from-path={_path(from_path, 'from_path')}")
    return argv


def neo4j_backup_argv(database: str, from_address: str, to_path: str, *, backup_type: str = "AUTO",
                      compress: bool = True, admin: str = "neo4j-admin") -> list[str]:
    """Enterprise online backup: ``neo4j-admin database backup --from=<host:port> --to-path=<dir> --type=…``."""
    if not _ADDR.match(from_address):
        raise ConfigError("from_address", f"{from_address!r}: expected host:port of server.backup.listen_address")
    if backup_type not in ("AUTO", "FULL", "DIFF"):
        raise ConfigError("backup_type", f"{backup_type!r}: expected AUTO, FULL or DIFF")
    return [admin, "database", "backup", f"--from={from_address}", f"--to-path={_path(to_path, 'to_path')}",
            f"--type={backup_type}", f"--compress={'true' if compress else 'false'}", _database(database)]


def neo4j_restore_argv(database: str, from_path: str, *, restore_until: str | None = None,
                       admin: str = "neo4j-admin") -> list[str]:
    """Enterprise restore: ``neo4j-admin database restore --from-path=<last backup file> --overwrite-destination=true``."""
    argv = [admin, "database", "restore", f"--from-path={_path(from_path, 'from_path')}"]
    if restore_until:
        if not re.match(r"^[0-9T:.+\-Z ]{1,40}\Z", restore_until):
            raise ConfigError("restore_until", f"{restore_until!r}: expected a transaction id or a timestamp")
        argv.append(f"--restore-until={restore_until}")
    return [*argv, "--overwrite-destination=true", _database(database)]


@dataclass(frozen=True)
class EnterpriseBackupResult:
    """The outcome of ``neo4j-admin database backup``, from its exit code and summary table.

    ``status``: ``ok`` (exit 0, every database successful), ``with-problems`` (the backups were taken but the
    tool reported problems, e.g. exit 1 with every row successful), ``failed``.
    """

    status: Literal["ok", "with-problems", "failed"]
    rows: tuple[dict[str, str], ...]
    problems: tuple[str, ...]

    @property
    def succeeded(self) -> bool:
        return self.status != "failed"


def parse_enterprise_backup_output(rc: int, output: str) -> EnterpriseBackupResult:
    """Read ``neo4j-admin database backup`` output: the ``| DATABASE | LAST BACKUP | STATUS | DETAILS |``
    table, and any ERROR/WARN lines. Exit 0 → ok (unless a row failed); exit 1 → with-problems when every
    database row says successful, else failed; any other exit → failed."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    problems: list[str] = []
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith("|") and line.endswith("|"):
            cells = [c.strip().strip('"').strip() for c in line.strip("|").split("|")]
            if header is None and any(c.upper() == "DATABASE" for c in cells):
                header = [c.upper() for c in cells]
                continue
            if header is not None and len(cells) == len(header):
                rows.append(dict(zip(header, cells)))
        elif re.match(r"^(\S+\s+)?(ERROR|WARN|WARNING)\b", line) or "problem" in line.lower():
            problems.append(line)
    bad = [r for r in rows if r.get("STATUS", "").lower() not in ("successful", "success")]
    problems += [f"{r.get('DATABASE', '?')}: {r.get('STATUS', '?')} {r.get('DETAILS', '')}".strip() for r in bad]
    if rc == 0 and rows and not bad:
        status: Literal["ok", "with-problems", "failed"] = "ok" if not problems else "with-problems"
    elif rc in (0, 1) and rows and not bad:
        status = "with-problems"
        if rc == 1 and not problems:
            problems.append("neo4j-admin exited 1 although every database reports a successful backup")
    else:
        status = "failed"
        if not rows:
            problems.append(f"no backup summary table in the output (exit {rc})")
    return EnterpriseBackupResult(status, tuple(rows), tuple(problems))


# --- redis argv ---------------------------------------------------------------------------------------------


def redis_cli_rdb_argv(host: str, port: int, to_file: str, redis_cli: str = "redis-cli",
                       user: str | None = None) -> list[str]:
    """``redis-cli --rdb <file>`` against ``host:port``: pulls an RDB over the replication protocol.

    The password is never on argv: the runner passes it as ``REDISCLI_AUTH`` in the environment.
    """
    if not re.match(r"^[A-Za-z0-9.:-]+\Z", host):
        raise ConfigError("redis.host", f"{host!r} is not a host name or address")
    if not 0 < int(port) < 65536:
        raise ConfigError("redis.port", f"{port!r} is not a port")
    argv = [redis_cli, "-h", host, "-p", str(int(port)), "--no-auth-warning"]
    if user and user != "default":
        if not re.match(r"^[A-Za-z0-9._-]+\Z", user):
            raise ConfigError("redis.user", f"{user!r} is not a Redis user name")
        argv += ["--user", user]
    return [*argv, "--rdb", _path(to_file, "to_file")]


def redis_check_rdb_argv(rdb_file: str, tool: str = "redis-check-rdb") -> list[str]:
    """``redis-check-rdb <file>``."""
    return [tool, _path(rdb_file, "rdb_file")]


def parse_redis_check_rdb(rc: int, output: str) -> str:
    """The one-line verdict of ``redis-check-rdb``; raises :class:`PlanError` when the RDB is not OK."""
    ok = rc == 0 and "RDB looks OK" in output
    keys = re.search(r"(\d+)\s+keys read", output)
    if not ok:
        tail = [ln for ln in output.strip().splitlines() if ln.strip()][-3:]
        raise PlanError(f"redis-check-rdb refused the RDB (exit {rc}): {' | '.join(tail)}")
    return f"RDB looks OK ({keys.group(1)} keys read)" if keys else "RDB looks OK"


def redis_backup_counts(before: dict[str, Any], after: dict[str, Any], rdb_verdict: str) -> dict[str, Any]:
    """The manifest's Redis counts: what the RDB holds, not what the live server held at some moment.

    ``keys`` is ``redis-check-rdb``'s "keys read" (the snapshot itself). The per-database counts and the TTL
    count can only come from ``INFO`` on the live server: they are kept when INFO gave the same figures before
    and after the snapshot and they add up to the RDB's keys, else left empty (``{}`` / None: unknown), so
    verification and restore never fail a healthy backup of a Redis that was being written to. ``expires``
    (informational) is INFO's before the snapshot."""
    read = re.search(r"\((\d+) keys read\)", rdb_verdict)
    keys = int(read.group(1)) if read else int(before["keys"])
    steady = before["keys_by_db"] == after["keys_by_db"] and sum(before["keys_by_db"].values()) == keys
    return {"keys": keys, "keys_by_db": dict(before["keys_by_db"]) if steady else {},
            "expires": int(before["expires"])}


def redis_keyspace_counts(info_keyspace: dict[str, object]) -> tuple[int, int, dict[str, int]]:
    """``(keys, expires, keys by db)`` from redis-py's ``INFO keyspace`` dict (``{'db0': {'keys': 3, …}}``)."""
    total = expires = 0
    by_db: dict[str, int] = {}
    for db, stats in sorted(info_keyspace.items()):
        if not isinstance(stats, dict):
            continue
        by_db[db] = int(stats.get("keys", 0))
        total += by_db[db]
        expires += int(stats.get("expires", 0))
    return total, expires, by_db
