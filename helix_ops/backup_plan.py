"""Backups, the decisions over listed backups (pure): what retention keeps, what a restore takes, which
Neo4j strategy a backup uses.

* :func:`plan_retention`: grandfather-father-son (N daily, weekly, monthly), never deleting the newest backup
  nor the newest verified one; the plan *is* the dry run.
* :func:`choose_restore_candidate`: the named backup, else the newest verified one.
* :func:`choose_neo4j_strategy` / :func:`backup_strategy_for`: edition → strategy unless one is named.

The ids and the manifest these work on are in :mod:`helix_ops.backup`.

Example::

    plan = plan_retention(summaries, daily=7, weekly=4, monthly=12, tz="Europe/Berlin")
    plan.delete                                  # ids to delete, newest first, each with a reason in plan.reasons
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from helix_ops.backup import Manifest, Neo4jStrategy, validate_backup_id
from helix_ops.errors import ConfigError, PlanError


# --- retention ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupSummary:
    """What retention needs to know about one listed backup (one with a manifest)."""

    backup_id: str
    created_at: dt.datetime
    components: tuple[str, ...]
    verified: bool = False


@dataclass(frozen=True)
class RetentionPlan:
    """What retention would do: ``keep`` and ``delete`` (ids, newest first) with a reason for each."""

    keep: tuple[str, ...]
    delete: tuple[str, ...]
    reasons: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [f"keep {b}: {self.reasons[b]}" for b in self.keep] + \
               [f"delete {b}: {self.reasons[b]}" for b in self.delete]


def plan_retention(backups: Iterable[BackupSummary], daily: int, weekly: int, monthly: int,
                   tz: str = "UTC") -> RetentionPlan:
    """Grandfather-father-son over ``backups`` (each group of equal ``components`` on its own).

    Keeps the newest backup of each of the ``daily`` most recent days that have one, of the ``weekly`` most
    recent ISO weeks and of the ``monthly`` most recent months (calendar days in ``tz``); always keeps the
    newest backup and the newest verified backup of each group. Everything else is deleted.
    """
    zone = zoneinfo.ZoneInfo(tz)
    groups: dict[tuple[str, ...], list[BackupSummary]] = {}
    for b in backups:
        validate_backup_id(b.backup_id)
        if b.created_at.tzinfo is None:
            raise PlanError(f"backup {b.backup_id} has a naive creation time")
        groups.setdefault(tuple(sorted(b.components)), []).append(b)
    reasons: dict[str, str] = {}
    keep: list[BackupSummary] = []
    delete: list[BackupSummary] = []
    for comps, items in groups.items():
        items.sort(key=lambda b: (b.created_at, b.backup_id), reverse=True)
        why: dict[str, list[str]] = {}

        def bucket(n: int, name: str, key) -> None:  # noqa: ANN001
            seen: list[object] = []
            for b in items:
                k = key(b.created_at.astimezone(zone))
                if k in seen:
                    continue
                if len(seen) >= n:
                    break
                seen.append(k)
                why.setdefault(b.backup_id, []).append(f"{name} {k}")

        bucket(daily, "daily", lambda t: t.date().isoformat())
        bucket(weekly, "weekly", lambda t: "%d-W%02d" % t.isocalendar()[:2])
        bucket(monthly, "monthly", lambda t: f"{t.year}-{t.month:02d}")
        if items:
            why.setdefault(items[0].backup_id, []).append("newest")
        newest_verified = next((b for b in items if b.verified), None)
        if newest_verified is not None:
            why.setdefault(newest_verified.backup_id, []).append("newest verified")
        label = "+".join(comps) or "empty"
        for b in items:
            if b.backup_id in why:
                keep.append(b)
                reasons[b.backup_id] = f"[{label}] " + ", ".join(why[b.backup_id])
            else:
                delete.append(b)
                reasons[b.backup_id] = f"[{label}] outside {daily} daily / {weekly} weekly / {monthly} monthly"
    order = lambda b: (b.created_at, b.backup_id)  # noqa: E731
    return RetentionPlan(tuple(b.backup_id for b in sorted(keep, key=order, reverse=True)),
                         tuple(b.backup_id for b in sorted(delete, key=order, reverse=True)), reasons)


def choose_restore_candidate(manifests: Sequence[Manifest], backup_id: str | None, component: str | None = None,
                             require_verified: bool = True) -> Manifest:
    """The backup to restore: ``backup_id`` if given (it must be listed), else the newest verified one
    (holding ``component`` if given). Raises :class:`PlanError` when there is none."""
    if backup_id:
        validate_backup_id(backup_id)
        for m in manifests:
            if m.backup_id == backup_id:
                return m
        raise PlanError(f"backup {backup_id} is not listed (no manifest: it never completed, or was deleted)")
    pool = [m for m in manifests if (not component or component in m.components)
            and (m.verified or not require_verified) and m.safety_for is None]
    if not pool:
        what = "verified backup" if require_verified else "backup"
        raise PlanError(f"there is no {what}{' holding ' + component if component else ''} to restore: "
                        "name one with backup_id, or run verify-helix-backup first")
    return max(pool, key=lambda m: (m.created_at, m.backup_id))


# --- strategies ---------------------------------------------------------------------------------------------


def choose_neo4j_strategy(edition: str, requested: str = "auto") -> Neo4jStrategy:
    """``auto``: Enterprise → ``online-backup``, Community → ``logical`` (online, no downtime).

    A named strategy is checked against the edition: ``online-backup`` needs Enterprise.
    """
    edition = edition.lower()
    if edition not in ("community", "enterprise"):
        raise ConfigError("neo4j.edition", f"unknown Neo4j edition {edition!r}")
    if requested == "auto":
        return "online-backup" if edition == "enterprise" else "logical"
    if requested not in ("logical", "dump", "online-backup"):
        raise ConfigError("neo4j_strategy", f"{requested!r}: expected auto, logical, dump or online-backup")
    if requested == "online-backup" and edition != "enterprise":
        raise ConfigError("neo4j_strategy", "online-backup (neo4j-admin database backup) needs Neo4j Enterprise; "
                                            "use logical (online) or dump (offline) on Community")
    return requested  # type: ignore[return-value]


FLOW_STRATEGIES = ("logical", "dump")
"""What backup-helix can run today (the Enterprise online backup is argv and output parsing only)."""


def backup_strategy_for(detected_edition: str, descriptor_edition: str, requested: str) -> tuple[str, str]:
    """``(strategy, why)`` of a backup-helix run: ``requested`` (the flow parameter, else the descriptor's
    ``backup.neo4j_strategy``) checked against the edition the running server reports. ``auto`` picks by that
    edition; Enterprise's ``online-backup`` is not runnable by the flows yet, so ``auto`` gives ``logical`` there,
    and says so."""
    edition = detected_edition.lower()
    note = "" if edition == descriptor_edition.lower() else (
        f"; the server reports {edition} while the descriptor says {descriptor_edition.lower()}")
    chosen = choose_neo4j_strategy(edition, requested)
    if requested == "auto" and chosen == "online-backup":
        return "logical", (f"auto on Neo4j {edition}: the online backup is not wired into the flows yet, "
                           f"so the logical export (online){note}")
    if chosen not in FLOW_STRATEGIES:
        raise ConfigError("neo4j_strategy", f"{chosen!r} cannot run in backup-helix yet; use one of "
                                            f"{', '.join(FLOW_STRATEGIES)}")
    how = "picked by edition" if requested == "auto" else "as requested"
    return chosen, f"{chosen} on Neo4j {edition} ({how}){note}"
