"""prune-helix-backups in-process (Prefect's test harness, no databases): GFS over backups with a manifest,
the newest verified one always kept, a dry run that deletes nothing, orphans older than a day removed."""

from __future__ import annotations

import datetime as dt

import pytest

from drivers.storage import LocalStore
from flows.retention import prune_helix_backups
from helix_ops.backup import Manifest, Verification, new_backup_id

NOW = dt.datetime(2025, 3, 31, 12, 0, tzinfo=dt.UTC)


def make(store, when, verified=False, complete=True):
    bid = new_backup_id("local", when)
    w = store.begin(bid)
    with w.object("redis.rdb.zst", component="redis", kind="rdb") as obj:
        obj.write(b"x" * 100)
    if not complete:
        return bid  # what a killed run leaves: objects, no manifest
    m = w.commit(Manifest(backup_id=bid, environment="local", project="helix", created_at=when, finished_at=when,
                          duration_s=0.0, tool="t", components=("neo4j", "redis"), objects=()))
    if verified:
        store.write_manifest(m.with_verification(Verification(at=when, by="t", ok=True)))
    return bid


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "backups")


def test_dry_run_lists_and_deletes_nothing_then_prune(prefect_harness, store):
    days = [NOW - dt.timedelta(days=d, hours=h) for d in range(0, 40, 3) for h in (0, 5)]
    ids = {when: make(store, when, verified=(when == days[-1])) for when in days}  # only the oldest is verified
    old_orphan = make(store, NOW - dt.timedelta(days=2), complete=False)
    new_orphan = make(store, NOW - dt.timedelta(hours=2), complete=False)
    before = [m.backup_id for m in store.list()]

    dry = prune_helix_backups(env="local", storage_path=str(store.root), daily=2, weekly=1, monthly=1, now=NOW)
    assert dry["dry_run"] and dry["deleted"] == []
    assert [m.backup_id for m in store.list()] == before and set(store.orphans()) == {old_orphan, new_orphan}
    newest, oldest_verified = ids[days[0]], ids[days[-1]]
    assert newest in dry["keep"] and oldest_verified in dry["keep"]  # newest, and newest verified
    assert ids[days[2]] in dry["keep"]  # second daily bucket
    assert ids[days[1]] in dry["delete"]  # same day as the newest, older
    assert dry["orphans"] == [old_orphan]  # the recent one may still be running elsewhere
    assert set(dry["keep"]) | set(dry["delete"]) == set(before)

    done = prune_helix_backups(env="local", storage_path=str(store.root), daily=2, weekly=1, monthly=1, now=NOW,
                               dry_run=False)
    assert done["delete"] == dry["delete"] and set(done["deleted"]) == set(dry["delete"]) | {old_orphan}
    assert sorted(m.backup_id for m in store.list()) == sorted(dry["keep"])
    assert store.orphans() == [new_orphan]
    again = prune_helix_backups(env="local", storage_path=str(store.root), daily=2, weekly=1, monthly=1, now=NOW,
                                dry_run=False)
    assert again["delete"] == [] and again["deleted"] == []  # run it twice: nothing more to do
