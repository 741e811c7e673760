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

from flows.params import EnvName, run_name
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


def run_init_db(uri: str, user: str, password: SecretStr | str, uid_prefix: str = mig.DEFAULT_UID_PREFIX, *,
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


@flow(name="init-helix-db", flow_run_name=run_name("init-db-{env}", env="descriptor"))
def init_helix_db(env: EnvName | None = None, descriptor: str | None = None, neo4j_uri: str | None = None,
                  credentials_block: str | None = None, uid_prefix: str = mig.DEFAULT_UID_PREFIX, engine_url: str | None = None,
                  kubeconfig: str | None = None, kube_context: str | None = None, cluster_block: str | None = None,
                  docker_host_block: str | None = None) -> dict[str, Any]:
    """Initialise Helix's Neo4j schema (the guide's ``pnpm db:init``).

    Args:
        env: the environment (its descriptor ``deployments/<env>.yaml``, or ``descriptor``): Neo4j is reached
            through the environment's target (the published port on the engine, a port-forward through the
            API server on Kubernetes) and logged in with its ``credentials.neo4j`` block.
        descriptor: path of a descriptor file.
        neo4j_uri / credentials_block: a Bolt URI this process reaches and the ``Neo4jCredentials`` block's
            name, instead of an environment (both needed then; ``credentials_block`` also overrides the
            descriptor's).
        uid_prefix: ``server.uid_prefix`` of helix.config.yaml; recorded once, then checked.
        engine_url / docker_host_block / kubeconfig / kube_context / cluster_block: how the target is reached
            (see backup-helix).

    Publishes a markdown artifact (key ``init-helix-db``) listing each migration as applied or
    already-applied, and returns the summary of :func:`run_init_db`.
    Example: ``prefect deployment run init-helix-db/prod``.
    """
    from contextlib import nullcontext

    from drivers.target import Connection
    from helix_ops.descriptor import descriptor_file, load_descriptor
    from helix_ops.errors import ConfigError
    from helix_ops.guide import NEO4J_BOLT_PORT
    from tasks.target import connect_target, target_for

    if neo4j_uri is None and env is None and descriptor is None:
        raise ConfigError("env", "name an environment (env=prod) or give neo4j_uri and credentials_block")
    desc = load_descriptor(descriptor_file(env, descriptor)) if neo4j_uri is None or not credentials_block \
        else None
    block = credentials_block or (desc.credentials.neo4j if desc else None)
    if not block:
        raise ConfigError("credentials_block", "give the Neo4jCredentials block's name with neo4j_uri")
    user, password = load_neo4j_credentials(block)
    if neo4j_uri is not None:
        reach = nullcontext(None)
    else:
        assert desc is not None
        target = target_for(desc, Connection(engine_url=engine_url, docker_host_block=docker_host_block,
                                             kubeconfig=kubeconfig, kube_context=kube_context,
                                             cluster_block=cluster_block))
        connect_target(target)
        reach = target.endpoint("neo4j", NEO4J_BOLT_PORT)
    with reach as address:
        uri = neo4j_uri or f"bolt://{address[0]}:{address[1]}"
        summary = run_init_db(uri, user, password, uid_prefix,
                              applied_by=f"flow-run {flow_run.id}" if flow_run.id else "init-helix-db")
    create_markdown_artifact(markdown=mig.render_report(summary), key="init-helix-db",
                             description="Neo4j schema migrations applied by init-helix-db")
    return summary
