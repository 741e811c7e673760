"""Change records: every change to an environment, kept in three places.

* the environment's audit log on the worker (JSON lines, mode 0600) under ``HELIX_OPS_AUDIT_DIR`` (default
  ``.helix-ops/audit``);
* the environment's **backup store** (``backup.storage``: a folder or S3), one object per record under
  ``changes/<env>/`` (``drivers/change_log.py``): the durable history, which outlives the worker (a Kubernetes
  flow-run pod, a deleted home directory) and which ``helix-ops history --env NAME`` reads;
* the ``changes-<env>`` markdown artifact of the run.

The copy into the store is best effort: a change never fails because its record could not be copied, but the
run's log says so in a warning naming the store and the reason (and the record stays in the local log and the
artifact). It is bounded in time (:data:`STORE_DEADLINE_S`), so an unreachable S3 endpoint cannot hold the gate.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from helix_ops.changes import AuditRecord
from helix_ops.descriptor import Descriptor

STORE_DEADLINE_S = 15.0
"""How long the copy into the backup store may take before the run goes on without it (with a warning)."""


def audit_log_path(environment: str) -> Path:
    return Path(os.environ.get("HELIX_OPS_AUDIT_DIR", ".helix-ops/audit")) / f"{environment}.jsonl"


def stored_record(record: AuditRecord, now: datetime | None = None) -> dict[str, Any]:
    """The record as kept in the store: the audit record's fields plus the run that wrote it (id, name, flow,
    deployment) and how long that run had been going (``run_elapsed_s``)."""
    from prefect.context import FlowRunContext
    from prefect.runtime import flow_run

    now = now or datetime.now(timezone.utc)
    run: dict[str, Any] = {"flow_run_id": flow_run.get_id(), "flow_run_name": None, "flow_name": None,
                           "deployment_id": None, "run_elapsed_s": None}
    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None:
        fr = ctx.flow_run
        run.update(flow_run_name=fr.name, flow_name=getattr(ctx.flow, "name", None),
                   deployment_id=str(fr.deployment_id) if fr.deployment_id else None)
        if fr.start_time is not None:
            run["run_elapsed_s"] = round(max((now - fr.start_time).total_seconds(), 0.0), 3)
    return {**record.model_dump(mode="json"), "run": run, "recorded_at": now.isoformat(timespec="microseconds")}


def _descriptor_of_run(environment: str) -> tuple[Descriptor | None, str | None, str]:
    """The descriptor (and ``storage_path``) of the flow run that records, from its parameters ``env``,
    ``descriptor`` and ``storage_path`` (every helix-ops flow has the first two); None and why when unknown."""
    from prefect.runtime import flow_run

    from helix_ops.descriptor import descriptor_file, load_descriptor

    params = dict(flow_run.parameters or {})
    try:
        desc = load_descriptor(descriptor_file(params.get("env") or environment, params.get("descriptor")))
    except Exception as exc:  # noqa: BLE001 - reported by the caller as the reason the copy was skipped
        return None, None, f"the run's descriptor does not load ({type(exc).__name__}: {exc})"
    if desc.environment != environment:
        return None, None, f"the run's descriptor is {desc.environment!r}, not {environment!r}"
    return desc, params.get("storage_path") or None, ""


def copy_to_store(doc: dict[str, Any], environment: str, descriptor: Descriptor | None = None,
                  storage_path: str | None = None, deadline_s: float = STORE_DEADLINE_S) -> str:
    """Write ``doc`` into the environment's backup store (see the module); returns where. Raises on failure,
    :class:`TimeoutError` after ``deadline_s`` (the write goes on in a daemon thread)."""
    from drivers.change_log import ChangeLog
    from tasks.history import open_history_store

    if descriptor is None:
        descriptor, run_storage, why = _descriptor_of_run(environment)
        if descriptor is None:
            raise LookupError(why)
        storage_path = storage_path or run_storage
    outcome: dict[str, Any] = {}

    def write() -> None:
        try:
            outcome["where"] = ChangeLog(open_history_store(descriptor, storage_path)).append(environment, doc)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc

    worker = threading.Thread(target=write, name="change-record-copy", daemon=True)
    worker.start()
    worker.join(deadline_s)
    if worker.is_alive():
        raise TimeoutError(f"the backup store did not answer within {deadline_s:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["where"]


@task(name="record-change", retries=2, retry_delay_seconds=1, timeout_seconds=60, cache_policy=NO_CACHE)
def record_change(record: AuditRecord, descriptor: Descriptor | None = None,
                  storage_path: str | None = None) -> str:
    """Append ``record`` to the audit log, copy it into the backup store (best effort) and publish it; returns
    the log's path. ``descriptor`` / ``storage_path`` name the store; without them, the run's parameters do."""
    logger = get_run_logger()
    path = audit_log_path(record.environment)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(record.line() + "\n")
    try:
        where = copy_to_store(stored_record(record), record.environment, descriptor, storage_path)
        logger.info("change record of %s kept in the backup store: %s", record.environment, where)
    except Exception as exc:  # noqa: BLE001 - best effort by design: the change itself has happened
        logger.warning("change record of %s (%s, %s) NOT copied to the backup store: %s: %s; it is only in %s "
                       "and this run's changes-%s artifact, and `helix-ops history` will not list it",
                       record.environment, record.action, record.result, type(exc).__name__, exc, path,
                       record.environment)
    create_markdown_artifact(record.markdown(), key=f"changes-{record.environment}",
                             description=f"{record.action} of {record.environment}: {record.result}")
    if record.result == "rolled-back":  # the notifications' rollback automation listens for this event
        from blocks.notifications import emit_rolled_back

        emit_rolled_back(record.environment, record.action, record.detail, record.triggered_by)
    return str(path)
