"""Worker processes for CPU-bound work on a stream (the logical export, and its conversion to CSV).

Each worker is a plain ``python -c`` running one function of this project, on pipes: stdin in, stdout out,
stderr to a temp file (a pipe nobody reads would hang a worker that logged 64 KiB). Not multiprocessing: its
spawn re-imports the caller's ``__main__`` (a Prefect engine, pytest) in each child, and a fork of a process
with Prefect's threads may inherit a held lock. A worker's loop ends at the end of its stdin, so a parent that
dies (even by SIGKILL) leaves no worker behind. Anything secret goes over stdin, never argv.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

_ROOT = str(Path(__file__).resolve().parents[1])


class PyWorkers:
    """``n`` processes each running ``module.function()``; ``first`` (one line each, or one line for all) is
    written to their stdin before anything else."""

    def __init__(self, n: int, module: str, function: str, first: bytes | list[bytes]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}
        # glibc raises its mmap threshold to the largest block freed, so large buffers end up on the heap, which
        # fragments and keeps them; a fixed threshold returns them (3 MiB less per export worker at 100k)
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
        argv = [sys.executable, "-c", f"from {module} import {function}; {function}()"]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.errs: list[IO[bytes]] = []
        try:
            for i in range(n):
                self.errs.append(tempfile.TemporaryFile())
                proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errs[-1],
                                        env=env)
                self.procs.append(proc)
                _widen(proc.stdin)
                proc.stdin.write(first[i] if isinstance(first, list) else first)
                proc.stdin.flush()
        except BaseException:
            self.close()
            raise

    def stderr_tail(self, i: int, chars: int = 2000) -> str:
        err = self.errs[i]
        err.seek(0)
        return err.read().decode(errors="replace").strip()[-chars:]

    def end_input(self) -> None:
        """Close every worker's stdin (its loop ends); a dead worker's pipe may already be broken."""
        for proc in self.procs:
            _close(proc.stdin)

    def close(self, grace_s: float = 10) -> None:
        """End the workers: stdin and stdout closed (one still writing gets a broken pipe), killed if still
        running after ``grace_s``."""
        for proc in self.procs:
            _close(proc.stdin)
            _close(proc.stdout)
        for proc in self.procs:
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for err in self.errs:
            err.close()


PIPE_BYTES = 1 << 20
"""A worker's stdin pipe is widened to this (Linux's default ceiling; the default is 64 KiB)."""


def _widen(pipe: Any) -> None:
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError):  # not Linux, or above /proc/sys/fs/pipe-max-size: the default pipe works
        pass


def _close(pipe: Any) -> None:
    try:
        pipe.close()
    except OSError:  # a dead worker's stdin: the flush finds the pipe broken
        pass
