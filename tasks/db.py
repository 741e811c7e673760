"""Prefect tasks on the Helix Neo4j database: wait for it, read and extend the migration ledger, check uids.

Each task opens its own :class:`drivers.neo4j.Neo4jClient` and sees the password (a ``SecretStr``), so every
task uses ``cache_policy=NO_CACHE`` and returns no secret. Retries happen only for transient failures
(:class:`drivers.neo4j.Neo4jUnavailable`): rejected credentials are not retried (Neo4j locks a user after
repeated failures), nor are plan errors (an edited migration).

Example (inside a flow)::

    info = wait_for_neo4j(uri, user, password, deadline_s=120)
    applied = read_applied_migrations(uri, user, password)
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from drivers.neo4j import MigrationOutcome, Neo4jClient, Neo4jUnavailable
from helix_ops.migrations import Migration


def retry_if_transient(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's retry_condition_fn signature
    """Retry only when the task failed because Neo4j was unreachable or briefly unavailable."""
    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return isinstance(exc, Neo4jUnavailable)


@task(name="wait-for-neo4j", retries=0, retry_delay_seconds=0, timeout_seconds=900, cache_policy=NO_CACHE)
def wait_for_neo4j(uri: str, user: str, password: SecretStr, deadline_s: float = 120) -> dict[str, str]:
    """Wait (at most ``deadline_s``) until Neo4j at ``uri`` answers with these credentials; return
    ``{"version", "edition"}``. No retries: the wait has its own deadline."""
    with Neo4jClient(uri, user, password) as db:
        db.wait_ready(deadline_s)
        version, edition = db.server_info()
    return {"version": version, "edition": edition}


@task(name="read-applied-migrations", retries=2, retry_delay_seconds=[2, 5], timeout_seconds=60,
      cache_policy=NO_CACHE, retry_condition_fn=retry_if_transient)
def read_applied_migrations(uri: str, user: str, password: SecretStr) -> dict[int, str]:
    """The migration ledger, ``{version: checksum}``."""
    with Neo4jClient(uri, user, password) as db:
        return db.applied_migrations()


@task(name="schema-up-to-date", retries=2, retry_delay_seconds=[2, 5], timeout_seconds=60,
      cache_policy=NO_CACHE, retry_condition_fn=retry_if_transient)
def schema_up_to_date(uri: str, user: str, password: SecretStr, prefix: str) -> str | None:
    """Why init-helix-db has nothing to do here (:func:`helix_ops.migrations.up_to_date`), or None. Two
    read-only queries: the ledger and the recorded uid prefix."""
    from helix_ops.migrations import up_to_date

    with Neo4jClient(uri, user, password) as db:
        return up_to_date(db.applied_migrations(), db.recorded_uid_prefix(), prefix)


@task(name="apply-migration", task_run_name="apply-migration-{migration.version}", retries=2,
      retry_delay_seconds=[2, 5], timeout_seconds=900, cache_policy=NO_CACHE, retry_condition_fn=retry_if_transient)
def apply_migration(uri: str, user: str, password: SecretStr, migration: Migration,
                    applied_by: str = "", index_timeout_s: float = 600) -> MigrationOutcome:
    """Apply one migration (idempotent statements, then a race-safe ledger record); say whether this run
    recorded it (``applied``) or found it recorded by a concurrent run (``already-applied``)."""
    with Neo4jClient(uri, user, password) as db:
        return db.apply_migration(migration, applied_by=applied_by, index_timeout_s=index_timeout_s)


@task(name="record-uid-prefix", retries=2, retry_delay_seconds=[2, 5], timeout_seconds=60, cache_policy=NO_CACHE,
      retry_condition_fn=retry_if_transient)
def record_uid_prefix(uri: str, user: str, password: SecretStr, prefix: str) -> str:
    """Record the uid prefix in the ``HelixSchema`` node if none is recorded; return the recorded prefix."""
    with Neo4jClient(uri, user, password) as db:
        return db.record_uid_prefix(prefix)


@task(name="check-uid-prefix", retries=2, retry_delay_seconds=[2, 5], timeout_seconds=600, cache_policy=NO_CACHE,
      retry_condition_fn=retry_if_transient)
def check_uid_prefix(uri: str, user: str, password: SecretStr, prefix: str, label: str | None = None) -> int:
    """How many nodes (of ``label``, or all) have a ``uid`` not starting with ``prefix`` (a full scan)."""
    with Neo4jClient(uri, user, password) as db:
        return db.count_uid_prefix_offenders(prefix, label)
