"""Audit records: every change to an environment, published as a Prefect artifact and appended to the
environment's audit log (JSON lines, mode 0600) under ``HELIX_OPS_AUDIT_DIR`` (default ``.helix-ops/audit``)."""

from __future__ import annotations

import os
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from helix_ops.changes import AuditRecord


def audit_log_path(environment: str) -> Path:
    return Path(os.environ.get("HELIX_OPS_AUDIT_DIR", ".helix-ops/audit")) / f"{environment}.jsonl"


@task(name="record-change", retries=2, retry_delay_seconds=1, timeout_seconds=30, cache_policy=NO_CACHE)
def record_change(record: AuditRecord) -> str:
    """Append ``record`` to the audit log and publish it; returns the log's path."""
    path = audit_log_path(record.environment)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(record.line() + "\n")
    create_markdown_artifact(record.markdown(), key=f"changes-{record.environment}",
                             description=f"{record.action} of {record.environment}: {record.result}")
    return str(path)
