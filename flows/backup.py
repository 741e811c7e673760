"""``backup-helix``: one backup of an environment's Neo4j (logical export, online) and Redis (RDB snapshot over
the replication protocol, checked with ``redis-check-rdb``), both streamed into ONE backup in the storage;
the manifest is written last, then the backup is verified (checksums re-read) and published as an artifact.

Orchestration only: the work is in ``tasks/backup.py``. Any failing step raises (callers such as an upgrade
must not proceed without a backup); a backup without a manifest does not exist.

Not done yet: the writer (mcp-graph) is **not paused** during the Neo4j export; the manifest says
``writer_paused: false`` and carries a warning.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.deploy import descriptor_path
from helix_ops.backup import Manifest, Neo4jInfo, RedisInfo, manifest_markdown, new_backup_id
from helix_ops.descriptor import load_descriptor
from tasks.backup import (
    backup_neo4j_logical,
    backup_redis_rdb,
    commit_backup,
    object_rows,
    open_store,
    record_verification,
    service_endpoint,
    verify_backup,
)
from tasks.engine import EngineTarget, connect_engine, neo4j_endpoint
from tasks.lease import environment_lease

TOOL = "helix-ops backup-helix"


@flow(name="backup-helix", log_prints=False)
def backup_helix(env: str = "local", descriptor: str | None = None, engine_url: str | None = None,
                 storage_path: str | None = None) -> dict[str, Any]:
    """Back up one Helix environment's Neo4j and Redis into one backup.

    Args:
        env: the environment; its descriptor is ``deployments/<env>.yaml`` unless ``descriptor`` is given.
        descriptor: path of a descriptor file.
        engine_url: the Docker Engine API address; default ``DOCKER_HOST`` or the local socket.
        storage_path: a local folder for the backup (overrides the descriptor's storage).

    Returns ``{backup_id, objects, counts, duration}`` (no secrets). Raises when any step fails.
    """
    logger = get_run_logger()
    t0 = time.monotonic()
    desc = load_descriptor(descriptor_path(env, descriptor))
    target = EngineTarget(engine_url, desc.project, desc.environment)
    store = open_store(desc, storage_path)
    connect_engine(target)

    owner = f"flow-run/{flow_run.get_id() or 'local'}"
    with environment_lease(desc.environment, owner):
        neo4j_uri = neo4j_endpoint(target)
        redis_host, redis_port = service_endpoint(target, "redis", 6379)
        created = dt.datetime.now(dt.UTC)
        backup_id = new_backup_id(desc.environment, created)
        logger.info("backup %s of %s into %s", backup_id, desc.environment, store.where)
        with store.begin(backup_id) as writer:
            neo4j = backup_neo4j_logical(neo4j_uri, desc, writer)
            redis = backup_redis_rdb(redis_host, redis_port, desc, writer)
            finished = dt.datetime.now(dt.UTC)
            manifest = Manifest(
                backup_id=backup_id, environment=desc.environment, project=desc.project, created_at=created,
                finished_at=finished, duration_s=(finished - created).total_seconds(), tool=TOOL,
                components=("neo4j", "redis"), objects=(), neo4j=Neo4jInfo(**neo4j), redis=RedisInfo(**redis))
            commit_backup(writer, manifest.model_dump(mode="json"))
        checks = verify_backup(store, backup_id)
        manifest = Manifest.model_validate(record_verification(store, backup_id, TOOL, checks))

    create_markdown_artifact(manifest_markdown(manifest), key=f"helix-backup-{desc.environment}",
                             description=f"backup-helix {backup_id}")
    assert manifest.neo4j is not None and manifest.redis is not None
    return {"backup_id": backup_id, "objects": object_rows(manifest.objects),
            "counts": {"neo4j": {"nodes": manifest.neo4j.nodes, "relationships": manifest.neo4j.relationships},
                       "redis": {"keys": manifest.redis.keys, "keys_by_db": dict(manifest.redis.keys_by_db)}},
            "duration": round(time.monotonic() - t0, 3)}
