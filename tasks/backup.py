"""Prefect tasks of backup-helix and verify-helix-backup: thin wrappers over the Neo4j backup drivers
(``drivers/neo4j_export.py``, ``neo4j_load.py``, ``neo4j_offline.py``, ``neo4j_import.py``),
``drivers/redis_backup.py`` and ``drivers/storage/``.

Every task loads the secrets it needs itself (from the environment's blocks), uses ``cache_policy=NO_CACHE``
and returns no secret: only counts, versions, object entries and verdict lines.

A :class:`drivers.storage.BackupWriter` is passed between tasks in-process (tasks of these flows run in the
flow's process). A failed object is discarded by the writer, so a retried task starts the object afresh.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from drivers.storage import BackupStore, BackupWriter, LocalStore, store_from_block
from helix_ops.backup import Manifest, ObjectEntry
from helix_ops.backup_tools import redis_backup_counts
from helix_ops.descriptor import Descriptor
from tasks.engine import EngineTarget

NEO4J_OBJECT = "neo4j.jsonl.zst"
REDIS_OBJECT = "redis.rdb.zst"


def open_store(descriptor: Descriptor, storage_path: str | None = None) -> BackupStore:
    """The backup store: a local folder at ``storage_path`` if given, else the descriptor's storage (a local
    folder, or S3 through the ``credentials.storage`` block); encrypting with the ``credentials.backup_key``
    Secret block's key when the descriptor names one."""
    from blocks.storage import load_backup_key, load_backup_storage

    key = load_backup_key(descriptor)  # None unless credentials.backup_key names one: then encrypted both ways
    if storage_path:
        return LocalStore(Path(storage_path).resolve(), key=key)
    return store_from_block(load_backup_storage(descriptor), key=key)


class ExportProgress:
    """The export's progress: a Prefect progress artifact (the run's page shows a bar) and a log line at every
    tenth of the parts."""

    def __init__(self, facts: dict[str, Any]) -> None:
        self.expected = f"of {facts.get('nodes', '?')} nodes, {facts.get('relationships', '?')} relationships"
        self.artifact: Any = None
        self.logged = 0

    def __call__(self, done: int, total: int, stats: Any) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        pct = 100.0 * done / max(total, 1)
        what = f"neo4j export: {stats.nodes} nodes, {stats.relationships} relationships {self.expected}"
        if self.artifact is None:
            self.artifact = create_progress_artifact(pct, description=what)
        elif int(pct // 10) > self.logged or done == total:
            update_progress_artifact(self.artifact, pct, description=what)
        if int(pct // 10) > self.logged:
            self.logged = int(pct // 10)
            get_run_logger().info("%s (%.0f%%)", what, pct)


@task(name="backup-neo4j-logical", retries=2, retry_delay_seconds=[5, 15], timeout_seconds=3600,
      cache_policy=NO_CACHE)
def backup_neo4j_logical(neo4j_uri: str, descriptor: Descriptor, writer: BackupWriter,
                         writer_paused: bool = False) -> dict[str, Any]:
    """Stream a logical export of Neo4j (online, over Bolt) into ``writer`` as one object.

    ``writer_paused``: the caller stopped the writer (mcp-graph) for the export, so its read transactions
    see a graph nobody changes (Neo4j's read-committed isolation is no snapshot while writes run). Without
    it the manifest carries a warning.
    """
    from blocks.secrets import load_environment_secrets
    from drivers.neo4j_export import export_logical
    from drivers.neo4j_load import graph_counts

    secrets = load_environment_secrets(descriptor)
    facts = graph_counts(neo4j_uri, secrets.neo4j_user, secrets.neo4j_password)
    with writer.object(NEO4J_OBJECT, component="neo4j", kind="logical") as obj:
        stats = export_logical(neo4j_uri, secrets.neo4j_user, secrets.neo4j_password, obj.write,
                               workers=descriptor.backup.export_workers, progress=ExportProgress(facts))
    get_run_logger().info("neo4j: exported %d nodes, %d relationships in %.1fs", stats.nodes, stats.relationships,
                          stats.seconds)
    warnings = () if writer_paused else (
        "online export with the writer (mcp-graph) running: read-committed, not a snapshot",)
    return {"strategy": "logical", "server_version": str(facts["server_version"]),
            "edition": str(facts["edition"]).lower(), "nodes": stats.nodes, "relationships": stats.relationships,
            "labels": dict(stats.labels), "relationship_types": dict(stats.relationship_types),
            "constraints": stats.constraints, "indexes": stats.indexes, "writer_paused": writer_paused,
            "tool": "helix-ops export_logical", "warnings": warnings}


@task(name="backup-redis-rdb", retries=2, retry_delay_seconds=[5, 15], timeout_seconds=1800, cache_policy=NO_CACHE)
def backup_redis_rdb(host: str, port: int, descriptor: Descriptor, writer: BackupWriter) -> dict[str, Any]:
    """``redis-cli --rdb -`` streamed into one object and ``redis-check-rdb`` at once (no copy on disk); a
    transfer cut short or an RDB the check refuses fails the task, and the partial object is discarded."""
    from blocks.secrets import load_environment_secrets
    from drivers.redis_backup import connect, server_facts, stream_rdb

    secrets = load_environment_secrets(descriptor)
    user = secrets.redis_username if secrets.redis_username not in ("", "default") else None
    with connect(host, port, secrets.redis_password, user) as client:
        facts = server_facts(client)
    with writer.object(REDIS_OBJECT, component="redis", kind="rdb") as obj:
        verdict = stream_rdb(host, port, secrets.redis_password, obj.write, username=user)
    with connect(host, port, secrets.redis_password, user) as client:
        after = server_facts(client)
    counts = redis_backup_counts(facts, after, verdict)  # the RDB's own key count, not a live moment's
    get_run_logger().info("redis: %s%s", verdict, "" if counts["keys_by_db"] else
                          " (written to during the snapshot: per-database counts not recorded)")
    return {"strategy": "redis-cli-rdb", "server_version": facts["version"], **counts, "rdb_check": verdict,
            "tool": "redis-cli --rdb"}


@task(name="commit-backup", retries=2, retry_delay_seconds=2, timeout_seconds=300, cache_policy=NO_CACHE)
def commit_backup(writer: BackupWriter, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the manifest last (the backup exists from now on). The manifest crosses the task boundary as
    plain JSON data (Prefect walks task inputs; a pydantic model with a ``keys`` field confuses it)."""
    return writer.commit(Manifest.model_validate(manifest)).model_dump(mode="json")


@task(name="verify-backup", timeout_seconds=3600, cache_policy=NO_CACHE)
def verify_backup(store: BackupStore, backup_id: str, deep: bool = False) -> list[str]:
    """Re-read every object of ``backup_id`` and compare sizes and sha256 with its manifest (``deep``: also
    decompress/decrypt). Raises :class:`helix_ops.errors.BackupIntegrityError` on a mismatch."""
    return store.verify(backup_id, deep=deep)


@task(name="record-verification", retries=2, retry_delay_seconds=2, timeout_seconds=120, cache_policy=NO_CACHE)
def record_verification(store: BackupStore, backup_id: str, by: str, checks: list[str]) -> dict[str, Any]:
    """Record a passed verification in the backup's manifest (restore picks the newest verified backup)."""
    return write_verification(store, backup_id, by, checks, ok=True)


def write_verification(store: BackupStore, backup_id: str, by: str, checks: list[str], ok: bool) -> dict[str, Any]:
    """Replace the manifest's verification record (passed or failed); returns the manifest as JSON data."""
    import datetime as dt

    from helix_ops.backup import Verification

    m = store.read_manifest(backup_id)
    m = m.model_copy(update={"verification": Verification(at=dt.datetime.now(dt.UTC), by=by, ok=ok,
                                                          checks=tuple(checks))})
    m = Manifest.model_validate(m.model_dump())
    store.write_manifest(m)
    return m.model_dump(mode="json")


def object_rows(objects: tuple[ObjectEntry, ...]) -> list[dict[str, Any]]:
    return [{"name": o.name, "component": o.component, "kind": o.kind, "size": o.size, "sha256": o.sha256,
             "raw_size": o.raw_size} for o in objects]


@task(name="restore-neo4j-logical", timeout_seconds=4 * 3600, cache_policy=NO_CACHE)
def restore_neo4j_logical(neo4j_uri: str, descriptor: Descriptor, store: BackupStore, backup_id: str,
                          object_name: str) -> dict[str, Any]:
    """Wipe Neo4j and load the logical export ``object_name`` of ``backup_id`` (streamed from the store; its
    checksums are checked again while it streams). Not retried: a half-done load is redone by a new run."""
    from blocks.secrets import load_environment_secrets
    from drivers.neo4j_load import load_logical

    logger = get_run_logger()
    secrets = load_environment_secrets(descriptor)
    entry = store.read_manifest(backup_id).object(object_name)
    stats = load_logical(neo4j_uri, secrets.neo4j_user, secrets.neo4j_password, store.open_raw(backup_id, entry),
                         wipe=True, log=logger.info)
    return {"nodes": stats.nodes, "relationships": stats.relationships, "constraints": stats.constraints,
            "indexes": stats.indexes, "seconds": round(stats.seconds, 2), "method": "transactional load"}


@task(name="restore-neo4j-import", timeout_seconds=4 * 3600, cache_policy=NO_CACHE)
def restore_neo4j_import(target: EngineTarget, neo4j_uri: str, descriptor: Descriptor, store: BackupStore,
                         backup_id: str, object_name: str, image: str | None = None) -> dict[str, Any]:
    """Replace the graph with the logical export ``object_name`` through ``neo4j-admin database import``
    (``drivers/neo4j_import.py``): the export is converted to CSV and imported into a staging store by a one-off
    container on Neo4j's data volume while Neo4j still runs (its checksums checked to the end of the stream);
    then the Neo4j container is stopped for the store swap and started again (the old store swapped back if the
    new one does not come up with the export's counts), and the schema created. An export the importer cannot carry exactly is loaded
    transactionally instead (logged; nothing was stopped). Not retried: every attempt is a Neo4j downtime."""
    from blocks.secrets import load_environment_secrets
    from drivers.neo4j_import import ImportUnsupported, import_logical
    from helix_ops.errors import OfflineUnavailable

    logger = get_run_logger()
    secrets = load_environment_secrets(descriptor)
    entry = store.read_manifest(backup_id).object(object_name)

    def transactional(why: str) -> dict[str, Any]:  # nothing was stopped: Neo4j stays up for this load
        logger.warning("neo4j: %s; loading the export transactionally", why)
        return {**restore_neo4j_logical.fn(neo4j_uri, descriptor, store, backup_id, object_name),
                "method": f"transactional load ({why})"}

    try:
        target_neo4j = engine_neo4j(target, descriptor, image)
        target_neo4j.preflight()  # the image is there before any conversion work
    except OfflineUnavailable as exc:  # e.g. Neo4j stopped, scaled out, or no image for the one-off container
        return transactional(f"import unavailable: {exc.message}")
    try:
        with tempfile.TemporaryDirectory(prefix="helix-neo4j-import-") as tmp:
            r = import_logical(target_neo4j, store.open_raw(backup_id, entry), Path(tmp) / "csv", neo4j_uri,
                               secrets.neo4j_user, secrets.neo4j_password,
                               workers=descriptor.backup.export_workers, log=logger.info)
    except ImportUnsupported as exc:
        return transactional(f"import refused: {exc}")
    return {"strategy": "logical", "method": "neo4j-admin database import", "nodes": r.stats.nodes,
            "relationships": r.stats.relationships, "constraints": r.stats.constraints, "indexes": r.stats.indexes,
            "seconds": round(r.convert_s + r.import_s + r.physical.downtime_s + r.schema_s, 2),
            "convert_s": round(r.convert_s, 2), "import_s": r.import_s, "downtime_s": round(r.physical.downtime_s, 2),
            "schema_s": r.schema_s, "admin_seconds": round(target_neo4j.admin_seconds, 2),
            "tool": "neo4j-admin database import full", "csv_bytes": r.csv_bytes}


@task(name="restore-redis-rdb", timeout_seconds=2 * 3600, cache_policy=NO_CACHE)
def restore_redis_rdb(host: str, port: int, descriptor: Descriptor, store: BackupStore, backup_id: str,
                      object_name: str) -> dict[str, Any]:
    """Fetch the RDB of ``backup_id`` (checksums checked), ``redis-check-rdb`` it, and replay it into the
    running Redis (``drivers.redis_backup.replay_rdb``: FLUSHALL, then DUMP/RESTORE with TTLs; AOF-safe)."""
    from blocks.secrets import load_environment_secrets
    from drivers.redis_backup import check_rdb, replay_rdb

    logger = get_run_logger()
    secrets = load_environment_secrets(descriptor)
    user = secrets.redis_username if secrets.redis_username not in ("", "default") else None
    entry = store.read_manifest(backup_id).object(object_name)
    with tempfile.TemporaryDirectory(prefix="helix-redis-restore-") as tmp:
        rdb = store.fetch_to_file(backup_id, entry, Path(tmp) / "restore.rdb")
        verdict = check_rdb(rdb)
        result = replay_rdb(rdb, host, port, secrets.redis_password, user, log=logger.info)
    return {**result, "rdb_check": verdict}


@task(name="neo4j-counts", retries=2, retry_delay_seconds=3, timeout_seconds=600, cache_policy=NO_CACHE)
def neo4j_counts(neo4j_uri: str, descriptor: Descriptor) -> dict[str, Any]:
    """Nodes, relationships, per-label / per-type counts, constraints and indexes of the environment's Neo4j."""
    from blocks.secrets import load_environment_secrets
    from drivers.neo4j_load import graph_counts

    secrets = load_environment_secrets(descriptor)
    return graph_counts(neo4j_uri, secrets.neo4j_user, secrets.neo4j_password)


@task(name="neo4j-edition", retries=2, retry_delay_seconds=3, timeout_seconds=120, cache_policy=NO_CACHE)
def neo4j_edition(neo4j_uri: str, descriptor: Descriptor) -> str:
    """The edition the running Neo4j reports (``community`` / ``enterprise``)."""
    from blocks.secrets import load_environment_secrets
    from drivers.neo4j import Neo4jClient

    secrets = load_environment_secrets(descriptor)
    with Neo4jClient(neo4j_uri, secrets.neo4j_user, secrets.neo4j_password) as db:
        return db.server_info()[1].lower()


@task(name="delete-backup", retries=2, retry_delay_seconds=2, timeout_seconds=600, cache_policy=NO_CACHE)
def delete_backup(store: BackupStore, backup_id: str) -> str:
    """Delete one backup (its manifest first, so it stops existing before its objects go)."""
    store.delete(backup_id)
    return backup_id


# --- Neo4j physical (Community, offline): neo4j-admin dump / load in a one-off container on the engine ----------

NEO4J_DUMP_OBJECT = "neo4j.dump.zst"


def engine_neo4j(target: EngineTarget, descriptor: Descriptor, image: str | None = None) -> Any:
    """The environment's Neo4j container as a :class:`drivers.neo4j_offline.EngineNeo4j` (the Bolt login for the
    health wait comes from the environment's blocks; the one-off containers carry the target's extra labels)."""
    from blocks.secrets import load_environment_secrets
    from drivers.neo4j_offline import EngineNeo4j

    secrets = load_environment_secrets(descriptor)
    return EngineNeo4j(target.driver(), secrets.neo4j_user, secrets.neo4j_password, image=image,
                       scratch_labels=dict(target.extra_labels), log=get_run_logger().info)


@task(name="backup-neo4j-dump", timeout_seconds=4 * 3600, cache_policy=NO_CACHE)
def backup_neo4j_dump(target: EngineTarget, neo4j_uri: str, descriptor: Descriptor, writer: BackupWriter,
                      writer_paused: bool = False, image: str | None = None) -> dict[str, Any]:
    """Community, offline: count the graph, stop the Neo4j container, ``neo4j-admin database dump`` in a one-off
    container on its data volume, stream the dump into ``writer`` as one object, start Neo4j again (always) and
    wait for a Bolt login. Returns the manifest's Neo4j fields with ``downtime_s`` (stop → healthy again).
    Not retried: every attempt is a Neo4j downtime; a failed run is rerun by hand."""
    from blocks.secrets import load_environment_secrets
    from drivers.neo4j_load import graph_counts
    from drivers.neo4j_offline import dump_offline

    logger = get_run_logger()
    secrets = load_environment_secrets(descriptor)
    facts = graph_counts(neo4j_uri, secrets.neo4j_user, secrets.neo4j_password)  # before the window: same graph
    target_neo4j = engine_neo4j(target, descriptor, image)
    with writer.object(NEO4J_DUMP_OBJECT, component="neo4j", kind="dump") as obj:
        result = dump_offline(target_neo4j, obj.write)
    logger.info("neo4j: dump of %d bytes; Neo4j down for %.1fs (neo4j-admin %.1fs)", result.dump_bytes,
                result.downtime_s, target_neo4j.admin_seconds)
    warnings = () if writer_paused else (
        "offline dump with the writer (mcp-graph) running: its writes failed while Neo4j was stopped",)
    return {"strategy": "dump", "server_version": str(facts["server_version"]),
            "edition": str(facts["edition"]).lower(), "nodes": facts["nodes"],
            "relationships": facts["relationships"], "labels": dict(facts["labels"]),
            "relationship_types": dict(facts["relationship_types"]), "constraints": facts["constraints"],
            "indexes": facts["indexes"], "writer_paused": writer_paused,
            "downtime_s": round(result.downtime_s, 2),
            "tool": f"neo4j-admin database dump (one-off {target_neo4j.image} on {target_neo4j.data_volume}; "
                    f"neo4j-admin {target_neo4j.admin_seconds:.1f}s)", "warnings": warnings}


@task(name="restore-neo4j-dump", timeout_seconds=4 * 3600, cache_policy=NO_CACHE)
def restore_neo4j_dump(target: EngineTarget, descriptor: Descriptor, store: BackupStore, backup_id: str,
                       object_name: str = NEO4J_DUMP_OBJECT, image: str | None = None) -> dict[str, Any]:
    """Community, offline: stop the Neo4j container, ``neo4j-admin database load --overwrite-destination=true``
    from the backup's dump (streamed from the store, checksums checked while it streams) in a one-off container
    on its data volume, start Neo4j again (always) and wait for a Bolt login. Not retried."""
    from drivers.neo4j_offline import load_offline

    m = store.read_manifest(backup_id)
    entry = m.object(object_name)
    target_neo4j = engine_neo4j(target, descriptor, image)
    result = load_offline(target_neo4j, store.raw_chunks(backup_id, entry), entry.raw_size)
    get_run_logger().info("neo4j: dump of %d bytes loaded; Neo4j down for %.1fs (neo4j-admin %.1fs)",
                          entry.raw_size, result.downtime_s, target_neo4j.admin_seconds)
    assert m.neo4j is not None
    return {"strategy": "dump", "nodes": m.neo4j.nodes, "relationships": m.neo4j.relationships,
            "constraints": m.neo4j.constraints, "indexes": m.neo4j.indexes,
            "seconds": round(result.downtime_s, 2), "downtime_s": round(result.downtime_s, 2),
            "admin_seconds": round(target_neo4j.admin_seconds, 2), "bytes": entry.raw_size,
            "tool": "neo4j-admin database load", "method": "neo4j-admin database load"}
