"""The environment lease: runs that change one environment never overlap; a killed holder's lease is recovered.

Built on Prefect's global concurrency limits with leases: a limit of 1 per environment
(``helix-env-<name>``); the holder's lease is renewed while it runs and expires ``ttl_s`` after a crashed
process stops renewing it, so a crash cannot hold an environment forever. Prefect's server frees it with its
repossessor, ``lease_ttl`` (>= 60 s) plus up to 15 s after the holder stopped renewing; an ephemeral server
(``prefect_test_harness``, a local ``prefect`` without ``server start``) runs no repossessor, so there the slot
would never be freed and the next run would wait its whole ``wait_s`` and fail with ``LockHeld``.

So :func:`environment_lease` also recovers from a killed holder, for every flow that takes it: the holder
records who it is in a Prefect Variable (``helix-lease-holder-<env>``: flow run id, host, boot id, pid
namespace, pid and the pid's start time, and the lease id), and deletes the record when it releases the lease.
A later run that finds the slot taken reads the record and, when the holder is **provably gone**, releases
exactly that holder's lease (by lease id, so a newer holder's slot is never touched and the repossessor will
not decrement it twice) and logs a warning:

* the holder ran on this machine in this pid namespace and its process is gone (or its pid is now another
  process: the start time differs), whatever its flow run's state; while that process lives the holder is
  waited for (within ``wait_s``) even when its run is already final: a Cancelled or Crashed run's process may
  still be cleaning up (restarting the writer it stopped); it is released once the process ends, or
* the holder's process cannot be checked here (another machine, boot or pid namespace) and its flow run is in a
  final state (a worker marks a killed flow process ``Crashed``): the final state alone decides, so a cleanup
  still running on that machine is not waited for.

A holder on another machine that is not provably gone is waited for as before (its lease expires on its own).
The record holds no secret. :func:`break_lease` frees the slot by hand (a stuck holder that is alive).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from prefect import get_client, get_run_logger
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run
from prefect.variables import Variable

from helix_ops import procinfo
from helix_ops.errors import LockHeld
from helix_ops.wait import Deadline


def lease_name(environment: str) -> str:
    return f"helix-env-{environment}"


def holder_variable(environment: str) -> str:
    """The Prefect Variable that records who holds ``environment``'s lease (``helix-lease-holder-<env>``)."""
    return f"helix-lease-holder-{environment}".lower()


def process_identity() -> dict[str, Any]:
    """Who this process is, in a way another process can check: host, boot id, pid namespace, pid, start."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot_id": procinfo.boot_id(), "pid_ns": procinfo.pid_namespace(),
            "pid": pid, "pid_start": procinfo.start_time(pid)}


def _local_pid(record: dict[str, Any]) -> int | None:
    """The recorded holder's pid when its process can be checked here (this machine, boot and pid namespace, and
    not this process), else None."""
    me = process_identity()
    if (record.get("host"), record.get("boot_id"), record.get("pid_ns")) != (me["host"], me["boot_id"],
                                                                               me["pid_ns"]) or not me["boot_id"]:
        return None
    pid = record.get("pid")
    return pid if isinstance(pid, int) and pid != me["pid"] else None


def holder_gone(record: dict[str, Any]) -> str | None:
    """Why the recorded holder is provably gone, or None when it may still run.

    A holder whose process can be checked here is gone when that process is, and not before, even when its flow
    run is final (a Cancelled run's process may still be cleaning up). Otherwise (another machine, boot or pid
    namespace) it is gone when its flow run is final: its process cannot be checked, so a cleanup still running
    there is not waited for.
    """
    pid = _local_pid(record)
    if pid is not None:
        start = procinfo.start_time(pid)
        if start is None:
            return f"its process {pid} on {record.get('host')} is gone"
        if str(start) != str(record.get("pid_start")):  # compared as text: records written before held a string
            return f"its process {pid} on {record.get('host')} is gone (the pid is another process now)"
        return None
    run_id = record.get("flow_run_id")
    if run_id:
        try:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(uuid.UUID(run_id)).state
            if state is not None and state.is_final():
                return f"its flow run {run_id} is {state.name}"
        except Exception:  # noqa: BLE001 - no such run (another server?) or no API: cannot tell
            pass
    return None  # cannot tell; its lease expires on its own


def _active_slots(environment: str) -> int:
    with get_client(sync_client=True) as client:
        try:
            return int(client.read_global_concurrency_limit_by_name(lease_name(environment)).active_slots)
        except Exception:  # noqa: BLE001 - no limit yet: nobody holds it
            return 0


def release_dead_holder(environment: str, wait_s: float = 0) -> str | None:
    """If ``environment``'s lease is held by a recorded holder that is provably gone, release that holder's
    lease (by its lease id) and delete the record; returns the reason, or None when nothing was released.

    A holder whose process runs on this machine is waited for up to ``wait_s`` (until it frees the lease or its
    process ends): one killed meanwhile is released then, a Cancelled one only once its cleanup has ended.
    """
    deadline = Deadline(wait_s)
    while True:
        record = Variable.get(holder_variable(environment), default=None)
        if not isinstance(record, dict):
            return None
        if _active_slots(environment) == 0:
            _unset_if(environment, record.get("nonce"))  # released without deleting its record: stale
            return None
        reason = holder_gone(record)
        # Its process lives here: look again every second until it frees the lease, ends, or the deadline.
        if reason is not None or _local_pid(record) is None or not deadline.pause(1):
            break
    lease_id = record.get("lease_id")
    if reason is None or not lease_id:
        return None
    with get_client(sync_client=True) as client:
        client.release_concurrency_slots_with_lease(uuid.UUID(lease_id))  # idempotent; only that lease
    _unset_if(environment, record.get("nonce"))
    return (f"released the lease of {environment} held by {record.get('owner', '?')} since "
            f"{record.get('at', '?')}: {reason}")


def _unset_if(environment: str, nonce: str | None) -> None:
    """Delete the holder record if it is still the one with ``nonce`` (not a newer holder's)."""
    current = Variable.get(holder_variable(environment), default=None)
    if isinstance(current, dict) and current.get("nonce") == nonce:
        Variable.unset(holder_variable(environment))


def _current_lease_id() -> str | None:
    """The id of the lease just taken (Prefect records it on the run's ConcurrencyContext for cleanup), or
    None if this Prefect does not expose it."""
    try:
        from prefect.concurrency.context import ConcurrencyContext

        ctx = ConcurrencyContext.get()
        ids = list(getattr(ctx, "cleanup_lease_ids", []) or []) if ctx is not None else []
    except Exception:  # noqa: BLE001 - private detail of Prefect; without it the record only helps humans
        return None
    return str(ids[-1]) if ids else None


def _logger() -> Any:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run
        return logging.getLogger(__name__)


@contextmanager
def environment_lease(environment: str, owner: str, ttl_s: float = 120, wait_s: float = 1800) -> Iterator[None]:
    """Hold ``environment``'s lease for the body; wait up to ``wait_s`` for another holder to finish.

    First releases the lease of a recorded holder that is provably gone (killed: see the module docstring), with
    a warning; while held, records this holder for the next run. Raises LockHeld (naming the environment and
    this run) when the lease is not free within ``wait_s``; an exception from the body (a TimeoutError too)
    propagates unchanged, and the lease is released.
    Example: ``with environment_lease("prod", "flow-run/1234", wait_s=600): ...``.
    """
    logger = _logger()
    name = lease_name(environment)
    deadline = Deadline(wait_s)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, limit=1)
    released = release_dead_holder(environment, wait_s=wait_s)
    if released:
        logger.warning("%s (the run was killed?)", released)
    run_id = flow_run.get_id()
    holder = ConcurrencyLeaseHolder(type="flow_run", id=uuid.UUID(str(run_id)) if run_id else uuid.uuid4())
    with ExitStack() as held:
        try:  # at least one attempt, even when waiting for a local holder used up wait_s
            held.enter_context(concurrency(name, occupy=1, timeout_seconds=max(deadline.remaining(), 1),
                                           lease_duration=max(ttl_s, 60), strict=True, holder=holder))
        except TimeoutError as exc:  # only acquiring: the body's own TimeoutError is not LockHeld
            raise LockHeld(environment, f"another run (this is {owner})",
                           f"its lease ends (waited {wait_s:.0f}s)") from exc
        with _holder_recorded(environment, owner, logger):
            yield


@contextmanager
def _holder_recorded(environment: str, owner: str, logger: Any) -> Iterator[None]:
    """Record this process as ``environment``'s lease holder for the body (a recovery aid, never a condition)."""
    nonce = uuid.uuid4().hex
    try:
        Variable.set(holder_variable(environment),
                     {**process_identity(), "owner": owner, "flow_run_id": str(flow_run.get_id() or "") or None,
                      "lease_id": _current_lease_id(), "nonce": nonce,
                      "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}, overwrite=True)
    except Exception as exc:  # noqa: BLE001 - the record is a recovery aid, not a condition of the lease
        logger.warning("could not record the lease holder of %s: %s", environment, exc)
    try:
        yield
    finally:
        try:
            _unset_if(environment, nonce)
        except Exception as exc:  # noqa: BLE001 - a stale record is found stale by the next run
            logger.warning("could not delete the lease-holder record of %s: %s", environment, exc)


def break_lease(environment: str) -> int:
    """Free ``environment``'s lease held by a crashed or stuck run; returns how many slots were taken."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    name = lease_name(environment)
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except Exception:  # noqa: BLE001 - no limit yet: nothing to break
            return 0
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
        return int(limit.active_slots)
