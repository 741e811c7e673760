"""``restore-helix``: put one backup back into an environment's Neo4j and Redis, the first time, at 3 a.m.

Steps, in order (nothing is touched before step 3):

1. **Choose** the backup: ``backup_id``, or the newest *verified* backup of the environment (safety backups
   are never chosen automatically). A backup without a manifest does not exist.
2. **Approval**, when the environment's policy asks for one (``approval`` in the descriptor): publish the plan,
   then wait for a typed answer (``flows.gate.RestoreApproval``: the operator types the backup id back);
   anything else stops the run with nothing touched. The change gate (``flows/gate.py``) does this, the lease,
   and the change record.
3. Under the **environment lease** (backup-helix and restore-helix of one environment never overlap; a killed
   run's lease is released when its holder is provably gone, and the writers it left stopped are started first):
   **verify** every object's stored size and sha256 against the manifest. One flipped byte → refuse
   (``BackupIntegrityError``) before any database is touched.
4. **Stop the writers** (mcp-graph) and keep them stopped for the safety backup and the restore; they are
   started again (and health-checked) afterwards, also when a later step fails.
5. **Safety backup** of the current state (a normal, verified backup with ``safety_for=<restored id>``), so
   the restore itself can be undone (``restore-helix -p backup_id=<safety id>``).
6. **Restore**: Neo4j from the logical export, by default through ``neo4j-admin database import``
   (``neo4j_load="import"``: the export is converted to CSV while Neo4j still runs, then the Neo4j container is
   stopped for the import in a one-off container and started again; the downtime is measured; an export the
   importer cannot carry exactly falls back to the transactional load), or transactionally
   (``neo4j_load="transactional"``: wipe, batched load, schema after data; Neo4j stays up), or from a Community
   ``neo4j-admin database dump`` (the Neo4j container stopped, ``neo4j-admin database load
   --overwrite-destination=true`` in a one-off container on its data volume, started again and health-checked;
   the downtime is measured and reported); Redis by replaying the
   RDB into the running server (``replay_rdb``: FLUSHALL then DUMP/RESTORE with TTLs, every write in the
   server's own AOF, so the "RDB ignored while AOF is on" trap cannot bite).
7. **Verify** Neo4j's node / relationship / label / type counts against the manifest, and Redis's keys
   against what the backup's RDB holds.
8. **Report**: a markdown artifact (``helix-restore-<env>``) with the backup, the safety backup, the writer
   window, the counts and the verdict.

An Enterprise ``online-backup`` is refused by this flow for now: see docs/backup.md.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.params import NEO4J_LOADS, BackupId, Component, EnvName, Neo4jLoad, run_name
from flows.backup import WRITERS, take_backup, window_markdown
from flows.gate import Applied, Change, Proposal, RestoreApproval, run_change, who_asked
from helix_ops.descriptor import descriptor_file
from helix_ops.backup import Manifest, validate_backup_id
from helix_ops.backup_plan import choose_restore_candidate
from helix_ops.descriptor import load_descriptor
from helix_ops.errors import ChangeRefused, ConfigError, HelixOpsError, PlanError
from tasks.backup import (
    NEO4J_DUMP_OBJECT,
    NEO4J_OBJECT,
    REDIS_OBJECT,
    neo4j_counts,
    open_store,
    restore_neo4j_dump,
    restore_neo4j_import,
    restore_neo4j_logical,
    restore_redis_rdb,
    verify_backup,
)
from drivers.target import OFFLINE_NEO4J_TOOLS, Connection, require
from helix_ops.guide import NEO4J_BOLT_PORT, REDIS_PORT
from tasks.target import connect_target, target_for
from tasks.writer_pause import resume_paused_writers, writer_window

TOOL = "helix-ops restore-helix"


class RestoreRefused(ChangeRefused):
    """The prod approval was not given (or named another backup): nothing was touched."""


class RestoreVerificationFailed(HelixOpsError):
    """The restored databases do not hold what the backup's manifest says."""


def bolt_uri(address: tuple[str, int]) -> str:
    return f"bolt://{address[0]}:{address[1]}"


def plan_markdown(m: Manifest, safety: bool) -> str:
    n, r = m.neo4j, m.redis
    lines = [f"# Restore plan for `{m.environment}`", "", f"- backup `{m.backup_id}` from {m.created_at.isoformat()}"
             f" ({'verified ' + m.verification.at.isoformat() if m.verified and m.verification else 'not verified'})"]
    if n:
        lines.append(f"- Neo4j: **wipe** and load {n.nodes} nodes, {n.relationships} relationships ({n.strategy})")
    if r:
        lines.append(f"- Redis: **FLUSHALL** and load {r.keys} keys")
    lines.append(f"- safety backup first: {'yes' if safety else 'NO (safety_backup=false)'}")
    lines.append(f"- writers stopped during the restore: {', '.join(WRITERS)}")
    return "\n".join(lines)


def compare_counts(m: Manifest, neo4j: dict[str, Any] | None, redis: dict[str, Any] | None) -> list[str]:
    """Differences between the manifest and what the databases hold after the restore (empty: all equal)."""
    problems = []
    if m.neo4j and neo4j is not None:
        for what, want, got in (("nodes", m.neo4j.nodes, neo4j["nodes"]),
                                ("relationships", m.neo4j.relationships, neo4j["relationships"]),
                                ("labels", dict(m.neo4j.labels), neo4j["labels"]),
                                ("relationship types", dict(m.neo4j.relationship_types), neo4j["relationship_types"]),
                                ("constraints", m.neo4j.constraints, neo4j["constraints"]),
                                ("indexes", m.neo4j.indexes, neo4j["indexes"])):
            if want != got:
                problems.append(f"neo4j {what}: backup {want}, restored {got}")
    if m.redis and redis is not None:
        loaded, restored = redis["loaded"], redis["restored"]
        if loaded["keys_by_db"] != restored["keys_by_db"]:
            problems.append(f"redis keys: backup RDB {loaded['keys_by_db']}, restored {restored['keys_by_db']}")
        if loaded["keys"] > m.redis.keys:
            problems.append(f"redis keys: RDB holds {loaded['keys']}, manifest says {m.redis.keys}")
    return problems


@flow(name="restore-helix", log_prints=False,
      flow_run_name=run_name("restore-{env}-{backup_id}", backup_id="newest"))
def restore_helix(env: EnvName = "local", backup_id: BackupId | None = None, descriptor: str | None = None,
                  engine_url: str | None = None, storage_path: str | None = None, components: list[Component] | None = None,
                  safety_backup: bool = True, approval_timeout_s: int | None = None, lease_wait_s: float = 1800,
                  neo4j_load: Neo4jLoad = "import", kubeconfig: str | None = None, kube_context: str | None = None,
                  cluster_block: str | None = None, docker_host_block: str | None = None) -> dict[str, Any]:
    """Restore one backup into one Helix environment (see the module docstring for the steps).

    Args:
        env: the environment; its descriptor is ``deployments/<env>.yaml`` unless ``descriptor`` is given.
        backup_id: the backup to restore; default: the newest verified backup of the environment.
        descriptor: path of a descriptor file.
        engine_url / docker_host_block / kubeconfig / kube_context / cluster_block: how the target is reached
            (see backup-helix).
        storage_path: a local backup folder (overrides the descriptor's storage).
        components: restore only these (``["neo4j"]``, ``["redis"]``); default: every component of the backup.
        safety_backup: take a backup of the current state first (default; turn off only for a scratch target).
        approval_timeout_s: how long an approval waits (default: the descriptor's ``approval.timeout``).
        neo4j_load: how a logical export goes back: ``import`` (default: ``neo4j-admin database import`` with the
            Neo4j container stopped for the import; much faster on large graphs) or ``transactional`` (batched
            Cypher writes, Neo4j stays up). A target without one-off containers on Neo4j's data volume
            (Kubernetes) loads transactionally, and says so.

    Returns ``{backup_id, safety_backup_id, restored, counts, writer_window, duration, neo4j_downtime_s}``
    (the downtime of a load or an import; None for a transactional load); raises
    ``BackupIntegrityError`` (nothing touched) on a checksum mismatch, :class:`RestoreRefused` when the
    approval the environment's policy asks for is not given, :class:`RestoreVerificationFailed` when the counts differ after the restore.
    Example: ``prefect deployment run restore-helix/staging -p backup_id=staging-20250102T020000Z-a1b2c3``.
    """
    logger = get_run_logger()
    t0 = time.monotonic()
    if neo4j_load not in NEO4J_LOADS:
        raise ConfigError("neo4j_load", f"{neo4j_load!r}: expected one of {', '.join(NEO4J_LOADS)}")
    desc = load_descriptor(descriptor_file(env, descriptor))
    store = open_store(desc, storage_path)
    if backup_id:
        validate_backup_id(backup_id)
    target = target_for(desc, Connection(engine_url=engine_url, docker_host_block=docker_host_block,
                                         kubeconfig=kubeconfig, kube_context=kube_context,
                                         cluster_block=cluster_block))
    if neo4j_load == "import" and OFFLINE_NEO4J_TOOLS not in target.capabilities:
        logger.info("neo4j_load: import needs one-off containers on Neo4j's data volume, which %s has not: "
                    "loading transactionally (Neo4j stays up)", target.where())
        neo4j_load = "transactional"

    def plan() -> Proposal:
        chosen, wanted = _choose(desc.environment, store, backup_id, components, target)
        return Proposal(markdown=plan_markdown(chosen, safety_backup), lines=_plan_lines(chosen, wanted),
                        is_noop=False, data=(chosen, wanted),
                        identity={"backup_id": chosen.backup_id, "components": list(wanted),
                                  "safety_backup": safety_backup, "neo4j_load": neo4j_load},
                        change={"backup_id": chosen.backup_id, "components": list(wanted)})

    def apply(proposal: Proposal) -> Applied:
        chosen, wanted = proposal.data
        logger.info("restoring %s (%s) into %s", chosen.backup_id, ", ".join(wanted), desc.environment)
        connect_target(target)
        report, neo4j_result, redis_result = _restore(desc, target, store, chosen, wanted, safety_backup,
                                                      neo4j_load, who)
        report.update(approval=proposal.approval, duration=round(time.monotonic() - t0, 3))
        create_markdown_artifact(report_markdown(desc.environment, chosen, report, neo4j_result, redis_result),
                                 key=f"helix-restore-{desc.environment}", description=f"restore-helix {chosen.backup_id}")
        if report["problems"]:
            raise RestoreVerificationFailed("restore of {} into {}: {} (the state before it is safety backup {})"
                                            .format(chosen.backup_id, desc.environment,
                                                    "; ".join(report["problems"]), report["safety_backup_id"]))
        return Applied(after={"backup_id": chosen.backup_id, "safety_backup_id": report["safety_backup_id"]},
                       detail=f"restored {', '.join(wanted)} from {chosen.backup_id}", value=report)

    def typed_back(answer: RestoreApproval, proposal: Proposal) -> str | None:
        typed, chosen = answer.confirm_backup_id.strip(), proposal.identity["backup_id"]
        return None if typed == chosen else f"the typed id {typed!r} is not {chosen}"

    who = who_asked()
    outcome = run_change(Change(desc, "restore", who, plan, apply, form=RestoreApproval, check_answer=typed_back,
                                question=f"restore into `{desc.environment}`", lease_wait_s=lease_wait_s,
                                timeout_s=approval_timeout_s))
    if outcome.status == "refused":
        raise RestoreRefused(f"restore into {desc.environment} refused: {outcome.decision.line()}; nothing touched")
    assert outcome.applied is not None
    return outcome.applied.value


def _choose(environment: str, store: Any, backup_id: str | None, components: list[str] | None,
            target: Any) -> tuple[Manifest, tuple[str, ...]]:
    """The backup to restore and the components of it that go back; refuses what this flow cannot restore."""
    mine = [m for m in store.list() if m.environment == environment]
    chosen = choose_restore_candidate(mine, backup_id)
    wanted = tuple(c for c in chosen.components if components is None or c in components)
    if not wanted:
        raise PlanError(f"backup {chosen.backup_id} holds {list(chosen.components)}, none of {components}")
    if "neo4j" in wanted and chosen.neo4j is not None and chosen.neo4j.strategy not in ("logical", "dump"):
        raise PlanError(f"backup {chosen.backup_id} is a Neo4j {chosen.neo4j.strategy}: restore-helix restores "
                        "logical exports and Community dumps (see docs/backup.md)")
    if "neo4j" in wanted and chosen.neo4j is not None and chosen.neo4j.strategy == "dump":
        require(target, OFFLINE_NEO4J_TOOLS, "backup_id", f"{chosen.backup_id} is a neo4j-admin dump, which only "
                                                          "loads on the engine; restore a logical backup instead")
    return chosen, wanted


def _plan_lines(m: Manifest, wanted: tuple[str, ...]) -> tuple[str, ...]:
    lines = [f"restore backup {m.backup_id} ({', '.join(wanted)}) from {m.created_at.isoformat()}"]
    if "neo4j" in wanted and m.neo4j:
        lines.append(f"neo4j: wipe, then load {m.neo4j.nodes} nodes and {m.neo4j.relationships} relationships")
    if "redis" in wanted and m.redis:
        lines.append(f"redis: FLUSHALL, then load {m.redis.keys} keys")
    return tuple(lines)


def _restore(desc: Any, target: Any, store: Any, chosen: Manifest, wanted: tuple[str, ...], safety_backup: bool,
             neo4j_load: str, owner: str) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
    """Steps 3-7 of the module docstring, under the lease the change gate holds; returns the report and what
    the Neo4j and Redis restores returned."""
    logger = get_run_logger()
    report: dict[str, Any] = {"backup_id": chosen.backup_id, "restored": list(wanted)}
    # writers a killed backup or restore left stopped (its finally never ran) run again first
    resume_paused_writers(target, desc, list(WRITERS))
    # Before anything is touched: every stored object must match the manifest.
    report["checks"] = verify_backup(store, chosen.backup_id)
    neo4j_result = redis_result = None
    safety: Manifest | None = None
    # One writer window for the safety backup and the restore: nothing written in between is lost.
    # Recorded durably before the stop (a killed restore's writers are started by the next run); the writers
    # are started again and health-checked also when a step fails.
    with writer_window(target, desc, list(WRITERS), f"{TOOL} {owner}") as window:
        if safety_backup:
            safety, _ = take_backup(desc, target, store, pause_writer=False, writers_stopped=True,
                                    safety_for=chosen.backup_id, tool=f"{TOOL} (safety)")
            logger.info("safety backup %s taken", safety.backup_id)
        report["safety_backup_id"] = safety.backup_id if safety else None
        if "neo4j" in wanted and chosen.neo4j is not None and chosen.neo4j.strategy == "dump":
            neo4j_result = restore_neo4j_dump(target, desc, store, chosen.backup_id, NEO4J_DUMP_OBJECT)
        elif "neo4j" in wanted:
            # a fresh endpoint per step: an import restarts Neo4j (its published port may change)
            with target.endpoint("neo4j", NEO4J_BOLT_PORT) as bolt:
                if neo4j_load == "import":
                    neo4j_result = restore_neo4j_import(target, bolt_uri(bolt), desc, store, chosen.backup_id,
                                                        NEO4J_OBJECT)
                else:
                    neo4j_result = restore_neo4j_logical(bolt_uri(bolt), desc, store, chosen.backup_id,
                                                         NEO4J_OBJECT)
        if "redis" in wanted:
            with target.endpoint("redis", REDIS_PORT) as (redis_host, redis_port):
                redis_result = restore_redis_rdb(redis_host, redis_port, desc, store, chosen.backup_id,
                                                 REDIS_OBJECT)
    counts = None
    if "neo4j" in wanted:
        with target.endpoint("neo4j", NEO4J_BOLT_PORT) as bolt:
            counts = neo4j_counts(bolt_uri(bolt), desc)
    report.update(writer_window=window, neo4j_downtime_s=neo4j_result.get("downtime_s") if neo4j_result else None,
                  counts={"neo4j": {k: counts[k] for k in ("nodes", "relationships", "constraints", "indexes")}
                          if counts else None,
                          "redis": redis_result["restored"] if redis_result else None},
                  problems=compare_counts(chosen, counts, redis_result))
    return report, neo4j_result, redis_result


def report_markdown(env: str, m: Manifest, report: dict[str, Any], neo4j: dict[str, Any] | None,
                    redis: dict[str, Any] | None) -> str:
    ok = not report["problems"]
    lines = [f"# Restore of `{m.backup_id}` into `{env}`: {'OK' if ok else 'COUNTS DIFFER'}", "",
             f"- approval: {report['approval']}",
             f"- checksums before touching anything: {len(report['checks'])} object(s) ok",
             f"- safety backup: `{report['safety_backup_id']}`" if report["safety_backup_id"]
             else "- safety backup: none (safety_backup=false)",
             window_markdown(report["writer_window"]).replace("for the Neo4j export",
                                                               "for the safety backup and the restore"),
             f"- duration: {report['duration']:.1f}s"]
    if neo4j is not None and m.neo4j is not None:
        c = report["counts"]["neo4j"]
        lines.append(f"- Neo4j: loaded {neo4j['nodes']} nodes / {neo4j['relationships']} relationships in "
                     f"{neo4j['seconds']:.1f}s ({neo4j.get('method', 'transactional load')}); now {c['nodes']} / {c['relationships']} "
                     f"(backup {m.neo4j.nodes} / {m.neo4j.relationships}), {c['constraints']} constraints, "
                     f"{c['indexes']} indexes")
        if neo4j.get("downtime_s") is not None:
            lines.append(f"- **Neo4j downtime: {neo4j['downtime_s']:.1f}s** (stopped, {neo4j['tool']} "
                         f"{neo4j['admin_seconds']:.1f}s in a one-off container, started, Bolt login ok)")
    if redis is not None and m.redis is not None:
        lines.append(f"- Redis: {redis['rdb_check']}; replayed {redis['loaded']['keys']} keys "
                     f"({redis['loaded']['expires']} with TTL); now {redis['restored']['keys']} "
                     f"(backup manifest {m.redis.keys})")
    lines += [f"- problem: {p}" for p in report["problems"]]
    return "\n".join(lines)
