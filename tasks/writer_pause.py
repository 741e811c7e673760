"""The writer window (the writers, mcp-graph, out of service for a consistent backup or a restore) and a durable
record of it, so a run that is killed while the writers are stopped cannot leave them stopped for good.

:func:`writer_window` is the one place that pauses and resumes the writers (``take_backup`` for the Neo4j
export, restore-helix for its safety backup and restore), on any :class:`drivers.target.Target`: on the engine
their containers are stopped and started again; on Kubernetes their workload is scaled to 0 and back. It
resumes them in a ``finally``, but a SIGKILL (OOM, node loss, a cancelled worker) skips the ``finally``. Before
pausing anything it therefore records what it is about to pause (``target.pause_record``) in a Prefect Variable
(``helix-writer-paused-<env>``) and deletes the record only after they run and answer their health probe
again. The next backup-helix or restore-helix run of the environment (inside the environment lease, before
anything else) calls :func:`resume_paused_writers`: it resumes what the record names, logs a warning, and
deletes the record.

The record holds replica names, replica counts, the flow run and a time: no secret.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.variables import Variable

from drivers.target import Target, merge_records
from helix_ops.descriptor import Descriptor


def pause_variable(environment: str) -> str:
    """The Prefect Variable that records ``environment``'s writer pause (``helix-writer-paused-<env>``)."""
    return f"helix-writer-paused-{environment}".lower()


def read_pause(environment: str) -> dict[str, Any] | None:
    """The recorded pause of ``environment`` (``{containers, services, owner, at}``), or None."""
    value = Variable.get(pause_variable(environment), default=None)
    return value if isinstance(value, dict) else None


def record_pause(environment: str, records: Mapping[str, Mapping[str, Any]], owner: str) -> None:
    """Record (durably, before they are paused) the writers of ``environment`` a run pauses: service → pause
    record; ``containers`` lists every replica's name."""
    Variable.set(pause_variable(environment),
                 {"containers": _names(records), "services": {s: dict(r) for s, r in records.items()},
                  "owner": owner,
                  "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
                 overwrite=True)


def clear_pause(environment: str) -> None:
    """Delete the record (the writers run again)."""
    Variable.unset(pause_variable(environment))


@task(name="pause-writers", retries=1, retry_delay_seconds=2, timeout_seconds=300, cache_policy=NO_CACHE)
def pause_writers(target: Target, services: list[str]) -> dict[str, dict[str, Any]]:
    """Take every replica of ``services`` (the writers, mcp-graph) out of service; service → pause record
    (exactly what :func:`resume_writers` brings back)."""
    records = {service: target.pause(service) for service in services}
    get_run_logger().info("writers paused: %s", ", ".join(_names(records)) or "none was running")
    return records


@task(name="resume-writers", retries=2, retry_delay_seconds=[2, 5], timeout_seconds=600, cache_policy=NO_CACHE)
def resume_writers(target: Target, records: Mapping[str, Mapping[str, Any]], descriptor: Descriptor,
                   health_deadline_s: float = 180) -> list[str]:
    """Bring back what ``records`` paused and wait until each answers its health probe; one line each."""
    lines: list[str] = []
    for service, record in records.items():
        lines += target.resume(service, record, descriptor, health_deadline_s)
    if lines:
        get_run_logger().info("writers running again: %s", "; ".join(lines))
    return lines


def _names(records: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return sorted({n for r in records.values() for n in (r.get("replicas") or r.get("containers") or [])})


@contextmanager
def writer_window(target: Target, descriptor: Descriptor, services: list[str],
                  pauser: str) -> Iterator[dict[str, Any]]:
    """Pause the replicas of ``services`` (the writers) for the body; resume them afterwards, also when the body
    or the pause itself fails. Call it while holding the environment lease.

    In order: what is about to be paused is recorded (:func:`record_pause`, durably, BEFORE the pause, naming
    ``pauser``); it is paused (a replica that started in between is recorded too); the body runs; then, in a
    ``finally``, everything paused (also by a pause that failed half-way) is resumed and health-checked again,
    and only once they run and answer again is the record deleted (a failure to delete it is a warning: the
    next run finds them running and drops the stale record). A failure to resume them raises and leaves the
    record, so the next run resumes them. The window's length is logged.

    Yields the window, ``{"paused": True, "containers": [replicas paused], "seconds": 0.0, "started": iso
    time}``; ``seconds`` is filled in when the window closes.
    Example: ``with writer_window(target, desc, ["mcp-graph"], "helix-ops backup-helix flow-run/42") as w: …``
    """
    logger = get_run_logger()
    window: dict[str, Any] = {"paused": True, "containers": [], "seconds": 0.0}
    records: dict[str, dict[str, Any]] = {}  # what the finally resumes: also what a pause that failed half-way took
    t_stop = time.monotonic()
    try:
        records = {service: target.pause_record(service) for service in services}
        record_pause(target.environment, records, pauser)
        paused = pause_writers(target, services)
        merged = {s: merge_records(records.get(s, {}), paused.get(s, {})) for s in services}
        if merged != records:  # a replica started in between: record it too
            record_pause(target.environment, merged, pauser)
        records = merged
        window.update(containers=_names(paused), started=dt.datetime.now(dt.UTC).isoformat())
        yield window
    finally:
        try:
            resume_writers(target, records, descriptor)
            try:  # only once they run and answer again: else the next run resumes them
                clear_pause(target.environment)
            except Exception as exc:  # noqa: BLE001 - the next run finds them running: a stale record
                logger.warning("could not delete the writer-pause record: %s", exc)
        finally:
            window["seconds"] = round(time.monotonic() - t_stop, 2)
            logger.info("writer window: %s paused for %.1fs", ", ".join(window["containers"]) or "nothing",
                        window["seconds"])


def resume_paused_writers(target: Target, descriptor: Descriptor, services: list[str]) -> list[str]:
    """Resume and health-check the writers an earlier run recorded as paused and left out of service.

    Call it while holding the environment lease (no other run can be inside its own writer window then).
    Replicas that no longer exist (replaced by a deploy since) are skipped; running ones are left alone.
    Returns one line per replica resumed. The record is deleted once they answer their health probe; if that
    fails the record stays and this raises, so the next run tries again.
    """
    record = read_pause(target.environment)
    if record is None:
        return []
    logger = get_run_logger()
    records = record.get("services") or {services[0]: {"replicas": record.get("containers") or []}}
    lines = resume_writers(target, {s: r for s, r in records.items() if s in services}, descriptor)
    if lines:
        logger.warning("writer pause of an earlier run (%s, at %s) was never ended (the run was killed?): "
                       "resumed %s before this run", record.get("owner", "?"), record.get("at", "?"),
                       "; ".join(lines))
    else:
        logger.warning("stale writer-pause record of an earlier run (%s, at %s): %s; nothing to resume",
                       record.get("owner", "?"), record.get("at", "?"),
                       ", ".join(record.get("containers") or []) or "no replica")
    clear_pause(target.environment)
    return lines
