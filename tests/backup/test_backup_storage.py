"""Backup storage on a local folder and on S3 (the test bed's S3Proxy): streaming, zstd, sha256, encryption,
manifest last, verify, delete, and what a crash or an unreachable endpoint leaves behind."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import resource
import secrets
import time

import pytest

from drivers.storage import CHUNK, LocalStore, S3Store, key_fingerprint, parse_key, s3_client
from helix_ops.backup import Manifest, Verification, new_backup_id
from helix_ops.errors import BackupIntegrityError, ConfigError, DriverError

NOW = dt.datetime(2025, 3, 10, 2, 0, tzinfo=dt.UTC)
KEY = base64.b64encode(bytes(range(32))).decode()


def bare_manifest(bid: str) -> Manifest:
    return Manifest(backup_id=bid, environment="test", project="helix", created_at=NOW, finished_at=NOW,
                    duration_s=0.0, tool="tests", components=("redis",), objects=())


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.bed)])  # s3: a server (the bed)
def make_store(request, tmp_path):
    if request.param == "local":
        yield lambda key=None: LocalStore(tmp_path / "backups", key=key)
        return
    s3 = request.getfixturevalue("s3_server")
    bucket = "bk-" + secrets.token_hex(4)
    s3.client().create_bucket(Bucket=bucket)
    client = s3_client(s3.endpoint, s3.access_key, s3.secret_key)
    yield lambda key=None: S3Store(client, bucket, "helix/test", key=key)


def payload(n_chunks: int, seed: int = 1) -> list[bytes]:
    # half compressible, half random, several chunks so the encryption and multipart paths run
    out = []
    for i in range(n_chunks):
        out.append((b"helix %d " % (i + seed)) * (CHUNK // 16) + os.urandom(CHUNK // 2))
    return out


def write_backup(store, bid, chunks, name="data.bin"):
    with store.begin(bid) as w:
        with w.object(name, component="redis", kind="rdb") as obj:
            for c in chunks:
                obj.write(c)
        return w.commit(bare_manifest(bid))


@pytest.mark.parametrize("encrypted", [False, True])
def test_round_trip_checksums_and_manifest_last(make_store, encrypted):
    store = make_store(KEY if encrypted else None)
    bid = new_backup_id("test", NOW)
    chunks = payload(10)  # 10+ MiB raw: two S3 parts
    m = write_backup(store, bid, chunks)
    e = m.objects[0]
    raw = b"".join(chunks)
    assert e.raw_size == len(raw) and e.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert e.size < e.raw_size  # compressed
    assert m.encrypted is encrypted and e.encryption == ("aes-256-gcm-chunked" if encrypted else "none")
    assert (m.key_fingerprint == key_fingerprint(parse_key(KEY))) is encrypted
    stored = b"".join(store.stored_chunks(bid, e))
    assert hashlib.sha256(stored).hexdigest() == e.sha256 and len(stored) == e.size
    assert stored[:4] == (b"HXAE" if encrypted else b"\x28\xb5\x2f\xfd")  # our AEAD header, or zstd's magic
    assert stored.count(b"helix 1 ") == 0 if encrypted else stored.count(b"helix 1 ") < 3
    assert b"".join(store.raw_chunks(bid, e)) == raw
    assert [x.backup_id for x in store.list()] == [bid]
    assert store.read_manifest(bid) == m
    assert store.verify(bid) == [f"data.bin: {e.size} bytes, sha256 ok"]
    assert store.verify(bid, deep=True)[0].endswith("content ok")
    with pytest.raises(ConfigError, match="already exists"):
        store.begin(bid)


def test_encrypted_backup_needs_the_right_key(make_store):
    store = make_store(KEY)
    bid = new_backup_id("test", NOW)
    m = write_backup(store, bid, payload(2))
    keyless = type(store).__new__(type(store))
    keyless.__dict__.update(store.__dict__, _key=None)
    with pytest.raises(ConfigError, match="encrypted: give the key"):
        list(keyless.raw_chunks(bid, m.objects[0]))
    other = type(store).__new__(type(store))
    other.__dict__.update(store.__dict__, _key=os.urandom(32))
    with pytest.raises(ConfigError, match="another key"):
        other.verify(bid, deep=True)
    assert keyless.verify(bid) == store.verify(bid)  # the stored checksums need no key


def test_a_backup_without_manifest_does_not_exist(make_store):
    store = make_store()
    done = new_backup_id("test", NOW)
    write_backup(store, done, payload(1))
    half = new_backup_id("test", NOW + dt.timedelta(seconds=1))
    w = store.begin(half)
    with w.object("data.bin", component="redis", kind="rdb") as obj:
        obj.write(b"x" * 1000)
    # no commit, no __exit__: what a killed process leaves
    assert [m.backup_id for m in store.list()] == [done]
    assert store.orphans() == [half]
    with pytest.raises(ConfigError, match="no manifest"):
        store.read_manifest(half)
    store.delete(half)
    assert store.orphans() == []


def test_failed_object_leaves_nothing(make_store):
    store = make_store()
    bid = new_backup_id("test", NOW)
    with pytest.raises(RuntimeError, match="boom"):
        with store.begin(bid) as w:
            with w.object("data.bin", component="redis", kind="rdb") as obj:
                obj.write(os.urandom(CHUNK * 9))
                raise RuntimeError("boom")
    assert store.list() == [] and store.orphans() == []


def test_flipped_byte_is_detected(make_store, tmp_path):
    store = make_store()
    bid = new_backup_id("test", NOW)
    m = write_backup(store, bid, payload(2))
    e = m.objects[0]
    stored = bytearray(b"".join(store.stored_chunks(bid, e)))
    stored[len(stored) // 2] ^= 0x01
    sink = store._sink(bid, e.name)
    sink.write(bytes(stored))
    sink.commit()
    with pytest.raises(BackupIntegrityError, match="does not match its manifest"):
        store.verify(bid)


def test_verification_is_recorded_and_delete_removes_manifest_first(make_store):
    store = make_store()
    bid = new_backup_id("test", NOW)
    m = write_backup(store, bid, payload(1))
    store.write_manifest(m.with_verification(Verification(at=NOW, by="test", ok=True, checks=("sha256",))))
    assert store.read_manifest(bid).verified
    store.delete(bid)
    assert store.list() == [] and store.orphans() == []


def test_local_store_rejects_paths_and_truncated_encryption(tmp_path):
    with pytest.raises(ConfigError):
        LocalStore("relative/path")
    store = LocalStore(tmp_path, key=KEY)
    with pytest.raises(ConfigError):
        store.begin("../../etc")
    bid = new_backup_id("test", NOW)
    m = write_backup(store, bid, payload(3))
    e = m.objects[0]
    path = tmp_path / bid / e.name
    data = path.read_bytes()
    # cut the stream at a chunk boundary and fix the manifest's checksum: only the AEAD can notice
    cut = data[: 6 + 4 + 8 + (CHUNK + 16)]
    path.write_bytes(cut)
    forged = e.model_copy(update={"size": len(cut), "sha256": hashlib.sha256(cut).hexdigest()})
    with pytest.raises(BackupIntegrityError, match="does not authenticate"):
        list(store.raw_chunks(bid, forged))
    with pytest.raises(ConfigError):
        parse_key("not base64!")
    with pytest.raises(ConfigError):
        parse_key(base64.b64encode(b"short").decode())


def test_streaming_memory_is_constant(tmp_path):
    """200 MiB through the pipeline (compress + encrypt + hash) grows peak RSS by far less than that."""
    store = LocalStore(tmp_path, key=KEY)
    bid = new_backup_id("test", NOW)
    block = os.urandom(CHUNK)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with store.begin(bid) as w:
        with w.object("big.bin", component="redis", kind="rdb") as obj:
            for _ in range(200):
                obj.write(block)
        m = w.commit(bare_manifest(bid))
    total = 0
    for chunk in store.raw_chunks(bid, m.objects[0]):
        total += len(chunk)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert total == 200 * CHUNK
    assert grown_mib < 64, grown_mib


def test_s3_unreachable_fails_after_retries_and_marks_nothing(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = s3_client(f"http://127.0.0.1:{port}", "k", "s", max_attempts=3, connect_timeout_s=1)
    store = S3Store(client, "bucket", "p")
    t0 = time.monotonic()
    with pytest.raises(DriverError, match="EndpointConnectionError") as err:
        write_backup(store, new_backup_id("test", NOW), [b"x" * 100])
    assert "is the endpoint reachable" in str(err.value)
    assert time.monotonic() - t0 < 30
