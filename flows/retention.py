"""``prune-helix-backups``: grandfather-father-son retention of one environment's backups.

* Only backups **with a manifest** count (a backup without one does not exist): the plan is
  ``helix_ops.backup_plan.plan_retention`` over them, with the descriptor's ``backup.retention`` (N daily, weekly,
  monthly, calendar buckets in ``backup.timezone``) unless given as parameters. It always keeps the newest
  backup and the newest **verified** one of each group of equal components; the flow checks that again
  before deleting anything.
* **Orphans** (objects without a manifest: a crashed or killed run) of this environment whose id is older
  than ``orphan_min_age_h`` (default 24 h) are removed too. They are never counted as backups. Under the
  environment lease no backup of this environment is running, so an orphan is dead; the age threshold is a
  second guard (e.g. for a store shared with a run that holds no lease).
* ``dry_run`` (the default) deletes nothing: the artifact ``helix-retention-<env>`` lists what would go and
  why each kept backup stays. The scheduled deployment runs with ``dry_run: false``.
* Deleting a backup removes its manifest first (it stops existing), then its objects.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.params import EnvName, KeepCount, run_name
from helix_ops.descriptor import descriptor_file
from helix_ops.backup import backup_environment, backup_time
from helix_ops.backup_plan import BackupSummary, plan_retention
from helix_ops.descriptor import load_descriptor
from helix_ops.errors import PlanError
from tasks.backup import delete_backup, open_store
from flows.lease import environment_lease


def retention_markdown(env: str, plan_lines: list[str], orphans: list[str], dry_run: bool,
                       policy: dict[str, Any]) -> str:
    head = "would delete" if dry_run else "deleted"
    dels = [ln for ln in plan_lines if ln.startswith("delete ")]
    keeps = [ln for ln in plan_lines if ln.startswith("keep ")]
    lines = [f"# Backup retention for `{env}`{' (dry run: nothing deleted)' if dry_run else ''}", "",
             f"policy: {policy['daily']} daily, {policy['weekly']} weekly, {policy['monthly']} monthly "
             f"(timezone {policy['timezone']}); orphans older than {policy['orphan_min_age_h']} h", "",
             f"## {head}: {len(dels)} backup(s), {len(orphans)} orphan(s)", ""]
    lines += [f"- `{ln.split(' ', 2)[1]}`: {ln.split(': ', 1)[1]}" for ln in dels] or ["- none"]
    lines += [f"- orphan `{o}` (no manifest)" for o in orphans]
    lines += ["", f"## kept: {len(keeps)}", ""]
    lines += [f"- `{ln.split(' ', 2)[1]}`: {ln.split(': ', 1)[1]}" for ln in keeps] or ["- none"]
    return "\n".join(lines)


@flow(name="prune-helix-backups", log_prints=False, flow_run_name=run_name("prune-{env}"))
def prune_helix_backups(env: EnvName = "local", descriptor: str | None = None, storage_path: str | None = None,
                        dry_run: bool = True, daily: KeepCount | None = None, weekly: KeepCount | None = None,
                        monthly: KeepCount | None = None, orphan_min_age_h: float = 24,
                        now: dt.datetime | None = None) -> dict[str, Any]:
    """Apply GFS retention to ``env``'s backups (see the module docstring).

    Args:
        env / descriptor: the environment and its descriptor (``deployments/<env>.yaml`` by default).
        storage_path: a local backup folder (overrides the descriptor's storage).
        dry_run: only list what would be deleted (default).
        daily / weekly / monthly: override the descriptor's ``backup.retention``.
        orphan_min_age_h: remove manifest-less leftovers older than this (hours).
        now: the time orphans are aged against (tests); default the current time.

    Returns ``{keep, delete, orphans, deleted, dry_run}`` (ids). Example:
    ``prefect deployment run prune-helix-backups/prod -p dry_run=true``.
    """
    logger = get_run_logger()
    desc = load_descriptor(descriptor_file(env, descriptor))
    policy = desc.backup.retention
    d = policy.daily if daily is None else daily
    w = policy.weekly if weekly is None else weekly
    mo = policy.monthly if monthly is None else monthly
    store = open_store(desc, storage_path)
    now = now or dt.datetime.now(dt.UTC)
    owner = f"flow-run/{flow_run.get_id() or 'local'}"
    with environment_lease(desc.environment, owner):
        manifests = [m for m in store.list() if m.environment == desc.environment]
        plan = plan_retention([BackupSummary(m.backup_id, m.created_at, tuple(m.components), m.verified)
                               for m in manifests], d, w, mo, tz=desc.backup.timezone)
        verified = [m for m in manifests if m.verified]
        if verified:
            newest_verified = max(verified, key=lambda m: (m.created_at, m.backup_id)).backup_id
            if newest_verified in plan.delete:  # plan_retention guarantees this; a second guard before deleting
                raise PlanError(f"retention would delete the newest verified backup {newest_verified}")
        orphans = []
        for bid in store.orphans():
            if backup_environment(bid) == desc.environment and \
                    now - backup_time(bid) > dt.timedelta(hours=orphan_min_age_h):
                orphans.append(bid)
        for line in plan.lines():
            logger.info("retention: %s", line)
        deleted: list[str] = []
        if not dry_run:
            for bid in [*plan.delete, *orphans]:
                deleted.append(delete_backup(store, bid))
    create_markdown_artifact(
        retention_markdown(desc.environment, plan.lines(), orphans, dry_run,
                           {"daily": d, "weekly": w, "monthly": mo, "timezone": desc.backup.timezone,
                            "orphan_min_age_h": orphan_min_age_h}),
        key=f"helix-retention-{desc.environment}", description=f"prune-helix-backups of {desc.environment}")
    return {"keep": list(plan.keep), "delete": list(plan.delete), "orphans": orphans, "deleted": deleted,
            "dry_run": dry_run}
