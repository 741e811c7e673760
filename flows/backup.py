"""``backup-helix``: one backup of an environment's Neo4j (logical export, online; or, with
``neo4j_strategy="dump"``, Community's offline ``neo4j-admin database dump`` with Neo4j stopped for the window
and the downtime measured) and Redis (RDB snapshot over
the replication protocol, checked with ``redis-check-rdb``), both streamed into ONE backup in the storage;
the manifest is written last, then the backup is verified (checksums re-read) and published as an artifact.

For a consistent Neo4j export the writer (mcp-graph) is stopped for the export window and started again
afterwards, also when the export fails; the manifest says ``writer_paused: true`` and the report gives the
window. ``pause_writer=False`` exports online with the writer running (the manifest then carries a warning).

A run killed mid-backup (SIGKILL, OOM) skips its ``finally``: the pause is therefore recorded durably before
the writer stops (``tasks/writer_pause.py``, a Prefect Variable), and every run starts, inside the environment
lease and before anything else, the writers a killed run left stopped. A killed run's environment lease is
released by the next run when the holder is provably gone (``flows/lease.py``), else it expires.

Orchestration only: the work is in ``tasks/backup.py``. Any failing step raises (callers such as an upgrade
must not proceed without a backup); a backup without a manifest does not exist.
"""

from __future__ import annotations

import datetime as dt
import time
from contextlib import nullcontext
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.params import COMPONENTS, NEO4J_STRATEGIES, Component, EnvName, Neo4jStrategy, run_name
from drivers.storage import BackupStore
from helix_ops.descriptor import descriptor_file
from helix_ops.backup import Manifest, Neo4jInfo, RedisInfo, manifest_markdown, new_backup_id
from helix_ops.descriptor import Descriptor, load_descriptor
from helix_ops.errors import ConfigError, DriverError
from helix_ops.guide import SINGLE_WRITER
from drivers.target import OFFLINE_NEO4J_TOOLS, Connection, Target, require
from helix_ops.guide import NEO4J_BOLT_PORT, REDIS_PORT
from tasks.backup import (
    backup_neo4j_dump,
    backup_neo4j_logical,
    backup_redis_rdb,
    commit_backup,
    neo4j_edition,
    object_rows,
    open_store,
    record_verification,
    verify_backup,
)
from flows.lease import environment_lease
from tasks.target import connect_target, target_for
from tasks.writer_pause import resume_paused_writers, writer_window

TOOL = "helix-ops backup-helix"
WRITERS = (SINGLE_WRITER,)


def requested_strategy(desc: Descriptor, requested: str | None) -> str:
    """The run's ``neo4j_strategy`` parameter, else the descriptor's ``backup.neo4j_strategy``; checked before
    anything is touched."""
    wanted = desc.backup.neo4j_strategy if requested is None else requested
    if wanted not in NEO4J_STRATEGIES:
        raise ConfigError("neo4j_strategy", f"{wanted!r}: expected one of {', '.join(NEO4J_STRATEGIES)} "
                                            "(or leave it unset: the descriptor's backup.neo4j_strategy)")
    return wanted


def neo4j_strategy_for(desc: Descriptor, requested: str, edition: str) -> tuple[str, str]:
    """``(strategy, why)``: ``requested`` against the ``edition`` the running server reports (``auto`` picks by
    it: ``helix_ops.backup_plan.backup_strategy_for``)."""
    from helix_ops.backup_plan import backup_strategy_for

    return backup_strategy_for(edition, desc.services.neo4j.edition, requested)


def take_backup(desc: Descriptor, target: Target, store: BackupStore, *, pause_writer: bool = True,
                writers_stopped: bool = False, safety_for: str | None = None,
                tool: str = TOOL, neo4j_strategy: str = "logical",
                components: tuple[str, ...] = COMPONENTS) -> tuple[Manifest, dict[str, Any]]:
    """Back up ``components`` (Neo4j and Redis) of ``desc`` into ``store`` (the caller holds the environment
    lease); verify the checksums and record the verification. Returns the manifest and the writer window
    (``{"paused": bool, "containers": [...], "seconds": float}``).

    ``pause_writer``: pause the writers for the Neo4j export and resume them after (even on failure); a
    Redis-only backup pauses nothing.
    ``writers_stopped``: the caller already paused them (restore-helix's safety backup); nothing is resumed.
    ``neo4j_strategy``: ``logical`` (online export) or ``dump`` (Neo4j stopped, ``neo4j-admin database dump`` in a
    one-off container, Neo4j started again and health-checked; the manifest records the downtime).
    Neo4j and Redis are reached through ``target.endpoint`` (published ports, or port-forwards).
    """
    logger = get_run_logger()
    created = dt.datetime.now(dt.UTC)
    backup_id = new_backup_id(desc.environment, created)
    logger.info("backup %s (%s) of %s into %s", backup_id, ", ".join(components), desc.environment, store.where)
    window: dict[str, Any] = {"paused": False, "containers": [], "seconds": 0.0}
    neo4j = redis = None
    with store.begin(backup_id) as writer:
        if "neo4j" in components:
            pauser = f"{tool} flow-run/{flow_run.get_id() or 'local'}"
            # writer_window: paused for the export, recorded durably before the pause, resumed even on failure
            with (writer_window(target, desc, list(WRITERS), pauser) if pause_writer else nullcontext(window)) \
                    as window, target.endpoint("neo4j", NEO4J_BOLT_PORT) as bolt:
                neo4j_uri = f"bolt://{bolt[0]}:{bolt[1]}"
                if neo4j_strategy == "dump":
                    neo4j = backup_neo4j_dump(target, neo4j_uri, desc, writer,
                                              writer_paused=pause_writer or writers_stopped)
                else:
                    neo4j = backup_neo4j_logical(neo4j_uri, desc, writer,
                                                 writer_paused=pause_writer or writers_stopped)
        if "redis" in components:
            with target.endpoint("redis", REDIS_PORT) as (redis_host, redis_port):
                redis = backup_redis_rdb(redis_host, redis_port, desc, writer)
        finished = dt.datetime.now(dt.UTC)
        manifest = Manifest(
            backup_id=backup_id, environment=desc.environment, project=desc.project, created_at=created,
            finished_at=finished, duration_s=(finished - created).total_seconds(), tool=tool,
            components=tuple(c for c in COMPONENTS if c in components), objects=(),
            neo4j=Neo4jInfo(**neo4j) if neo4j else None, redis=RedisInfo(**redis) if redis else None,
            safety_for=safety_for)
        commit_backup(writer, manifest.model_dump(mode="json"))
    checks = verify_backup(store, backup_id)
    return Manifest.model_validate(record_verification(store, backup_id, tool, checks)), window


def requested_components(components: list[str] | None) -> tuple[str, ...]:
    """The run's ``components`` parameter (default both), checked before anything is touched."""
    wanted = tuple(components) if components else COMPONENTS
    unknown = [c for c in wanted if c not in COMPONENTS]
    if unknown or len(set(wanted)) != len(wanted):
        raise ConfigError("components", f"{list(wanted)!r}: expected a non-empty subset of {list(COMPONENTS)} "
                                        "without repeats (or leave it unset for both)")
    return wanted


def storage_endpoint(store: BackupStore) -> str | None:
    """The S3 endpoint URL of ``store`` (no user info), or None for a local folder."""
    from urllib.parse import urlsplit, urlunsplit

    url = getattr(getattr(getattr(store, "client", None), "meta", None), "endpoint_url", None)
    if not url:
        return None
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def storage_error_with_endpoint(exc: DriverError, store: BackupStore) -> DriverError:
    """A storage error of ``store`` as one error that names the endpoint and how often each request was tried
    (the S3 client's own retries; the export and Redis tasks were retried by Prefect on top); other driver
    errors unchanged."""
    endpoint = storage_endpoint(store)
    if endpoint is None or not exc.message.startswith(f"S3 {store.where}") or endpoint in exc.message:
        return exc
    config = getattr(getattr(getattr(store, "client", None), "meta", None), "config", None)
    retries = getattr(config, "retries", None) or {}
    attempts = retries.get("total_max_attempts") or retries.get("max_attempts")
    tried = f", each request tried {attempts} times" if attempts else ""
    return DriverError(f"{exc.message} (endpoint {endpoint}{tried})",
                       hint=exc.hint or "is the endpoint reachable?")


def downtime_markdown(manifest: Manifest) -> str:
    n = manifest.neo4j
    if n is None or n.downtime_s is None:
        return "- Neo4j downtime: none (online export)"
    return f"- **Neo4j downtime: {n.downtime_s:.1f}s** (stopped, {n.tool}, started, Bolt login ok)"


def window_markdown(window: dict[str, Any]) -> str:
    if not window.get("paused"):
        return "- writer: **not paused** (online export, read-committed: not a snapshot)"
    names = ", ".join(f"`{c}`" for c in window["containers"]) or "none was running"
    return (f"- writer paused for the Neo4j export: {names} stopped at {window.get('started', '?')} "
            f"for {window['seconds']:.1f}s, then started and health-checked again")


@flow(name="backup-helix", log_prints=False,
      flow_run_name=run_name("backup-{env}-{components}", components="neo4j+redis"))
def backup_helix(env: EnvName = "local", descriptor: str | None = None, engine_url: str | None = None,
                 storage_path: str | None = None, pause_writer: bool = True,
                 neo4j_strategy: Neo4jStrategy | None = None, kubeconfig: str | None = None, kube_context: str | None = None,
                 cluster_block: str | None = None, docker_host_block: str | None = None,
                 components: list[Component] | None = None) -> dict[str, Any]:
    """Back up one Helix environment's Neo4j and Redis into one backup.

    Args:
        env: the environment; its descriptor is ``deployments/<env>.yaml`` unless ``descriptor`` is given.
        descriptor: path of a descriptor file.
        engine_url / docker_host_block (target ``engine``): the Docker Engine API address, or a prefect-docker
            ``DockerHost`` block naming it; default ``DOCKER_HOST`` or the local socket.
        kubeconfig / kube_context / cluster_block (target ``kubernetes``): the cluster (see deploy-helix); Neo4j
            and Redis are reached through the API server's port-forward, the writer paused by scaling mcp-graph
            to 0 and back.
        storage_path: a local folder for the backup (overrides the descriptor's storage).
        pause_writer: stop mcp-graph for the Neo4j export window (default) for a consistent export.
        neo4j_strategy: unset: the descriptor's ``backup.neo4j_strategy`` (default ``auto``); ``auto`` picks by
            the edition the running server reports (Community: ``logical``; Enterprise: ``logical`` too until the
            online backup is wired in), ``logical`` (online export over Bolt) or ``dump`` (offline: Neo4j stopped
            for ``neo4j-admin database dump`` in a one-off container on its data volume, started again; the
            downtime is measured and reported).

        components: ``["neo4j"]`` or ``["redis"]`` for one of them (the descriptor's per-component
            schedules: an hourly Redis backup pauses no writer); default both.

    Returns ``{backup_id, objects, counts, duration, writer_window}`` (no secrets); ``writer_window`` also
    carries ``neo4j_strategy`` and ``neo4j_downtime_s`` (None for the online export). Raises when any step fails.
    Example: ``prefect deployment run backup-helix/prod``.
    """
    t0 = time.monotonic()
    desc = load_descriptor(descriptor_file(env, descriptor))
    target = target_for(desc, Connection(engine_url=engine_url, docker_host_block=docker_host_block,
                                         kubeconfig=kubeconfig, kube_context=kube_context,
                                         cluster_block=cluster_block))
    wanted = requested_strategy(desc, neo4j_strategy)
    parts = requested_components(components)
    if wanted == "dump" and "neo4j" in parts:
        require(target, OFFLINE_NEO4J_TOOLS, "neo4j_strategy", "'dump' needs one-off containers on Neo4j's data "
                                                             "volume; use 'logical' (or 'auto')")
    store = open_store(desc, storage_path)
    connect_target(target)
    strategy, why = "logical", "no Neo4j in this backup"
    if "neo4j" in parts:
        with target.endpoint("neo4j", NEO4J_BOLT_PORT) as (host, port):
            edition = neo4j_edition(f"bolt://{host}:{port}", desc)
        strategy, why = neo4j_strategy_for(desc, wanted, edition)
        get_run_logger().info("neo4j strategy: %s", why)

    owner = f"flow-run/{flow_run.get_id() or 'local'}"
    with environment_lease(desc.environment, owner):
        # Before anything else: writers a killed run left stopped (its finally never ran) run again.
        resume_paused_writers(target, desc, list(WRITERS))
        try:
            manifest, window = take_backup(desc, target, store, pause_writer=pause_writer,
                                           neo4j_strategy=strategy, components=parts)
        except DriverError as exc:
            named = storage_error_with_endpoint(exc, store)
            if named is exc:
                raise
            raise named from exc

    create_markdown_artifact(manifest_markdown(manifest) + "\n\n" + window_markdown(window) + "\n"
                             + downtime_markdown(manifest) + f"\n- Neo4j strategy: {why}",
                             key=f"helix-backup-{desc.environment}",
                             description=f"backup-helix {manifest.backup_id}")
    n, r = manifest.neo4j, manifest.redis
    return {"backup_id": manifest.backup_id, "components": list(manifest.components),
            "objects": object_rows(manifest.objects),
            "counts": {"neo4j": {"nodes": n.nodes, "relationships": n.relationships} if n else None,
                       "redis": {"keys": r.keys, "keys_by_db": dict(r.keys_by_db)} if r else None},
            "duration": round(time.monotonic() - t0, 3),
            "writer_window": {**window, "neo4j_strategy": n.strategy if n else None, "neo4j_strategy_why": why,
                              "neo4j_downtime_s": n.downtime_s if n else None}}
