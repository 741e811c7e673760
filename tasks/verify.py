"""Prefect tasks of verify-helix-backup's scratch restore: the backup is loaded into throwaway Neo4j and Redis
containers on the engine (``drivers.engine_scratch.ScratchEngine``), checked with the databases' own tools, and its
counts compared with the manifest. A Neo4j dump (strategy ``dump``) is loaded with ``neo4j-admin database load``
through ``drivers.neo4j_offline.EngineNeo4j`` (restore-helix's code) on the scratch data volume
(:func:`scratch_verify_neo4j_dump`); its one-off containers are a scratch run of their own (:func:`admin_run`).

Each scratch task creates its own containers and volumes with a password made for them (``secrets``, 48 hex
characters, handed to the container as an environment value only, never logged, returned or passed to
another task) and removes them in a ``finally``; :func:`scratch_cleanup` is the flow's safety net for the
whole run. A failed check is *returned* (``ok: False``) so every check runs and is reported; a task raises only
when the scratch machinery itself fails (engine, image, a server that does not come up), which is retried once
with fresh containers.

A check is a dict ``{"name", "ok", "seconds", "detail"}``; :func:`check_line` turns it into the manifest's
verification line.
"""

from __future__ import annotations

import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from drivers.storage import BackupStore
from helix_ops.backup import Manifest, Neo4jInfo, RedisInfo
from helix_ops.backup_tools import neo4j_check_argv, redis_check_rdb_argv, redis_keyspace_counts
from helix_ops.errors import BackupIntegrityError, CommandFailed, DriverError

NEO4J_DATA = "/data"
REDIS_DATA = "/data"
REDIS_RDB = "dump.rdb"
# The scratch redis-server: loads /data/dump.rdb at start, never writes it (no save, no AOF); the password is
# read from the container's environment into a private config file: it is never on an argument list.
REDIS_SCRIPT = """set -eu
umask 077
{
  echo "port 6379"
  echo "dir /data"
  echo "dbfilename dump.rdb"
  echo "appendonly no"
  echo 'save ""'
  echo "requirepass $SCRATCH_REDIS_PASSWORD"
} > /tmp/redis.conf
unset SCRATCH_REDIS_PASSWORD
exec redis-server /tmp/redis.conf
"""


# --- pure helpers ---------------------------------------------------------------------------------------------


def check(name: str, ok: bool, seconds: float, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "seconds": round(float(seconds), 2), "detail": detail}


def check_line(c: dict[str, Any]) -> str:
    """``name: ok|FAILED in 1.2s: detail`` (what the manifest's verification records)."""
    return f"{c['name']}: {'ok' if c['ok'] else 'FAILED'} in {c['seconds']:.1f}s: {c['detail']}"


def neo4j_check_verdict(rc: int, output: str) -> tuple[bool, str]:
    """``neo4j-admin database check``'s verdict from its exit code and output: ``(ok, one line)``.

    Exit 0 is a consistent store. Otherwise the line quotes what Neo4j said (the inconsistency summary and the
    report's path, or the last meaningful lines). A checker that ran out of memory or was killed is no verdict on
    the backup: :class:`DriverError`.
    """
    lines = [ln.strip() for ln in output.splitlines()
             if ln.strip() and not re.fullmatch(r"[.\s]*\d*%?", ln.strip())]
    if rc == 0:
        return True, "exit 0: the store is consistent"
    if rc in (137, 143) or "OutOfMemoryError" in output:
        raise DriverError(f"neo4j-admin database check did not finish (exit {rc}): "
                          f"{' | '.join(lines[-2:])[:400]}",
                          hint="give the scratch check more memory, or run it on a larger engine host")
    said = [ln for ln in lines if re.search(r"inconsisten|report|error|exception", ln, re.I)] or lines
    return False, f"exit {rc}: {' | '.join(said[-3:])[:600]}"


def parse_check_rdb(rc: int, output: str) -> dict[str, Any]:
    """``redis-check-rdb``'s verdict and counts: ``{ok, keys, expires, already_expired, tail}``."""
    def number(what: str) -> int | None:
        m = re.search(rf"(\d+)\s+{what}", output)
        return int(m.group(1)) if m else None

    tail = [ln.strip() for ln in output.strip().splitlines() if ln.strip()][-3:]
    return {"ok": rc == 0 and "RDB looks OK" in output, "keys": number("keys read"), "expires": number("expires"),
            "already_expired": number("already expired") or 0, "tail": " | ".join(tail)}


def manifest_rdb_keys(info: RedisInfo) -> int | None:
    """The key count backup-helix's own ``redis-check-rdb`` read from this RDB (in ``rdb_check``), if recorded."""
    m = re.search(r"(\d+)\s+keys read", info.rdb_check)
    return int(m.group(1)) if m else None


def compare_neo4j(info: Neo4jInfo, counts: dict[str, Any], recorded_only: bool = False) -> list[str]:
    """Differences between the manifest's Neo4j counts and what the scratch database holds (empty: equal).

    ``recorded_only``: per-label / per-type counts are compared only when the manifest has them (a manifest
    with nodes but no labels did not record them)."""
    problems = []
    for what, want, got in (("nodes", info.nodes, counts["nodes"]),
                            ("relationships", info.relationships, counts["relationships"]),
                            ("labels", dict(info.labels), counts["labels"]),
                            ("relationship types", dict(info.relationship_types), counts["relationship_types"]),
                            ("constraints", info.constraints, counts["constraints"]),
                            ("indexes", info.indexes, counts["indexes"])):
        if recorded_only and not want and (what == "labels" and info.nodes
                                           or what == "relationship types" and info.relationships):
            continue
        if want != got:
            problems.append(f"{what}: manifest {want}, scratch restore {got}")
    return problems


def compare_redis(info: RedisInfo, rdb: dict[str, Any], loaded: dict[str, Any]) -> list[str]:
    """Differences between the manifest's Redis counts, the RDB (``redis-check-rdb``) and what the scratch
    server loaded (``INFO keyspace``). Keys that expired since the backup are not loaded by Redis: the loaded
    count is compared with the RDB's keys minus those ``redis-check-rdb`` reports already expired, and the
    per-database counts only when none expired."""
    problems = []
    if rdb["keys"] is None:
        problems.append("redis-check-rdb reported no key count")
        return problems
    if rdb["keys"] != info.keys:
        problems.append(f"keys: manifest {info.keys}, the RDB holds {rdb['keys']}")
    recorded = manifest_rdb_keys(info)
    if recorded is not None and recorded != rdb["keys"]:
        problems.append(f"keys: manifest's rdb_check read {recorded}, the RDB holds {rdb['keys']}")
    expected = rdb["keys"] - rdb["already_expired"]
    if loaded["keys"] != expected:
        problems.append(f"keys: the scratch server loaded {loaded['keys']}, the RDB holds {rdb['keys']} "
                        f"({rdb['already_expired']} already expired)")
    if rdb["already_expired"] == 0 and info.keys_by_db and dict(info.keys_by_db) != loaded["keys_by_db"]:
        problems.append(f"keys per database: manifest {dict(info.keys_by_db)}, scratch restore {loaded['keys_by_db']}")
    return problems


def image_user(client: Any, image: str) -> tuple[int, int]:
    """The numeric ``uid, gid`` an image runs as (``Config.User`` ``"999:999"``; root when unset or a name)."""
    user = (client.images.get(image).attrs.get("Config") or {}).get("User") or "0:0"
    uid, _, gid = user.partition(":")
    return (int(uid), int(gid or uid)) if uid.isdigit() and (not gid or gid.isdigit()) else (0, 0)


def admin_run(run_id: str) -> str:
    """The scratch run id of the one-off ``neo4j-admin`` containers of a dump verification (their own run: the
    one-off's ``cleanup`` removes everything of its run, and must not take the scratch data volume with it).
    :func:`scratch_cleanup` removes both runs."""
    return f"{run_id}-admin"


def scratch_neo4j_environment(password: str, heap: str, pagecache: str, edition: str = "community") -> dict[str, str]:
    """The scratch Neo4j container's environment: its login, memory, and for an Enterprise backup the
    official image's licence acceptance (an Enterprise image does not start without it)."""
    env = {"NEO4J_AUTH": f"neo4j/{password}", "NEO4J_server_memory_heap_initial__size": heap,
           "NEO4J_server_memory_heap_max__size": heap, "NEO4J_server_memory_pagecache_size": pagecache}
    if edition.lower() == "enterprise":
        env["NEO4J_ACCEPT_LICENSE_AGREEMENT"] = "yes"
    return env


def start_scratch_neo4j(eng: Any, image: str, data: str, password: str, heap: str, pagecache: str,
                        start_deadline_s: float, edition: str = "community") -> tuple[Any, str, int]:
    """Start the scratch Neo4j (``image``) on the scratch volume ``data`` and wait for a Bolt login;
    ``(container, host, port)``. ``edition``: the backed-up server's (Enterprise: the licence is accepted)."""
    from drivers.engine_health import bolt_check, wait_container_healthy

    container = eng.start("neo4j", image, volumes={data: NEO4J_DATA}, ports=[7687],
                          environment=scratch_neo4j_environment(password, heap, pagecache, edition))
    host, port = eng.loopback_port(container, 7687)
    wait_container_healthy(container, bolt_check(host, port, "neo4j", password), "the scratch Neo4j to accept "
                           "a Bolt login", start_deadline_s, interval_s=1)
    return container, host, port


class ScratchNeo4jHost:
    """The scratch Neo4j container, seen through the small part of :class:`drivers.engine.EngineDriver` that
    :class:`drivers.neo4j_offline.EngineNeo4j` uses (``client``, ``project``, ``containers``,
    ``start_containers``, ``probe_address``, ``wait_healthy``): so the dump is loaded by the same code as
    restore-helix's (``EngineNeo4j.stop`` / ``load`` / ``start``), into the scratch data volume. The scratch
    container carries no project label, so the project driver cannot find it; this does, by name."""

    def __init__(self, eng: Any, container: Any) -> None:
        self.eng = eng
        self.client = eng.client
        self.project = eng.run_id
        self.container = container

    def containers(self, service: str | None = None) -> list[Any]:
        self.container.reload()
        return [self.container]

    def start_containers(self, names: Any, deadline_s: float = 120) -> list[str]:
        """Start the scratch container; :meth:`wait_healthy` then fails early if it exits."""
        if self.container.name not in set(names):
            raise DriverError(f"cannot start {', '.join(sorted(names))}: not the scratch Neo4j "
                              f"{self.container.name}", hint="a bug in the scratch verification")
        self.container.start()
        self.container.reload()
        return [self.container.name]

    def probe_address(self, container: Any, port: int) -> tuple[str, int]:
        return self.eng.loopback_port(container, port)

    def wait_healthy(self, container: Any, check_fn: Any, what: str, deadline_s: float, interval_s: float = 0.5,
                     recheck: Any = None) -> str:
        from drivers.engine_health import wait_container_healthy

        return wait_container_healthy(container, check_fn, what, deadline_s, interval_s)


# --- tasks -----------------------------------------------------------------------------------------------------


@task(name="scratch-verify-neo4j", retries=1, retry_delay_seconds=10, timeout_seconds=4 * 3600,
      cache_policy=NO_CACHE)
def scratch_verify_neo4j(base_url: str | None, run_id: str, labels: dict[str, str], image: str,
                         store: BackupStore, backup_id: str, object_name: str, heap: str = "512m",
                         pagecache: str = "128m", start_deadline_s: float = 600,
                         check_deadline_s: float = 3600) -> list[dict[str, Any]]:
    """Load the backup's logical Neo4j export into a scratch Neo4j (``image``: the environment's), compare its
    counts with the manifest, stop it and run ``neo4j-admin database check neo4j`` on its data volume in a
    one-off container. Returns the checks; the scratch containers and volume are removed before it returns."""
    from drivers.engine_scratch import ScratchEngine
    from drivers.neo4j_load import load_logical

    logger = get_run_logger()
    manifest = store.read_manifest(backup_id)
    assert manifest.neo4j is not None
    entry = manifest.object(object_name)
    eng = ScratchEngine.connect(base_url, run_id, labels)
    password = secrets.token_hex(24)
    checks: list[dict[str, Any]] = []
    try:
        data = eng.volume("neo4j-data")
        t0 = time.monotonic()
        container, host, port = start_scratch_neo4j(eng, image, data, password, heap, pagecache, start_deadline_s,
                                                    manifest.neo4j.edition)
        checks.append(check("scratch-neo4j-start", True, time.monotonic() - t0,
                            f"{image} on 127.0.0.1:{port} (heap {heap}, page cache {pagecache})"))
        uri = f"bolt://{host}:{port}"
        t0 = time.monotonic()
        try:
            stats = load_logical(uri, "neo4j", password, store.open_raw(backup_id, entry), wipe=False,
                                 log=logger.info)
        except BackupIntegrityError as exc:
            checks.append(check("neo4j-load", False, time.monotonic() - t0, f"the export does not load: {exc}"))
            return checks
        checks.append(check("neo4j-load", True, time.monotonic() - t0,
                            f"{stats.nodes} nodes, {stats.relationships} relationships, {stats.constraints} "
                            f"constraints, {stats.indexes} indexes loaded from {object_name}"))
        checks.append(_neo4j_counts_check(manifest, uri, password, ""))
        stopped = eng.stop(container)
        logger.info("scratch neo4j stopped in %.1fs; running neo4j-admin database check", stopped)
        checks.append(_neo4j_admin_check(eng, image, data, check_deadline_s,
                                         f"scratch data volume; server stopped in {stopped:.1f}s"))
        return checks
    finally:
        gone = eng.cleanup()
        logger.info("scratch neo4j removed: %d container(s), %d volume(s)", len(gone["containers"]),
                    len(gone["volumes"]))


def _neo4j_counts_check(manifest: Manifest, uri: str, password: str, how: str,
                        recorded_only: bool = False) -> dict[str, Any]:
    """The scratch server's counts against the manifest, as the ``neo4j-counts`` check (``how``: what the
    scratch server's note adds)."""
    from drivers.neo4j_load import graph_counts

    t0 = time.monotonic()
    counts = graph_counts(uri, "neo4j", password)
    problems = compare_neo4j(manifest.neo4j, counts, recorded_only=recorded_only)
    return check("neo4j-counts", not problems, time.monotonic() - t0, "; ".join(problems) or (
        f"nodes {counts['nodes']}, relationships {counts['relationships']}, {len(counts['labels'])} labels, "
        f"{len(counts['relationship_types'])} types, {counts['constraints']} constraints, {counts['indexes']} "
        f"indexes equal the manifest (scratch server {counts['server_version']}{how}, backup from "
        f"{manifest.neo4j.server_version})"))


def _neo4j_admin_check(eng: Any, image: str, data: str, deadline_s: float, on: str) -> dict[str, Any]:
    """``neo4j-admin database check neo4j`` in a one-off container on the stopped scratch store, as a check."""
    argv = [*neo4j_check_argv("neo4j"), "--report-path=/tmp"]
    result = eng.run_once("neo4j-check", image, argv, volumes={data: NEO4J_DATA}, deadline_s=deadline_s)
    ok, verdict = neo4j_check_verdict(result.rc, result.output)
    return check("neo4j-admin-check", ok, result.seconds,
                 f"{' '.join(argv[:4])} (offline, one-off container on the {on}): {verdict}")


@task(name="scratch-verify-neo4j-dump", retries=1, retry_delay_seconds=10, timeout_seconds=4 * 3600,
      cache_policy=NO_CACHE)
def scratch_verify_neo4j_dump(base_url: str | None, run_id: str, labels: dict[str, str], image: str,
                              store: BackupStore, backup_id: str, object_name: str, heap: str = "512m",
                              pagecache: str = "128m", start_deadline_s: float = 600,
                              admin_deadline_s: float = 3600) -> list[dict[str, Any]]:
    """Restore the backup's Neo4j dump (strategy ``dump``) into a scratch Neo4j the way restore-helix restores
    one (``drivers.neo4j_offline.EngineNeo4j``): the scratch server (``image``: the environment's) is started on
    an empty volume and stopped, ``neo4j-admin database load --overwrite-destination=true`` runs in a one-off
    container on that volume with the dump streamed from the store (its checksums checked while it streams),
    ``neo4j-admin database check neo4j`` runs on the loaded store (server still stopped), then the server is
    started on it and its counts are compared with the manifest. Returns the checks (a dump that does not load,
    or fails a check, is a failed check, not an error); the scratch containers and volume are removed before it
    returns."""
    from drivers.engine_scratch import ScratchEngine
    from drivers.neo4j_offline import EngineNeo4j

    logger = get_run_logger()
    manifest = store.read_manifest(backup_id)
    assert manifest.neo4j is not None
    entry = manifest.object(object_name)
    eng = ScratchEngine.connect(base_url, run_id, labels)
    admin = ScratchEngine(eng.client, admin_run(run_id), labels)
    password = secrets.token_hex(24)
    checks: list[dict[str, Any]] = []
    try:
        data = eng.volume("neo4j-data")
        t0 = time.monotonic()
        container, _, port = start_scratch_neo4j(eng, image, data, password, heap, pagecache, start_deadline_s,
                                                 manifest.neo4j.edition)
        checks.append(check("scratch-neo4j-start", True, time.monotonic() - t0,
                            f"{image} on 127.0.0.1:{port} (heap {heap}, page cache {pagecache}), empty store"))
        target = EngineNeo4j(ScratchNeo4jHost(eng, container), "neo4j", password, image=image,
                             run_id=admin.run_id, scratch_labels=labels, start_deadline_s=start_deadline_s,
                             admin_deadline_s=admin_deadline_s, log=logger.info)
        t0 = time.monotonic()
        target.stop()
        stopped = time.monotonic() - t0
        t0 = time.monotonic()
        try:
            target.load(store.raw_chunks(backup_id, entry), entry.raw_size)
        except BackupIntegrityError as exc:  # the store's checks while streaming: the bytes are not the backup's
            checks.append(check("neo4j-load", False, time.monotonic() - t0, f"the dump does not load: {exc}"))
            return checks
        except CommandFailed as exc:
            said = [ln.strip() for ln in exc.stderr.splitlines() if ln.strip()]
            if exc.rc in (137, 143) or "OutOfMemoryError" in exc.stderr:  # killed: no verdict on the backup
                raise DriverError(f"neo4j-admin database load did not finish (exit {exc.rc}): "
                                  f"{' | '.join(said[-2:])[:400]}", hint="give the scratch engine more memory") \
                    from exc
            checks.append(check("neo4j-load", False, time.monotonic() - t0,
                                f"neo4j-admin database load of {object_name} exited {exc.rc}: "
                                f"{' | '.join(said[-3:])[:600]}"))
            return checks
        checks.append(check("neo4j-load", True, time.monotonic() - t0,
                            f"neo4j-admin database load of {object_name} ({entry.raw_size} bytes, checksums checked "
                            f"while streaming) in a one-off container on the scratch data volume (scratch server "
                            f"stopped in {stopped:.1f}s; neo4j-admin {target.admin_seconds:.1f}s)"))
        checks.append(_neo4j_admin_check(eng, image, data, admin_deadline_s, "loaded scratch data volume"))
        t0 = time.monotonic()
        target.start()  # waits for a Bolt login on the loaded store; a restart may publish another port
        started = time.monotonic() - t0
        checks.append(_neo4j_counts_check(manifest, target.uri, password,
                                          f" started on the loaded store in {started:.1f}s", recorded_only=True))
        return checks
    finally:
        gone = eng.cleanup()
        more = admin.cleanup()  # EngineNeo4j removes its one-offs itself; this is for a crash in between
        logger.info("scratch neo4j removed: %d container(s), %d volume(s)",
                    len(gone["containers"]) + len(more["containers"]), len(gone["volumes"]) + len(more["volumes"]))


@task(name="scratch-verify-redis", retries=1, retry_delay_seconds=10, timeout_seconds=2 * 3600,
      cache_policy=NO_CACHE)
def scratch_verify_redis(base_url: str | None, run_id: str, labels: dict[str, str], image: str,
                         store: BackupStore, backup_id: str, object_name: str,
                         start_deadline_s: float = 600) -> list[dict[str, Any]]:
    """Start a scratch redis-server (``image``: the environment's) with the backup's RDB as its dump file, run
    ``redis-check-rdb`` on that file in the container, and compare the keys it loaded with the RDB and the
    manifest. Returns the checks; the scratch container and volume are removed before it returns."""
    import redis as redislib

    from drivers.engine_health import redis_check, wait_container_healthy
    from drivers.engine_scratch import ScratchEngine, ScratchFile

    logger = get_run_logger()
    manifest = store.read_manifest(backup_id)
    assert manifest.redis is not None
    entry = manifest.object(object_name)
    eng = ScratchEngine.connect(base_url, run_id, labels)
    password = secrets.token_hex(24)
    checks: list[dict[str, Any]] = []
    try:
        uid, gid = image_user(eng.client, image)
        with tempfile.TemporaryDirectory(prefix="helix-verify-redis-") as tmp:
            rdb = store.fetch_to_file(backup_id, entry, Path(tmp) / REDIS_RDB)
            data = eng.volume("redis-data")
            t0 = time.monotonic()
            container = eng.start("redis", image, entrypoint=["sh", "-c", REDIS_SCRIPT],
                                  environment={"SCRATCH_REDIS_PASSWORD": password}, volumes={data: REDIS_DATA},
                                  ports=[6379], files=[ScratchFile(f"{REDIS_DATA}/{REDIS_RDB}", rdb, uid, gid)])
        host, port = eng.loopback_port(container, 6379)
        wait_container_healthy(container, redis_check(host, port, password), "the scratch Redis to load the RDB",
                               start_deadline_s)
        checks.append(check("scratch-redis-start", True, time.monotonic() - t0,
                            f"{image} on 127.0.0.1:{port} loaded the RDB ({entry.raw_size} bytes)"))
        argv = redis_check_rdb_argv(f"{REDIS_DATA}/{REDIS_RDB}")
        result = eng.exec(container, argv)
        rdb_facts = parse_check_rdb(result.rc, result.output)
        checks.append(check("redis-check-rdb", rdb_facts["ok"], result.seconds,
                            f"RDB looks OK ({rdb_facts['keys']} keys read, {rdb_facts['expires']} with a TTL, "
                            f"{rdb_facts['already_expired']} already expired)" if rdb_facts["ok"]
                            else f"exit {result.rc}: {rdb_facts['tail']}"))
        t0 = time.monotonic()
        with redislib.Redis(host=host, port=port, password=password, socket_timeout=30) as client:
            keys, expires, by_db = redis_keyspace_counts(client.info("keyspace"))
            version = client.info("server").get("redis_version", "?")
        problems = compare_redis(manifest.redis, rdb_facts, {"keys": keys, "keys_by_db": by_db})
        checks.append(check("redis-counts", not problems, time.monotonic() - t0, "; ".join(problems) or (
            f"{keys} keys ({by_db}) equal the manifest and the RDB (scratch server {version}, backup from "
            f"{manifest.redis.server_version})")))
        return checks
    finally:
        gone = eng.cleanup()
        logger.info("scratch redis removed: %d container(s), %d volume(s)", len(gone["containers"]),
                    len(gone["volumes"]))


@task(name="scratch-cleanup", retries=2, retry_delay_seconds=[2, 5], timeout_seconds=300, cache_policy=NO_CACHE)
def scratch_cleanup(base_url: str | None, run_id: str, labels: dict[str, str]) -> dict[str, list[str]]:
    """Remove whatever of scratch run ``run_id`` (and of its neo4j-admin one-offs, :func:`admin_run`) is left
    (the tasks remove their own; this is the safety net after a crash or timeout) and return what is left
    afterwards (empty lists)."""
    from drivers.engine_scratch import ScratchEngine

    eng = ScratchEngine.connect(base_url, run_id, labels)
    left: dict[str, list[str]] = {"containers": [], "volumes": []}
    for one in (eng, ScratchEngine(eng.client, admin_run(run_id), labels)):  # the run and its neo4j-admin one-offs
        gone = one.cleanup()
        if gone["containers"] or gone["volumes"]:
            get_run_logger().warning("scratch leftovers of %s removed: %s", one.run_id, gone)
        for kind, names in one.leftovers().items():
            left[kind] += names
    return left


@task(name="scratch-preflight", timeout_seconds=120, cache_policy=NO_CACHE)
def scratch_preflight(base_url: str | None, run_id: str, labels: dict[str, str], images: list[str]) -> list[str]:
    """The engine answers and has every image the scratch restore needs (nothing is created yet)."""
    from drivers.engine_scratch import ScratchEngine

    return ScratchEngine.connect(base_url, run_id, labels).require_images(images)


@task(name="record-failed-verification", retries=2, retry_delay_seconds=2, timeout_seconds=120,
      cache_policy=NO_CACHE)
def record_failed_verification(store: BackupStore, backup_id: str, by: str, checks: list[str]) -> dict[str, Any]:
    """Record a *failed* verification in the manifest (``ok: false``): the backup stops counting as verified,
    so restore-helix no longer picks it as the newest verified backup."""
    from tasks.backup import write_verification

    return write_verification(store, backup_id, by, checks, ok=False)
