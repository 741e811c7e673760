"""Helix's Neo4j schema as versioned migrations, and the plan for applying them (pure: no I/O).

A migration is an ordered list of idempotent schema statements (``CREATE ... IF NOT EXISTS``). The database
keeps a ledger of what was applied: one ``(:HelixMigration {version, name, checksum, applied_at, applied_by})``
node per migration, unique on ``version`` (migration 1 creates that constraint). ``plan_migrations`` compares
the ledger with :data:`MIGRATIONS` and says, per migration, ``apply`` or ``already-applied`` with a reason; it
refuses (:class:`PlanError`) a ledger whose checksum differs from the code (an applied migration was edited),
a ledger that knows versions the code does not (the database is newer than this helix-ops), or a ledger with
a gap.

**Labels.** The deployment guide does not name Helix's node labels. The contract chosen here:

- every Helix domain node carries the generic label ``:Entity`` and a ``uid`` property; ``Entity.uid`` is
  unique (Neo4j Community supports uniqueness constraints; node keys and existence constraints are
  Enterprise-only, so "every Entity has a uid" cannot be enforced by the database);
- ``:Gate`` nodes (the guide's approval gates ``gate_1`` … ``gate_5``) also carry a unique ``uid``.

Add a label to :data:`UID_LABELS` with a *new* migration (never by editing an applied one: its checksum would
change and the next run would refuse the ledger).

**The ``uid_prefix`` rule** (``server.uid_prefix`` in helix.config.yaml, e.g. ``cpe``). Neo4j Community has
no property-type or pattern constraints, so the database cannot reject a uid with the wrong prefix. What is
done instead: ``init-helix-db`` records the prefix once in a singleton ``(:HelixSchema {key: 'helix',
uid_prefix})`` node (and refuses a run that asks for a different prefix), and counts the offenders with
:func:`uid_prefix_offenders_query`, reporting the number. Enforcement at write time stays with Helix
(``enforcement.uid_validation``).

Example::

    from helix_ops.migrations import MIGRATIONS, plan_migrations
    steps = plan_migrations({1: MIGRATIONS[0].checksum})
    [s.action for s in steps]  # ['already-applied', 'apply', 'apply']
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from helix_ops.config import ServerSection
from helix_ops.errors import ConfigError, PlanError

LEDGER_LABEL = "HelixMigration"
"""Label of the ledger nodes, one per applied migration."""

SCHEMA_LABEL = "HelixSchema"
"""Label of the singleton node recording schema-wide settings (the uid prefix)."""

SCHEMA_KEY = "helix"
DEFAULT_UID_PREFIX = "cpe"
"""``server.uid_prefix``'s default (helix.config.yaml): what init-helix-db records when it is given none."""
"""``key`` of the singleton :data:`SCHEMA_LABEL` node."""

UID_LABELS: tuple[str, ...] = ("Entity", "Gate")
"""Node labels whose ``uid`` is unique (see the module docstring for why these)."""

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IDEMPOTENT = re.compile(
    r"^\s*(CREATE\s+(CONSTRAINT|((RANGE|TEXT|POINT|LOOKUP|FULLTEXT|VECTOR)\s+)?INDEX)\s+\w+\s+IF\s+NOT\s+EXISTS\b"
    r"|DROP\s+(CONSTRAINT|INDEX)\s+\w+\s+IF\s+EXISTS\s*$)",
    re.IGNORECASE | re.DOTALL,
)


def _check_identifier(label: str) -> None:
    if not _IDENTIFIER.match(label):
        raise ConfigError("label", f"{label!r} is not a plain Neo4j label (letters, digits, underscore)")


def checksum(statements: Sequence[str]) -> str:
    """SHA-256 (64 hex digits) of a migration's statements, in order and exactly as written."""
    canonical = json.dumps(list(statements), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class Migration(BaseModel):
    """One schema migration: a version (1, 2, …), a kebab-case name and idempotent schema statements."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(gt=0)
    name: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    statements: tuple[str, ...] = Field(min_length=1)

    @property
    def checksum(self) -> str:
        """:func:`checksum` of :attr:`statements`."""
        return checksum(self.statements)


def _snake(label: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", label).lower()


def uid_constraint(label: str) -> str:
    """``CREATE CONSTRAINT <label>_uid IF NOT EXISTS FOR (n:<label>) REQUIRE n.uid IS UNIQUE``."""
    _check_identifier(label)
    return f"CREATE CONSTRAINT {_snake(label)}_uid IF NOT EXISTS FOR (n:{label}) REQUIRE n.uid IS UNIQUE"


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="bootstrap-ledger",
        statements=(
            f"CREATE CONSTRAINT helix_migration_version IF NOT EXISTS "
            f"FOR (m:{LEDGER_LABEL}) REQUIRE m.version IS UNIQUE",
            f"CREATE CONSTRAINT helix_schema_key IF NOT EXISTS FOR (s:{SCHEMA_LABEL}) REQUIRE s.key IS UNIQUE",
        ),
    ),
    Migration(
        version=2,
        name="node-uid-uniqueness",
        statements=(
            # Written out, not generated from UID_LABELS: an applied migration's text must never change.
            "CREATE CONSTRAINT entity_uid IF NOT EXISTS FOR (n:Entity) REQUIRE n.uid IS UNIQUE",
            "CREATE CONSTRAINT gate_uid IF NOT EXISTS FOR (n:Gate) REQUIRE n.uid IS UNIQUE",
        ),
    ),
    Migration(
        version=3,
        name="lookup-indexes",
        statements=(
            # Listing and filtering entities by kind and recency (dashboard views).
            "CREATE INDEX entity_type IF NOT EXISTS FOR (n:Entity) ON (n.type)",
            "CREATE INDEX entity_updated_at IF NOT EXISTS FOR (n:Entity) ON (n.updated_at)",
            # Gate timeouts: open gates older than timeout_hours.
            "CREATE INDEX gate_status_opened_at IF NOT EXISTS FOR (g:Gate) ON (g.status, g.opened_at)",
            # Name search in the dashboard (CONTAINS / ENDS WITH need a text index).
            "CREATE TEXT INDEX entity_name_text IF NOT EXISTS FOR (n:Entity) ON (n.name)",
        ),
    ),
)
"""Helix's schema, in the order it is applied. Append only: never edit or reorder an applied migration."""


def validate_migrations(migrations: Sequence[Migration]) -> None:
    """Raise :class:`PlanError` unless versions run 1, 2, 3, … without gaps, names are unique and every
    statement is idempotent (``CREATE … <name> IF NOT EXISTS`` or ``DROP … <name> IF EXISTS``)."""
    names: set[str] = set()
    for position, m in enumerate(migrations, start=1):
        if m.version != position:
            raise PlanError(f"migration {m.name!r} has version {m.version}; expected {position} (versions run 1, 2, 3, …)")
        if m.name in names:
            raise PlanError(f"migration name {m.name!r} is used twice")
        names.add(m.name)
        for statement in m.statements:
            if not _IDEMPOTENT.match(statement):
                raise PlanError(
                    f"migration {m.version} ({m.name}): statement is not an idempotent named schema statement "
                    f"(CREATE CONSTRAINT|INDEX <name> IF NOT EXISTS …, DROP … <name> IF EXISTS): {statement!r}"
                )


def pending(applied: Iterable[int], migrations: Sequence[Migration] = MIGRATIONS) -> list[Migration]:
    """The migrations whose version is not in ``applied``, in order."""
    done = set(applied)
    return [m for m in migrations if m.version not in done]


def verify_applied(applied: Mapping[int, str], migrations: Sequence[Migration] = MIGRATIONS) -> None:
    """Raise :class:`PlanError` if the ledger (``{version: checksum}``) disagrees with the code.

    Refused: an applied migration whose checksum differs (it was edited after it was applied), a version
    the code does not know (the database was migrated by a newer helix-ops), a gap (a version is missing
    below an applied one).
    """
    known = {m.version: m for m in migrations}
    unknown = sorted(set(applied) - set(known))
    if unknown:
        raise PlanError(
            f"the database records migration(s) {unknown} that this helix-ops does not know "
            f"(it knows 1..{len(migrations)}): it was migrated by a newer helix-ops; upgrade helix-ops"
        )
    for version in sorted(applied):
        m = known[version]
        if applied[version] != m.checksum:
            raise PlanError(
                f"migration {version} ({m.name}) was edited after it was applied: the database recorded "
                f"checksum {str(applied[version])[:12]}…, the code has {m.checksum[:12]}…. Applied migrations "
                f"must not change: restore its statements and put the change in a new migration"
            )
    if applied:
        gaps = [v for v in range(1, max(applied)) if v not in applied]
        if gaps:
            raise PlanError(
                f"the migration ledger has a gap: {gaps} not applied but {max(applied)} is; "
                f"the ledger was altered by hand"
            )


class Step(BaseModel):
    """What to do with one migration: ``apply`` it, or nothing because it is ``already-applied``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int
    name: str
    checksum: str
    action: Literal["apply", "already-applied"]
    reason: str


def plan_migrations(applied: Mapping[int, str], migrations: Sequence[Migration] = MIGRATIONS) -> list[Step]:
    """One :class:`Step` per migration, in order; raises :class:`PlanError` as :func:`verify_applied` does."""
    validate_migrations(migrations)
    verify_applied(applied, migrations)
    steps = []
    for m in migrations:
        if m.version in applied:
            steps.append(Step(version=m.version, name=m.name, checksum=m.checksum, action="already-applied",
                              reason=f"already applied (ledger checksum {m.checksum[:12]}… matches)"))
        else:
            steps.append(Step(version=m.version, name=m.name, checksum=m.checksum, action="apply",
                              reason="not in the ledger"))
    return steps


def up_to_date(applied: Mapping[int, str], recorded_prefix: str | None, prefix: str,
               migrations: Sequence[Migration] = MIGRATIONS) -> str | None:
    """Why ``init-helix-db`` has nothing to do (every migration in the ledger with the code's checksum, the uid
    prefix recorded as ``prefix``), or None when it has (or must refuse something: it then says what)."""
    if recorded_prefix != prefix or set(applied) != {m.version for m in migrations}:
        return None
    if any(applied[m.version] != m.checksum for m in migrations):
        return None
    return (f"all {len(migrations)} migrations applied with matching checksums, uid prefix {prefix!r} recorded")


def validate_uid_prefix(prefix: str) -> str:
    """``prefix`` if it is a valid ``server.uid_prefix`` (lowercase letter, then lowercase letters/digits)."""
    try:
        return ServerSection(uid_prefix=prefix).uid_prefix
    except ValidationError as exc:
        raise ConfigError("server.uid_prefix", f"{prefix!r}: {exc.errors()[0]['msg']}") from None


def check_recorded_uid_prefix(recorded: str, requested: str) -> None:
    """Raise :class:`PlanError` if the database already records a different uid prefix."""
    if recorded != requested:
        raise PlanError(
            f"the database records uid_prefix {recorded!r} but this run asked for {requested!r}: "
            f"changing the prefix of an existing graph is not supported (every existing uid would offend)"
        )


# --- Cypher the driver runs (kept here so it is reviewed and tested as data) -------------------------

APPLIED_QUERY = f"MATCH (m:{LEDGER_LABEL}) RETURN m.version AS version, m.checksum AS checksum"

RECORD_MIGRATION_QUERY = (
    f"MERGE (m:{LEDGER_LABEL} {{version: $version}}) "
    "ON CREATE SET m.name = $name, m.checksum = $checksum, m.applied_at = datetime(), m.applied_by = $applied_by "
    "RETURN m.checksum AS checksum, toString(m.applied_at) AS applied_at, m.applied_by AS applied_by"
)
"""Race-safe: with the unique constraint on ``version`` two concurrent MERGEs create one node."""

RECORD_UID_PREFIX_QUERY = (
    f"MERGE (s:{SCHEMA_LABEL} {{key: $key}}) "
    "ON CREATE SET s.uid_prefix = $prefix, s.recorded_at = datetime() "
    "RETURN s.uid_prefix AS uid_prefix"
)

RECORDED_UID_PREFIX_QUERY = f"MATCH (s:{SCHEMA_LABEL} {{key: $key}}) RETURN s.uid_prefix AS uid_prefix"
"""Read-only: the recorded uid prefix (no row before init-helix-db's first run)."""

SERVER_INFO_QUERY = "CALL dbms.components() YIELD name, versions, edition RETURN versions[0] AS version, edition"


def uid_prefix_offenders_query(label: str | None = None) -> str:
    """Cypher counting nodes (of ``label``, or all) with a ``uid`` not starting with ``$prefix``."""
    if label is not None:
        _check_identifier(label)
    pattern = "(n)" if label is None else f"(n:{label})"
    return f"MATCH {pattern} WHERE n.uid IS NOT NULL AND NOT n.uid STARTS WITH $prefix RETURN count(n) AS offenders"


# --- The report ------------------------------------------------------------------------------------


def render_report(summary: Mapping[str, Any]) -> str:
    """Markdown for the ``init-helix-db`` artifact, from the summary ``run_init_db`` returns."""
    server = summary.get("server", {})
    uid = summary.get("uid_prefix", {})
    lines = [
        "# init-helix-db",
        "",
        f"Neo4j {server.get('version', '?')} ({server.get('edition', '?')}) at `{summary.get('uri', '?')}`",
        "",
        "| version | name | result | reason |",
        "|---|---|---|---|",
    ]
    for m in summary.get("migrations", []):
        reason = str(m.get("reason", "")).replace("|", "\\|")
        lines.append(f"| {m['version']} | {m['name']} | {m['outcome']} | {reason} |")
    lines += [
        "",
        f"Applied now: {len(summary.get('applied', []))}; already applied: {len(summary.get('already_applied', []))}.",
        "",
        "## uid prefix",
        "",
        f"Recorded prefix `{uid.get('recorded', '?')}`; nodes whose `uid` does not start with it: "
        f"**{uid.get('offenders', '?')}**.",
        "",
        "Neo4j Community has no property pattern constraints: the prefix is checked by a query and reported, "
        "not enforced by the database.",
        "",
    ]
    return "\n".join(lines)
