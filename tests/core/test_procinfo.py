"""``helix_ops.procinfo``: what /proc says about a process (the lease's and the test bed's one reader)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from helix_ops import procinfo


def test_this_process_runs_and_has_a_start_time():
    assert procinfo.pid_alive(os.getpid())
    start = procinfo.start_time(os.getpid())
    assert isinstance(start, int) and start > 0
    assert procinfo.start_time(os.getpid()) == start  # an identity: stable
    fields = procinfo.stat_fields(os.getpid())
    assert fields is not None and int(fields[1]) == os.getppid()


def test_a_command_name_with_spaces_and_parentheses_is_skipped_whole(tmp_path):
    odd = tmp_path / "x) y (z"
    odd.symlink_to("/bin/sleep")  # the kernel's command name is the executed file's name
    child = subprocess.Popen([str(odd), "30"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "x) y" not in open(f"/proc/{child.pid}/stat").read():
            time.sleep(0.02)
        fields = procinfo.stat_fields(child.pid)
        # the fields after the name line up: a live state letter (D: a fresh exec still faulting its pages in on
        # a loaded machine, seen in CI) and this process as the parent
        assert fields is not None and fields[0] in ("S", "R", "D") and int(fields[1]) == os.getpid()
        assert isinstance(procinfo.start_time(child.pid), int)
    finally:
        child.kill()
        child.wait()


def test_a_zombie_is_gone_and_a_reaped_pid_does_not_exist():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (procinfo.stat_fields(child.pid) or ["?"])[0] != "Z":
        time.sleep(0.02)
    assert procinfo.stat_fields(child.pid)[0] == "Z"  # ended, not yet waited for
    assert not procinfo.pid_alive(child.pid)
    assert procinfo.start_time(child.pid) is None
    child.wait()
    assert procinfo.stat_fields(child.pid) is None
    assert not procinfo.pid_alive(child.pid)
    assert procinfo.start_time(child.pid) is None


def test_boot_id_and_pid_namespace():
    assert procinfo.boot_id() == open("/proc/sys/kernel/random/boot_id").read().strip()
    assert procinfo.pid_namespace() == os.readlink("/proc/self/ns/pid")
