"""What the command line's live verbs print (pure): rows for the tables of ``helix-ops history``, ``status``,
``backups list|show`` and ``diff``, from the data ``tasks/history.py`` and ``drivers/change_log.py`` read.

Each function returns ``(headers, rows)`` of strings (or lines); the CLI draws them with rich, or prints the
data as JSON with ``--json``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from helix_ops.backup import Manifest

Table = tuple[tuple[str, ...], list[tuple[str, ...]]]


def _short(text: Any, width: int = 60) -> str:
    s = " ".join(str(text if text is not None else "").split())
    return s if len(s) <= width else s[: width - 1] + "…"


def change_summary(change: Mapping[str, Any]) -> str:
    """A record's ``change`` in one line: ``plan: 1 update`` / ``images: dashboard=1.4.2``."""
    parts = []
    for key, value in change.items():
        if isinstance(value, Mapping):
            inner = ", ".join(f"{v} {k}" if key == "plan" else f"{k}={v}" for k, v in value.items()
                              if not (key == "plan" and not v))
            parts.append(f"{key}: {inner or 'nothing'}")
        else:
            parts.append(f"{key}: {value}")
    return "; ".join(parts)


def approval_text(approval: Mapping[str, Any] | None) -> str:
    if not approval:
        return "-"
    verdict = "approved" if approval.get("approved") else "refused"
    return f"{verdict} by {approval.get('approver')}: {approval.get('reason')}"


def history_table(records: Iterable[Mapping[str, Any]]) -> Table:
    """One row per change record (newest first, as given)."""
    headers = ("at", "action", "result", "triggered by", "approval", "change", "run", "detail")
    rows = []
    for r in records:
        run = r.get("run") or {}
        run_text = run.get("flow_run_name") or run.get("flow_run_id") or "-"
        if run.get("run_elapsed_s") is not None:
            run_text += f" ({run['run_elapsed_s']:.0f} s)"
        rows.append((str(r.get("at", "")), str(r.get("action", "")), str(r.get("result", "")),
                     _short(r.get("triggered_by"), 40), _short(approval_text(r.get("approval")), 50),
                     _short(change_summary(r.get("change") or {}), 50), run_text, _short(r.get("detail"), 60)))
    return headers, rows


def verification_text(m: Manifest) -> str:
    v = m.verification
    if v is None:
        return "not verified"
    return f"{'verified' if v.ok else 'FAILED verification'} {v.at.isoformat(timespec='seconds')} by {v.by}"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def backup_row(m: Manifest) -> dict[str, Any]:
    """A backup as JSON data for ``backups list --json`` and ``status``."""
    return {"backup_id": m.backup_id, "created_at": m.created_at.isoformat(timespec="seconds"),
            "duration_s": m.duration_s, "components": list(m.components),
            "size": sum(o.size for o in m.objects), "encrypted": m.encrypted,
            "verified": bool(m.verification and m.verification.ok),
            "verification": m.verification.model_dump(mode="json") if m.verification else None,
            "safety_for": m.safety_for}


def backups_table(manifests: Iterable[Manifest]) -> Table:
    """One row per backup (newest first, as given)."""
    headers = ("backup id", "created", "components", "size", "encrypted", "verification", "note")
    rows = [(m.backup_id, m.created_at.isoformat(timespec="seconds"), ",".join(m.components),
             _size(sum(o.size for o in m.objects)), "yes" if m.encrypted else "no", verification_text(m),
             f"safety backup before restoring {m.safety_for}" if m.safety_for else "") for m in manifests]
    return headers, rows


def backup_lines(m: Manifest) -> list[str]:
    """``backups show``: the manifest for people."""
    lines = [f"backup {m.backup_id} of {m.project}/{m.environment}",
             f"created {m.created_at.isoformat(timespec='seconds')}, finished "
             f"{m.finished_at.isoformat(timespec='seconds')} ({m.duration_s:.1f} s) by {m.tool}",
             f"encrypted: {'yes, key ' + (m.key_fingerprint or '?') if m.encrypted else 'no'}",
             f"verification: {verification_text(m)}"]
    if m.verification:
        lines += [f"  {c}" for c in m.verification.checks]
    if m.safety_for:
        lines.append(f"safety backup taken before restoring {m.safety_for}")
    if m.neo4j:
        n = m.neo4j
        lines.append(f"neo4j: {n.strategy}, {n.nodes} nodes, {n.relationships} relationships, server "
                     f"{n.server_version}, writer paused: {'yes' if n.writer_paused else 'no'}")
        lines += [f"  warning: {w}" for w in n.warnings]
    if m.redis:
        lines.append(f"redis: {m.redis.strategy}, {m.redis.keys} keys, server {m.redis.server_version}")
    lines.append("objects:")
    lines += [f"  {o.name}: {o.component}/{o.kind}, {_size(o.size)} stored ({_size(o.raw_size)} raw), "
              f"sha256 {o.sha256[:16]}…, {o.compression}, {o.encryption}" for o in m.objects]
    return lines


def services_table(rows: Iterable[Mapping[str, Any]]) -> Table:
    headers = ("service", "image", "replicas", "health", "endpoint")
    return headers, [(str(r["service"]), str(r["image"]), str(r["replicas"]),
                      ("" if r.get("healthy") else "NOT HEALTHY: ") + _short(r["health"], 70), str(r["endpoint"]))
                     for r in rows]


def approvals_table(rows: Iterable[Mapping[str, Any]]) -> Table:
    headers = ("flow run", "flow", "state", "since", "asks", "times out")
    return headers, [(f"{r['flow_run_name']} ({r['flow_run_id']})", r["flow"], r["state"], r["since"],
                      "yes" if r["asks"] else "no", r.get("timeout_at") or "-") for r in rows]


def diff_table(plan: Mapping[str, Any]) -> Table:
    """The changes of a plan (``Plan.to_dict()``), no-ops left out: one row per changed field."""
    headers = ("action", "object", "reason", "field", "live", "wanted")
    rows = []
    for c in plan["changes"]:
        if c["action"] == "noop":
            continue
        diffs = c.get("diff") or [{"path": "", "old": "", "new": ""}]
        for i, d in enumerate(diffs):
            first = i == 0
            rows.append((c["action"] if first else "", c["identity"] if first else "",
                         _short(c.get("reason"), 50) if first else "", str(d.get("path", "")),
                         _short(d.get("old"), 40), _short(d.get("new"), 40)))
    return headers, rows
