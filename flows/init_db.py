"""``init-helix-db``: apply Helix's Neo4j schema migrations in order, record them, check the uid prefix.

Replaces the guide's ``pnpm db:init`` step. Safe to run again (nothing to do, with reasons) and safe when two
runs race (every statement is idempotent; the ledger record is a MERGE on a unique version). An applied
migration whose text changed is refused before anything is changed.

Example::

    from flows.init_db import init_helix_db
    summary = init_helix_db(neo4j_uri="bolt://neo4j:7687", credentials_block="helix-neo4j")
    summary["applied"]   # [1, 2, 3] on a fresh database, [] afterwards
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.core import Block
from prefect.runtime import flow_run
from pydantic import SecretStr

from helix_ops import migrations as mig
from tasks.db import apply_migration, check_uid_prefix, read_applied_migrations, record_uid_prefix, wait_for_neo4j

CREDENTIALS_BLOCK_TYPE = "helix-neo4j-credentials"
"""Block type slug of ``blocks.Neo4jCredentials`` (fields ``user`` and ``password: SecretStr``)."""


def load_neo4j_credentials(block_name: str) -> tuple[str, SecretStr]:
    """``(user, password)`` from the Neo4j credentials block ``block_name``.

    Uses ``blocks.Neo4jCredentials`` when it is importable; otherwise any registered block class of type
    ``helix-neo4j-credentials``. ``block_name`` may also be a full ``<type-slug>/<name>``.
    """
    try:
        from blocks import Neo4jCredentials  # type: ignore[attr-defined]
    except ImportError:
        Neo4jCredentials = None  # noqa: N806
    if "/" in block_name:
        block = Block.load(block_name)
    elif Neo4jCredentials is not None:
        block = Neo4jCredentials.load(block_name)
    else:
        block = Block.load(f"{CREDENTIALS_BLOCK_TYPE}/{block_name}")
    password = block.password
    return str(block.user), password if isinstance(password, SecretStr) else SecretStr(str(password))


def run_init_db(uri: str, user: str, password: SecretStr | str, uid_prefix: str = "cpe", *,
                applied_by: str = "", wait_deadline_s: float = 120,
                migrations: tuple[mig.Migration, ...] = mig.MIGRATIONS) -> dict[str, Any]:
    """The work of ``init-helix-db`` once credentials are known; returns the summary (no secrets).

    Steps: validate the prefix → wait for Neo4j → read the ledger → plan (refuses an edited migration) →
    apply each pending migration in order → record the uid prefix (refuses a different recorded one) →
    count uids without the prefix.
    """
    prefix = mig.validate_uid_prefix(uid_prefix)
    secret = password if isinstance(password, SecretStr) else SecretStr(password)
    mig.validate_migrations(migrations)

    server = wait_for_neo4j(uri, user, secret, deadline_s=wait_deadline_s)
    applied = read_applied_migrations(uri, user, secret)
    steps = mig.plan_migrations(applied, migrations)

    by_version = {m.version: m for m in migrations}
    results: list[dict[str, Any]] = []
    for step in steps:
        if step.action == "already-applied":
            results.append({"version": step.version, "name": step.name, "checksum": step.checksum,
                            "outcome": "already-applied", "reason": step.reason})
            continue
        outcome = apply_migration(uri, user, secret, by_version[step.version], applied_by=applied_by)
        results.append(outcome.model_dump(include={"version", "name", "checksum", "outcome", "reason"}))

    recorded = record_uid_prefix(uri, user, secret, prefix)
    mig.check_recorded_uid_prefix(recorded, prefix)
    offenders = check_uid_prefix(uri, user, secret, prefix)

    return {
        "uri": uri,
        "server": server,
        "migrations": results,
        "applied": [r["version"] for r in results if r["outcome"] == "applied"],
        "already_applied": [r["version"] for r in results if r["outcome"] == "already-applied"],
        "uid_prefix": {
            "requested": prefix,
            "recorded": recorded,
            "offenders": offenders,
            "enforcement": "counted by a query and reported; Neo4j Community has no property pattern constraints",
        },
    }


@flow(name="init-helix-db")
def init_helix_db(neo4j_uri: str, credentials_block: str, uid_prefix: str = "cpe") -> dict[str, Any]:
    """Initialise Helix's Neo4j schema (the guide's ``pnpm db:init``).

    Args:
        neo4j_uri: Bolt URI of the database, e.g. ``bolt://neo4j:7687``.
        credentials_block: name of the ``helix-neo4j-credentials`` block (``blocks.Neo4jCredentials``) holding ``user`` and ``password``.
        uid_prefix: ``server.uid_prefix`` of helix.config.yaml; recorded once, then checked.

    Publishes a markdown artifact (key ``init-helix-db``) listing each migration as applied or
    already-applied, and returns the summary of :func:`run_init_db`.
    """
    user, password = load_neo4j_credentials(credentials_block)
    summary = run_init_db(neo4j_uri, user, password, uid_prefix,
                          applied_by=f"flow-run {flow_run.id}" if flow_run.id else "init-helix-db")
    create_markdown_artifact(markdown=mig.render_report(summary), key="init-helix-db",
                             description="Neo4j schema migrations applied by init-helix-db")
    return summary
