"""``verify-helix-backup``: prove that one backup (or the newest of the environment) restores.

1. **Checksums**: every object is re-read and its size and sha256 compared with the manifest (``deep``: also
   decrypted/decompressed and the raw sha256 checked). A mismatch stops here.
2. **Scratch restore** (``restore=True``, the default): on the container engine, with the environment's own
   Neo4j and Redis images, in throwaway containers and volumes that carry no project label (deploy-helix's
   state, plans and prune never see them), loopback-only ports and passwords made for the run:

   * Neo4j, a logical export (strategy ``logical``): the export is loaded over Bolt, node / relationship /
     label / type / constraint / index counts are compared with the manifest, the server is stopped and
     ``neo4j-admin database check neo4j`` runs against its data in a one-off container;
   * Neo4j, a physical dump (strategy ``dump``): restored the way restore-helix restores one
     (``drivers.neo4j_offline.EngineNeo4j``): the scratch server is stopped, ``neo4j-admin database load``
     runs in a one-off container on its data volume with the dump streamed from the store (checksums checked
     while it streams), ``neo4j-admin database check neo4j`` runs on the loaded store, then the server is
     started on it and the same counts are compared with the manifest;
   * Redis: a redis-server starts with the backup's RDB as its dump file, ``redis-check-rdb`` checks that file
     in the container, and the keys loaded are compared with the RDB and the manifest.

   Scratch containers and volumes are removed in a ``finally`` (each task removes its own, the flow removes
   whatever of the run is left), also when a check or the machinery fails.
3. **Verdict**: only when every check passes is the verification recorded in the manifest (``ok: true``,
   one line per check); a failed check records ``ok: false`` (restore-helix then no longer picks the backup
   as the newest verified one) and raises :class:`helix_ops.errors.BackupIntegrityError`. When the scratch
   machinery itself fails (engine unreachable, an image missing, a server that does not start), that error is
   raised and the manifest is left as it was: it says nothing about the backup.

The markdown artifact ``helix-backup-verify-<env>`` lists every check with its result and time.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.params import BackupId, EnvName, run_name
from helix_ops.descriptor import descriptor_file
from helix_ops.backup import validate_backup_id
from helix_ops.descriptor import load_descriptor
from helix_ops.errors import BackupIntegrityError, PlanError
from tasks.backup import (
    NEO4J_DUMP_OBJECT,
    NEO4J_OBJECT,
    REDIS_OBJECT,
    open_store,
    record_verification,
    verify_backup,
)
from tasks.verify import (
    check,
    check_line,
    record_failed_verification,
    scratch_cleanup,
    scratch_preflight,
    scratch_verify_neo4j,
    scratch_verify_neo4j_dump,
    scratch_verify_redis,
)

TOOL = "helix-ops verify-helix-backup"
HINT = ("restore an older verified backup (restore-helix -p backup_id=...), take a new backup with "
        "backup-helix, and look at the artifact helix-backup-verify-<env> for the failing check")


def report_markdown(backup_id: str, rows: list[dict[str, Any]], verdict: str, leftovers: dict | None,
                    seconds: float) -> str:
    lines = [f"# Backup `{backup_id}`: {verdict}", "", "| check | result | time | detail |", "|---|---|---|---|"]
    for r in rows:
        detail = str(r["detail"]).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['name']} | {'pass' if r['ok'] else '**FAIL**'} | {r['seconds']:.1f}s | {detail} |")
    lines += ["", f"- total: {seconds:.1f}s"]
    if leftovers is not None:
        left = leftovers["containers"] + leftovers["volumes"]
        lines.append("- scratch containers and volumes removed" if not left
                     else f"- **scratch objects left**: {', '.join(left)}")
    return "\n".join(lines)


@flow(name="verify-helix-backup", log_prints=False,
      flow_run_name=run_name("verify-{env}-{backup_id}", backup_id="newest"))
def verify_helix_backup(env: EnvName = "local", descriptor: str | None = None, backup_id: BackupId | None = None,
                        storage_path: str | None = None, deep: bool = False, restore: bool = True,
                        engine_url: str | None = None, container_labels: dict[str, str] | None = None,
                        scratch_neo4j_heap: str = "512m", scratch_neo4j_pagecache: str = "128m",
                        scratch_start_deadline_s: float = 600) -> dict[str, Any]:
    """Verify backup ``backup_id`` (default: the newest of the environment); see the module docstring.

    Args:
        env: the environment; its descriptor is ``deployments/<env>.yaml`` unless ``descriptor`` is given.
        descriptor: path of a descriptor file.
        backup_id: the backup; default the newest backup of the environment.
        storage_path: a local backup folder (overrides the descriptor's storage).
        deep: also decompress (and decrypt) every object and check its raw sha256.
        restore: restore into scratch containers and run the databases' own checks (default). ``false``
            checks the checksums only (seconds instead of minutes; proves the bytes, not that they restore).
        engine_url: the Docker Engine API address for the scratch containers; default ``DOCKER_HOST`` or the
            local socket.
        container_labels: extra labels for the scratch containers and volumes (never ``helix-ops.project``).
        scratch_neo4j_heap / scratch_neo4j_pagecache: the scratch Neo4j's memory (Neo4j sizes, ``512m``).
        scratch_start_deadline_s: how long each scratch server may take to come up (and Redis to load).

    Returns ``{backup_id, ok, checks, duration}`` (no secrets). Raises ``BackupIntegrityError`` when a check
    fails (the manifest then records ``ok: false``).
    Example: ``prefect deployment run verify-helix-backup/prod -p deep=true``.
    """
    logger = get_run_logger()
    t_start = time.monotonic()
    desc = load_descriptor(descriptor_file(env, descriptor))
    store = open_store(desc, storage_path)
    if backup_id:
        validate_backup_id(backup_id)
    else:
        mine = [m for m in store.list() if m.environment == desc.environment]
        if not mine:
            raise PlanError(f"there is no backup of {desc.environment} in {store.where}")
        backup_id = mine[-1].backup_id
    key, description = f"helix-backup-verify-{desc.environment}", f"verify-helix-backup {backup_id}"

    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    try:
        lines = verify_backup(store, backup_id, deep=deep)
    except BackupIntegrityError as exc:
        rows.append(check("checksums" + (" (deep)" if deep else ""), False, time.monotonic() - t0, str(exc)))
        _refuse(store, backup_id, rows, None, t_start, key, description)
        raise
    rows.append(check("checksums" + (" (deep)" if deep else ""), True, time.monotonic() - t0, "; ".join(lines)))

    leftovers = None
    if restore:
        manifest = store.read_manifest(backup_id)
        if manifest.neo4j is not None and manifest.neo4j.strategy not in ("logical", "dump"):
            raise PlanError(f"backup {backup_id} is a Neo4j {manifest.neo4j.strategy}: the scratch restore loads "
                            "logical exports and dumps only (see docs/backup.md); verify it with restore=false")
        run_id = f"verify-{secrets.token_hex(4)}"
        labels = dict(container_labels or {})
        logger.info("scratch restore of %s (run %s) on %s", backup_id, run_id, engine_url or "DOCKER_HOST")
        images = ([desc.services.neo4j.image.ref] if manifest.neo4j is not None else []) + (
            [desc.services.redis.image.ref] if manifest.redis is not None else [])
        scratch_preflight(engine_url, run_id, labels, images)
        try:
            if manifest.neo4j is not None and manifest.neo4j.strategy == "dump":
                rows += scratch_verify_neo4j_dump(engine_url, run_id, labels, desc.services.neo4j.image.ref, store,
                                                  backup_id, NEO4J_DUMP_OBJECT, heap=scratch_neo4j_heap,
                                                  pagecache=scratch_neo4j_pagecache,
                                                  start_deadline_s=scratch_start_deadline_s)
            elif manifest.neo4j is not None:
                rows += scratch_verify_neo4j(engine_url, run_id, labels, desc.services.neo4j.image.ref, store,
                                             backup_id, NEO4J_OBJECT, heap=scratch_neo4j_heap,
                                             pagecache=scratch_neo4j_pagecache,
                                             start_deadline_s=scratch_start_deadline_s)
            if manifest.redis is not None:
                rows += scratch_verify_redis(engine_url, run_id, labels, desc.services.redis.image.ref, store,
                                             backup_id, REDIS_OBJECT, start_deadline_s=scratch_start_deadline_s)
        finally:
            leftovers = scratch_cleanup(engine_url, run_id, labels)

    if any(not r["ok"] for r in rows):
        raise _refuse(store, backup_id, rows, leftovers, t_start, key, description)
    checks = [check_line(r) for r in rows]
    record_verification(store, backup_id, TOOL, checks)
    seconds = round(time.monotonic() - t_start, 2)
    create_markdown_artifact(report_markdown(backup_id, rows, "verified", leftovers, seconds), key=key,
                             description=description)
    logger.info("backup %s verified: %d checks passed in %.1fs", backup_id, len(rows), seconds)
    return {"backup_id": backup_id, "ok": True, "checks": rows, "duration": seconds}


def _refuse(store, backup_id: str, rows: list[dict[str, Any]], leftovers: dict | None, t_start: float,
            key: str, description: str) -> BackupIntegrityError:
    """Record the failed verification (``ok: false``), publish the report, return the error to raise."""
    logger = get_run_logger()
    failed = [r for r in rows if not r["ok"]]
    try:
        record_failed_verification(store, backup_id, TOOL, [check_line(r) for r in rows])
    except Exception as exc:  # noqa: BLE001 - the manifest may be what is broken; the verdict stands
        logger.warning("could not record the failed verification of %s: %s", backup_id, exc)
    seconds = round(time.monotonic() - t_start, 2)
    create_markdown_artifact(report_markdown(backup_id, rows, "verification FAILED", leftovers, seconds), key=key,
                             description=description)
    message = (f"backup {backup_id} failed verification: "
               + "; ".join(f"{r['name']}: {r['detail']}" for r in failed) + f" (hint: {HINT})")
    logger.error("%s", message)
    return BackupIntegrityError(message)
