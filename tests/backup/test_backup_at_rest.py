"""Owner-only data at rest (issue 24): everything the local store writes is 0600 (files) and 0700 (folders),
whatever the caller's umask, and it refuses a folder its group or others can write to. No server: the flow-level
check (the modes of everything a backup-helix run writes on the bed) is in ``test_backup_random_crash.py``."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import pytest

from drivers.storage import LocalStore
from helix_ops.backup import Manifest
from helix_ops.errors import ConfigError, DriverError

BID = "local-20250102T020000Z-a1b2c3"


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes_under(root: Path) -> dict[str, int]:
    """``{path relative to root's parent: mode}`` of root and everything under it."""
    out = {root.name: stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        out[str(p.relative_to(root.parent))] = stat.S_IMODE(p.lstat().st_mode)
    return out


def owner_only(modes: dict[str, int], root: Path) -> list[str]:
    """What is not owner-only: files other than 0600, folders other than 0700."""
    bad = []
    for rel, mode in modes.items():
        path = root.parent / rel
        want = 0o700 if path.is_dir() else 0o600
        if mode != want:
            bad.append(f"{rel}: {mode:04o} (want {want:04o})")
    return bad


def write_backup(store: LocalStore, backup_id: str = BID) -> Manifest:
    import datetime as dt

    now = dt.datetime(2025, 1, 2, 2, 0, tzinfo=dt.UTC)
    with store.begin(backup_id) as w:
        with w.object("redis.rdb.zst", component="redis", kind="rdb") as obj:
            obj.write(b"secret graph and dataset " * 1000)
        with w.object("neo4j.jsonl.zst", component="neo4j", kind="logical") as obj:
            obj.write(b'{"n": 1}\n' * 1000)
        m = Manifest(backup_id=backup_id, environment="local", project="helix-local", created_at=now,
                     finished_at=now, duration_s=0.0, tool="test", components=("neo4j", "redis"), objects=())
        return w.commit(m)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077], ids=["umask-000", "umask-022", "umask-077"])
def test_everything_the_store_writes_is_owner_only_whatever_the_callers_umask(tmp_path, mask):
    root = tmp_path / "var" / "lib" / "helix-ops" / "backups"  # the root and three missing parents
    key = os.urandom(32)
    with umask(mask):
        store = LocalStore(root, key=key)
        m = write_backup(store)
        store.write_manifest(m)  # a rewrite (verification record) keeps the mode
        fetched = store.fetch_to_file(BID, m.objects[0], tmp_path / "fetched.rdb")
    modes = modes_under(tmp_path / "var")
    assert owner_only(modes, tmp_path / "var") == [], modes
    assert set(modes) >= {"var/lib/helix-ops/backups", f"var/lib/helix-ops/backups/{BID}",
                          f"var/lib/helix-ops/backups/{BID}/manifest.json",
                          f"var/lib/helix-ops/backups/{BID}/redis.rdb.zst",
                          f"var/lib/helix-ops/backups/{BID}/neo4j.jsonl.zst"}
    assert stat.S_IMODE(fetched.stat().st_mode) == 0o600
    assert store.verify(BID, deep=True)


def test_a_leftover_partial_of_a_crashed_run_is_rewritten_owner_only(tmp_path):
    root = tmp_path / "backups"
    root.mkdir(mode=0o700)
    (root / BID).mkdir(mode=0o700)
    left = root / BID / "redis.rdb.zst.partial"
    left.write_bytes(b"old")
    left.chmod(0o644)
    store = LocalStore(root)
    write_backup(store)
    assert owner_only(modes_under(root), root) == []


def test_a_symlink_planted_where_an_object_is_written_is_refused(tmp_path):
    root = tmp_path / "backups"
    (root / BID).mkdir(parents=True, mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"")
    (root / BID / "redis.rdb.zst.partial").symlink_to(elsewhere)
    with pytest.raises(DriverError, match="cannot write to"):
        write_backup(LocalStore(root))
    assert elsewhere.read_bytes() == b""


@pytest.mark.parametrize("mode,who", [(0o770, "its group"), (0o707, "every user"), (0o1777, "every user"),
                                      (0o777, "its group and every user")])
def test_a_root_others_can_write_to_is_refused_before_anything_is_written(tmp_path, mode, who):
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(mode)
    store = LocalStore(root)
    with pytest.raises(ConfigError) as err:
        store.begin(BID)
    message = str(err.value)
    assert "\n" not in message
    assert str(root) in message and f"{who} can write to it" in message
    assert f"chmod go-w {root}" in message
    assert list(root.iterdir()) == []  # not even the write probe or the backup's folder
    root.chmod(0o700)
    write_backup(store)  # after the fix, it writes


def test_a_backup_folder_others_can_write_to_is_refused(tmp_path):
    root = tmp_path / "backups"
    store = LocalStore(root)
    m = write_backup(store)
    (root / BID).chmod(0o777)
    with pytest.raises(ConfigError, match=f"chmod go-w {root / BID}"):
        store.write_manifest(m)
    assert store.list() == [m]  # reading is unaffected


def test_an_existing_root_readable_by_others_is_left_as_it_is_but_the_backups_in_it_are_owner_only(tmp_path):
    """The operator's folder keeps its mode (0755 is theirs to choose); what the store puts in it is 0700/0600."""
    root = tmp_path / "backups"
    root.mkdir()
    root.chmod(0o755)
    write_backup(LocalStore(root))
    modes = modes_under(root)
    assert modes.pop("backups") == 0o755
    assert owner_only(modes, root) == []
