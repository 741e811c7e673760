"""The writer window (the writers, mcp-graph, stopped for a consistent backup or a restore) and a durable
record of it, so a run that is killed while the writers are stopped cannot leave them stopped for good.

:func:`writer_window` is the one place that stops and restarts the writers (``take_backup`` for the Neo4j
export, restore-helix for its safety backup and restore): it starts them again in a ``finally``, but a SIGKILL
(OOM, node loss, a cancelled worker) skips the ``finally``. Before stopping anything it therefore records the
containers it is about to stop in a Prefect Variable (``helix-writer-paused-<env>``) and deletes the record
only after they run and answer their health probe again. The next backup-helix or restore-helix run of the
environment (inside the environment lease, before anything else) calls :func:`resume_paused_writers`: it
starts and health-checks the recorded containers that still exist and are not running, logs a warning, and
deletes the record.

The record holds container names, the flow run and a time: no secret.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger
from prefect.variables import Variable

from helix_ops.descriptor import Descriptor
from tasks.engine import EngineTarget


def pause_variable(environment: str) -> str:
    """The Prefect Variable that records ``environment``'s writer pause (``helix-writer-paused-<env>``)."""
    return f"helix-writer-paused-{environment}".lower()


def read_pause(environment: str) -> dict[str, Any] | None:
    """The recorded pause of ``environment`` (``{containers, owner, at}``), or None."""
    value = Variable.get(pause_variable(environment), default=None)
    return value if isinstance(value, dict) else None


def record_pause(environment: str, containers: list[str], owner: str) -> None:
    """Record (durably, before they are stopped) the writer containers of ``environment`` a run stops."""
    Variable.set(pause_variable(environment),
                 {"containers": sorted(set(containers)), "owner": owner,
                  "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
                 overwrite=True)


def clear_pause(environment: str) -> None:
    """Delete the record (the writers run again)."""
    Variable.unset(pause_variable(environment))


def running_writers(target: EngineTarget, services: list[str]) -> list[str]:
    """Names of the running replicas of ``services`` (what ``stop_writers`` is about to stop)."""
    driver = target.driver()
    return sorted(c.name for s in services for c in driver.containers(s) if c.status == "running")


@contextmanager
def writer_window(target: EngineTarget, descriptor: Descriptor, services: list[str],
                  pauser: str) -> Iterator[dict[str, Any]]:
    """Stop the running replicas of ``services`` (the writers) for the body; start them again afterwards, also
    when the body or the stop itself fails. Call it while holding the environment lease.

    In order: the replicas about to stop are recorded (:func:`record_pause`, durably, BEFORE the stop, naming
    ``pauser``); they are stopped (a replica that started in between is recorded too); the body runs; then, in a
    ``finally``, everything stopped (also by a stop that failed half-way) is started and health-checked again,
    and only once they run and answer again is the record deleted (a failure to delete it is a warning: the
    next run finds them running and drops the stale record). A failure to start them raises and leaves the
    record, so the next run starts them. The window's length is logged.

    Yields the window, ``{"paused": True, "containers": [names stopped], "seconds": 0.0, "started": iso time}``;
    ``seconds`` is filled in when the window closes.
    Example: ``with writer_window(target, desc, ["mcp-graph"], "helix-ops backup-helix flow-run/42") as w: …``
    """
    from tasks.backup import start_writers, stop_writers

    logger = get_run_logger()
    window: dict[str, Any] = {"paused": True, "containers": [], "seconds": 0.0}
    stopped: list[str] = []
    to_restart: list[str] = []  # what the finally starts: also what a stop that failed half-way stopped
    t_stop = time.monotonic()
    try:
        about_to_stop = running_writers(target, services)
        record_pause(target.environment, about_to_stop, pauser)
        to_restart = about_to_stop
        stopped = stop_writers(target, services)
        if set(stopped) - set(about_to_stop):  # a replica started in between: record it too
            record_pause(target.environment, about_to_stop + stopped, pauser)
        to_restart = sorted(set(about_to_stop) | set(stopped))
        window.update(containers=stopped, started=dt.datetime.now(dt.UTC).isoformat())
        yield window
    finally:
        try:
            start_writers(target, to_restart, descriptor)
            try:  # only once they run and answer again: else the next run starts them
                clear_pause(target.environment)
            except Exception as exc:  # noqa: BLE001 - the next run finds them running: a stale record
                logger.warning("could not delete the writer-pause record: %s", exc)
        finally:
            window["seconds"] = round(time.monotonic() - t_stop, 2)
            logger.info("writer window: %s stopped for %.1fs", ", ".join(stopped) or "nothing", window["seconds"])


def resume_paused_writers(target: EngineTarget, descriptor: Descriptor, services: list[str]) -> list[str]:
    """Start and health-check the writer containers an earlier run recorded as paused and left stopped.

    Call it while holding the environment lease (no other run can be inside its own writer window then).
    Containers that no longer exist (replaced by a deploy since) are skipped; running ones are left alone.
    Returns the names started. The record is deleted once they answer their health probe; if that fails the
    record stays and this raises, so the next run tries again.
    """
    from tasks.backup import start_writers

    record = read_pause(target.environment)
    if record is None:
        return []
    logger = get_run_logger()
    recorded = set(record.get("containers") or [])
    driver = target.driver()
    present = {c.name: c.status for s in services for c in driver.containers(s)}
    stopped = sorted(n for n in recorded if n in present and present[n] != "running")
    gone = sorted(recorded - set(present))
    if stopped:
        logger.warning("writer pause of an earlier run (%s, at %s) was never ended (the run was killed?): "
                       "%s still stopped; starting %s again before this backup", record.get("owner", "?"),
                       record.get("at", "?"), ", ".join(stopped), "it" if len(stopped) == 1 else "them")
        start_writers(target, stopped, descriptor)
    else:
        logger.warning("stale writer-pause record of an earlier run (%s, at %s): %s; nothing to start",
                       record.get("owner", "?"), record.get("at", "?"),
                       ", ".join(sorted(recorded)) or "no container")
    if gone:
        logger.warning("recorded writer containers no longer exist (replaced since?): %s", ", ".join(gone))
    clear_pause(target.environment)
    return stopped
