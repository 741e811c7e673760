"""Redis snapshots through the replication protocol and the AOF-safe restore, on real redis-server 7 processes
with AOF on (the test bed's RedisServer)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import shutil
import socket
import threading

import pytest

from drivers.redis_backup import (
    bgsave,
    check_rdb,
    dataset_fingerprint,
    restore_rdb_into_dir,
    server_facts,
    snapshot_rdb,
    stream_rdb,
)
from drivers.storage import LocalStore
from helix_ops.backup import Manifest, new_backup_id
from helix_ops.errors import BackupIntegrityError, CommandFailed
from testbed import procs
from testbed.redis_server import RedisServer


@pytest.fixture
def private_redis(bed, tmp_path):
    server = RedisServer(tmp_path / "redis", procs.free_port(), secrets.token_urlsafe(16))
    server.start()
    yield server
    server.stop()


def fill(client, n: int = 2000, prefix: str = "k") -> None:
    """Every Redis type, in two databases, a third of the keys with a TTL."""
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        kind = i % 7
        key = f"{prefix}:{kind}:{i}"
        if kind == 0:
            pipe.set(key, os.urandom(16))
        elif kind == 1:
            pipe.hset(key, mapping={"a": i, "b": "x" * (i % 50), "c": 1.5})
        elif kind == 2:
            pipe.rpush(key, *[f"v{j}" for j in range(5)])
        elif kind == 3:
            pipe.sadd(key, *[f"m{j}" for j in range(i % 9 + 1)])
        elif kind == 4:
            pipe.zadd(key, {f"z{j}": j * 1.25 for j in range(6)})
        elif kind == 5:
            pipe.xadd(key, {"event": "created", "n": str(i)})
        else:
            pipe.pfadd(key, *[f"h{j}" for j in range(20)])
        if i % 3 == 0:
            pipe.expire(key, 3600 + i)
    pipe.execute()
    client.execute_command("SELECT", 3)
    client.set("db3-key", "in another database")
    client.execute_command("SELECT", 0)


def test_snapshot_check_and_aof_safe_restore_lose_nothing(private_redis, tmp_path):
    with private_redis.client() as c:
        fill(c)
        with private_redis.client(db=3) as c3:
            c3.set("db3-key", "in another database")
            c3.expire("db3-key", 7200)
        before = dataset_fingerprint('127.0.0.1', private_redis.port, private_redis.password)
        facts = server_facts(c)
        assert facts["aof_enabled"] and facts["keys"] == 2001 and facts["expires"] == 668
    rdb = snapshot_rdb("127.0.0.1", private_redis.port, private_redis.password, tmp_path / "snap.rdb")
    assert check_rdb(rdb) == "RDB looks OK (2001 keys read)"

    with private_redis.client() as c:  # changes after the snapshot: the restore must take them away
        c.flushall()
        c.set("after-snapshot", "must be gone after the restore")
    private_redis.stop()
    data = private_redis.home / "data"
    assert (data / "appendonlydir").is_dir()  # AOF on: an RDB copied back alone would be ignored

    loaded = restore_rdb_into_dir(data, rdb)
    assert loaded["keys"] == 2001 and loaded["aof"] == "rewritten"
    private_redis.start()
    with private_redis.client() as c:
        assert dataset_fingerprint('127.0.0.1', private_redis.port, private_redis.password) == before
        assert c.get("after-snapshot") is None
        assert c.ttl("k:0:0") > 3000 and c.ttl("k:1:1") == -1
        assert c.info("persistence")["aof_enabled"] == 1
    # The data now lives in the AOF: a second restart (AOF wins) still has every key.
    (data / "dump.rdb").unlink()
    private_redis.stop()
    private_redis.start()
    with private_redis.client() as c:
        assert dataset_fingerprint('127.0.0.1', private_redis.port, private_redis.password) == before


def test_naive_rdb_copy_with_aof_on_is_ignored(private_redis, tmp_path):
    """The ops-fact the restore is built around, checked on the real server: copy an RDB back, restart, and
    Redis loads the (empty) AOF instead."""
    with private_redis.client() as c:
        fill(c, 100)
    rdb = snapshot_rdb("127.0.0.1", private_redis.port, private_redis.password, tmp_path / "snap.rdb")
    with private_redis.client() as c:
        c.flushall()
    private_redis.stop()
    shutil.copyfile(rdb, private_redis.home / "data" / "dump.rdb")
    private_redis.start()
    with private_redis.client() as c:
        assert c.dbsize() == 0


def test_bgsave_waits_for_lastsave(private_redis):
    with private_redis.client() as c:
        fill(c, 50)
        before = int(c.lastsave().timestamp())
        after = bgsave(c, deadline_s=30)
        assert after > before
    assert check_rdb(private_redis.home / "data" / "dump.rdb") == "RDB looks OK (51 keys read)"  # 50 + the db3 key


def test_bad_password_and_corrupt_rdb(private_redis, tmp_path):
    with pytest.raises(CommandFailed) as err:
        snapshot_rdb("127.0.0.1", private_redis.port, "wrong-password-xyz", tmp_path / "x.rdb")
    assert "wrong-password-xyz" not in str(err.value) + err.value.stderr + " ".join(err.value.argv)
    with private_redis.client() as c:
        fill(c, 200)
    rdb = snapshot_rdb("127.0.0.1", private_redis.port, private_redis.password, tmp_path / "ok.rdb")
    data = bytearray(rdb.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.rdb"
    bad.write_bytes(bytes(data))
    with pytest.raises(BackupIntegrityError, match="redis-check-rdb refused"):
        check_rdb(bad)



def _cutting_proxy(port: int, limit: int) -> tuple[int, threading.Thread]:
    """A TCP proxy to 127.0.0.1:``port`` that passes the client's bytes and only the first ``limit`` bytes of
    the server's answer, then closes both sides: a replication stream cut short by the network."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        client, _ = listener.accept()
        server = socket.create_connection(("127.0.0.1", port))
        passed = 0

        def upstream() -> None:
            with contextlib.suppress(OSError):
                while data := client.recv(65536):
                    server.sendall(data)

        threading.Thread(target=upstream, daemon=True).start()
        with contextlib.suppress(OSError):
            while passed < limit and (data := server.recv(min(65536, limit - passed))):
                client.sendall(data)
                passed += len(data)
        for s in (client, server, listener):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_backup_streams_the_rdb_and_refuses_a_cut_stream(private_redis, tmp_path):
    """backup-helix's path (``stream_rdb``): the RDB goes into the storage and redis-check-rdb as it arrives.
    Kept: the same bytes a snapshot to a file gets (same key count, the object's raw size is the RDB's). A
    stream cut halfway by the network raises, and the backup keeps no object and no manifest."""
    with private_redis.client() as c:
        fill(c, 3000)
    whole = snapshot_rdb("127.0.0.1", private_redis.port, private_redis.password, tmp_path / "whole.rdb")
    store = LocalStore(tmp_path / "store")
    now = dt.datetime.now(dt.UTC)
    good_id, cut_id = (new_backup_id("t", now, rand=os.urandom(3).hex()) for _ in range(2))
    with store.begin(good_id) as w:
        with w.object("redis.rdb.zst", "redis", "rdb") as obj:
            verdict = stream_rdb("127.0.0.1", private_redis.port, private_redis.password, obj.write)
        assert verdict == "RDB looks OK (3001 keys read)"  # 3000 + the db3 key
        # an RDB's bytes differ from snapshot to snapshot only in its header fields (ctime, used-mem)
        assert abs(w.entries[0].raw_size - whole.stat().st_size) < 64
        kept = w.commit(Manifest(backup_id=good_id, environment="t", project="helix", created_at=now,
                                 finished_at=now, duration_s=0, tool="test", components=("redis",), objects=()))
    assert check_rdb(store.fetch_to_file(good_id, kept.objects[0], tmp_path / "back.rdb")) == verdict

    port, proxy = _cutting_proxy(private_redis.port, whole.stat().st_size // 2)
    with pytest.raises((CommandFailed, BackupIntegrityError)) as cut:
        with store.begin(cut_id) as w:
            with w.object("redis.rdb.zst", "redis", "rdb") as obj:
                stream_rdb("127.0.0.1", port, private_redis.password, obj.write, timeout_s=60)
    proxy.join(10)
    assert "I/O Error" in str(cut.value) or "redis-check-rdb refused" in str(cut.value)
    assert private_redis.password not in str(cut.value) + getattr(cut.value, "stderr", "")
    assert not w.entries and w.committed is None
    assert cut_id not in store._ids() and not (tmp_path / "store" / cut_id).exists()


def test_round_trip_through_both_storages_and_both_restores(private_redis, bed, tmp_path):
    """Every type, TTLs, two databases: one snapshot written into a local folder and S3 (S3Proxy); restored
    from S3 by the stopped-server path (``restore_rdb_into_dir``) into a fresh server, and from the local folder
    by replaying into the running server (``replay_rdb``, what restore-helix does); all keys compared."""

    from drivers.redis_backup import replay_rdb
    from drivers.storage import LocalStore, S3Store, s3_client
    from helix_ops.backup import Manifest, new_backup_id

    with private_redis.client() as c:
        fill(c, 3000)
        with private_redis.client(db=3) as c3:
            c3.set("db3-key", "in another database", ex=7200)
    full = dict(sample=10_000)  # every key, not a sample
    before = dataset_fingerprint("127.0.0.1", private_redis.port, private_redis.password, **full)
    assert before["keys"] == 3001 and all(d["sample"] == d["keys"] for d in before["dbs"].values())
    rdb = snapshot_rdb("127.0.0.1", private_redis.port, private_redis.password, tmp_path / "snap.rdb")

    s3 = bed.s3()
    bucket = "rr-" + secrets.token_hex(4)
    s3.client().create_bucket(Bucket=bucket)
    stores = [LocalStore(tmp_path / "local"), S3Store(s3_client(s3.endpoint, s3.access_key, s3.secret_key), bucket)]
    bid = new_backup_id("test", dt.datetime.now(dt.UTC))
    now = dt.datetime.now(dt.UTC)
    manifests = []
    for store in stores:
        with store.begin(bid) as w:
            w.put_file("redis.rdb.zst", "redis", "rdb", rdb)
            manifests.append(w.commit(Manifest(backup_id=bid, environment="test", project="helix", created_at=now,
                                               finished_at=now, duration_s=0.0, tool="t", components=("redis",),
                                               objects=())))
    assert manifests[0].objects == manifests[1].objects
    local, s3store = stores
    entry = manifests[0].objects[0]

    fresh = RedisServer(tmp_path / "fresh", procs.free_port(), secrets.token_urlsafe(16))
    fresh.start()
    try:
        fresh.stop()
        got = s3store.fetch_to_file(bid, entry, tmp_path / "from-s3.rdb")
        assert restore_rdb_into_dir(fresh.home / "data", got)["keys"] == 3001
        fresh.start()
        assert dataset_fingerprint("127.0.0.1", fresh.port, fresh.password, **full) == before
    finally:
        fresh.stop()

    with private_redis.client() as c:
        c.flushall()
        c.set("after-snapshot", "must be gone")
    got = local.fetch_to_file(bid, entry, tmp_path / "from-local.rdb")
    result = replay_rdb(got, "127.0.0.1", private_redis.port, private_redis.password)
    assert result["loaded"]["keys"] == result["restored"]["keys"] == 3001
    assert result["restored"]["keys_by_db"] == {"db0": 3000, "db3": 1}
    assert dataset_fingerprint("127.0.0.1", private_redis.port, private_redis.password, **full) == before
    private_redis.stop()  # AOF on: the replayed keys are in the AOF, a restart keeps them all
    private_redis.start()
    assert dataset_fingerprint("127.0.0.1", private_redis.port, private_redis.password, **full) == before
    with private_redis.client() as c:
        assert c.ttl("k:0:0") > 3000 and c.ttl("k:1:1") == -1
