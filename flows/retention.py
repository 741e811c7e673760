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

from flows.params import EnvName, KeepCount, run_name
from helix_ops.descriptor import descriptor_file
from helix_ops.backup import backup_environment, backup_time
from helix_ops.backup_plan import BackupSummary, plan_retention
from helix_ops.descriptor import load_descriptor
from helix_ops.errors import ChangeRefused, PlanError
from tasks.backup import delete_backup, open_store
from flows.gate import Applied, Change, Proposal, run_change, who_asked


class PruneRefused(ChangeRefused):
    """The approval the environment's policy asks for pruning was not given: nothing deleted."""


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
    policy_args = {"daily": d, "weekly": w, "monthly": mo, "timezone": desc.backup.timezone,
                   "orphan_min_age_h": orphan_min_age_h}

    def plan() -> Proposal:
        manifests = [m for m in store.list() if m.environment == desc.environment]
        p = plan_retention([BackupSummary(m.backup_id, m.created_at, tuple(m.components), m.verified)
                            for m in manifests], d, w, mo, tz=desc.backup.timezone)
        verified = [m for m in manifests if m.verified]
        if verified:
            newest_verified = max(verified, key=lambda m: (m.created_at, m.backup_id)).backup_id
            if newest_verified in p.delete:  # plan_retention guarantees this; a second guard before deleting
                raise PlanError(f"retention would delete the newest verified backup {newest_verified}")
        orphans = [bid for bid in store.orphans() if backup_environment(bid) == desc.environment
                   and now - backup_time(bid) > dt.timedelta(hours=orphan_min_age_h)]
        return Proposal(markdown=retention_markdown(desc.environment, p.lines(), orphans, True, policy_args),
                        lines=tuple(p.lines()), is_noop=not p.delete and not orphans, data=(p, orphans),
                        identity={"delete": list(p.delete), "orphans": orphans},
                        change={"delete": list(p.delete), "orphans": orphans})

    def apply(proposal: Proposal) -> Applied:
        p, orphans = proposal.data
        deleted = [delete_backup(store, bid) for bid in [*p.delete, *orphans]]
        return Applied(after={"deleted": deleted}, detail=f"deleted {len(deleted)} backup(s) and orphan(s)",
                       value=deleted)

    if dry_run:  # nothing changes: no lease, no approval, no record
        proposal = plan()
    else:
        outcome = run_change(Change(desc, "prune", who_asked(), plan, apply))
        if outcome.status == "refused":
            raise PruneRefused(f"pruning of {desc.environment} refused: {outcome.decision.line()}; nothing deleted")
        proposal = outcome.proposal
    p, orphans = proposal.data
    for line in p.lines():
        logger.info("retention: %s", line)
    deleted = outcome.applied.value if not dry_run and outcome.applied else []
    create_markdown_artifact(retention_markdown(desc.environment, p.lines(), orphans, dry_run, policy_args),
                             key=f"helix-retention-{desc.environment}",
                             description=f"prune-helix-backups of {desc.environment}")
    return {"keep": list(p.keep), "delete": list(p.delete), "orphans": orphans, "deleted": deleted,
            "dry_run": dry_run}
