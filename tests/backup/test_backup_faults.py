"""Faults with real processes: a backup process killed mid-stream leaves no manifest and earlier backups
intact, and the next run succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from drivers.storage import LocalStore

WRITER = textwrap.dedent("""
    import datetime as dt, os, sys, time
    sys.path.insert(0, {repo!r})
    from drivers.storage import LocalStore
    from helix_ops.backup import Manifest, new_backup_id
    store = LocalStore(sys.argv[1])
    now = dt.datetime.now(dt.UTC)
    bid = new_backup_id("test", now)
    slow = sys.argv[2] == "slow"
    with store.begin(bid) as w:
        with w.object("data.bin", component="redis", kind="rdb") as obj:
            for i in range(40):
                obj.write(os.urandom(1 << 18))
                if slow and i == 5:
                    print("writing", flush=True)
                if slow:
                    time.sleep(0.2)
        w.commit(Manifest(backup_id=bid, environment="test", project="helix", created_at=now, finished_at=now,
                          duration_s=0.0, tool="t", components=("redis",), objects=()))
    print("done", bid, flush=True)
""")


def run_writer(root, mode):
    code = WRITER.format(repo=os.getcwd())
    return subprocess.Popen([sys.executable, "-c", code, str(root), mode], stdout=subprocess.PIPE, text=True)


def test_killed_mid_backup_leaves_no_manifest_and_next_run_succeeds(tmp_path):
    root = tmp_path / "backups"
    first = run_writer(root, "fast")
    assert first.wait(60) == 0
    store = LocalStore(root)
    earlier = store.list()
    assert len(earlier) == 1
    time.sleep(1.1)  # a distinct second in the next id
    victim = run_writer(root, "slow")
    assert victim.stdout.readline().strip() == "writing"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    assert store.list() == earlier  # the killed backup does not exist
    assert len(store.orphans()) == 1  # its partial object is there, for retention to sweep
    store.verify(earlier[0].backup_id, deep=True)  # the earlier backup is intact
    time.sleep(1.1)
    again = run_writer(root, "fast")
    assert again.wait(60) == 0
    assert len(store.list()) == 2
