"""What ``/proc`` says about a local process: whether it runs, its start time, and which machine boot and pid
namespace a pid belongs to.

A pid alone is no identity (pids are reused); the pid plus the kernel's start time of the process is. Used by
the environment lease (``flows/lease.py``: is a recorded lease holder gone?) and by the test bed
(``testbed/procs.py``: is a pid file's process still that process?). Linux only; reads ``/proc`` and nothing
else (no Prefect, no subprocess, no network).
"""

from __future__ import annotations

import os
from pathlib import Path


def stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (the state first, then ppid, pgrp, …), or None
    when there is no such process. The command name is skipped whole (it may hold spaces and parentheses)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields or None


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie (or dead: states ``Z``, ``X``)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot): with the pid, a unique process identity.

    None when there is no such process, or it is a zombie (it has ended; only its exit status is left).
    Command lines are no identity: redis-server rewrites its own.
    """
    fields = stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X") or len(fields) <= 19:
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def boot_id() -> str | None:
    """This machine boot's id (``/proc/sys/kernel/random/boot_id``), or None when unreadable."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def pid_namespace() -> str | None:
    """This process's pid namespace (``pid:[4026531836]``), or None: pids compare only within one."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
