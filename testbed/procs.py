"""Local server processes for the test bed: start with logs and a pid file, wait with a deadline
(:func:`helix_ops.wait.wait_until`, re-exported here), stop the group.

Every process is started in its own session (process group), so stopping it also stops what it forked
(Neo4j's launcher forks the server JVM). Pid files record the process start time, so a stale pid file from
a crashed run never makes us kill an unrelated process that happens to reuse the pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from helix_ops.errors import CommandFailed, WaitTimeout  # noqa: F401 - WaitTimeout: what wait_until raises
from helix_ops.procinfo import pid_alive, start_time, stat_fields  # noqa: F401 - pid_alive, start_time: API here too
from helix_ops.wait import Deadline, wait_until  # noqa: F401 - wait_until: the test bed's wait is the core one


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int | str = "self") -> set[int]:
    """Child pids of ``pid`` (this process by default; every thread's children: subprocess may start them from
    any). Empty when ``pid`` has exited."""
    kids: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids |= {int(x) for x in f.read().split()}
        except OSError:  # a thread that ended meanwhile
            continue
    return kids


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Proc:
    """A started server process: its name, pid, log file and pid file."""

    name: str
    pid: int
    log: Path
    pidfile: Path
    popen: subprocess.Popen | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_alive(self.pid)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the process group, wait up to ``grace_s``, then SIGKILL it."""
        stop_group(self.pid, grace_s)
        if self.popen is not None:
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.pidfile.unlink(missing_ok=True)


def stop_group(pid: int, grace_s: float = 20.0) -> None:
    """Stop the process group led by ``pid``: TERM, a bounded wait, then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        deadline = Deadline(grace_s if sig == signal.SIGTERM else 5)
        while True:
            if not pid_alive(pid) and not _group_alive(pid):
                return
            if not deadline.pause(0.1):
                break


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields is None or len(fields) < 3:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def wait_while_alive(what: str, check, deadline_s: float, processes: dict[str, Proc], log, where: Path) -> None:
    """:func:`wait_until` ``check`` holds, failing at once (with its log's tail) when one of ``processes`` exits;
    on a failure, ``log`` says where the logs are."""
    def guarded():
        for name, proc in processes.items():
            if not proc.alive():
                raise RuntimeError(f"{name} exited; log tail:\n{proc.log_tail()}")
        return check()
    try:
        wait_until(what, guarded, deadline_s, interval_s=0.5)
    except Exception:
        log(f"{what} failed; see the logs under {where}")
        raise


def start(name: str, argv: Sequence[str], workdir: Path, env: dict[str, str] | None = None) -> Proc:
    """Start ``argv`` in its own process group, logging to ``workdir/<name>.log``, with a pid file."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    pidfile = workdir / f"{name}.pid"
    full_env = {**os.environ, **(env or {})}
    with open(log, "ab") as out:
        popen = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 cwd=workdir, env=full_env, start_new_session=True)
    pidfile.write_text(json.dumps({"pid": popen.pid, "start_time": start_time(popen.pid), "argv": list(argv)}))
    return Proc(name=name, pid=popen.pid, log=log, pidfile=pidfile, popen=popen)


def reap_stale(pidfile: Path) -> bool:
    """Stop the process a pid file names, if it is still that process (same start time); remove the file.

    Returns True when a live process was stopped.
    """
    try:
        info = json.loads(pidfile.read_text())
    except (OSError, ValueError):
        pidfile.unlink(missing_ok=True)
        return False
    if not isinstance(info, dict) or "pid" not in info:  # not one of ours (a bare pid another tool wrote)
        return False
    pid = int(info["pid"])
    stopped = False
    if pid_alive(pid) and start_time(pid) == info.get("start_time"):
        stop_group(pid, grace_s=10)
        stopped = True
    pidfile.unlink(missing_ok=True)
    return stopped


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout_s: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (argv list, never a shell); raise CommandFailed on a non-zero exit."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(list(argv), env=full_env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout_s, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise CommandFailed(list(argv), proc.returncode, ((proc.stdout or "") + (proc.stderr or ""))[-20000:])
    return proc
