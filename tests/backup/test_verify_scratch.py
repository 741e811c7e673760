"""verify-helix-backup's scratch restore on the real container engine: a backup taken by backup-helix of the
session's deployed local stack (``tests/backup/conftest.py``: deployed once) is loaded into scratch Neo4j and
Redis containers, checked with ``neo4j-admin database check`` and ``redis-check-rdb``, and its counts compared
with the manifest. A manifest whose counts were changed (its checksums still match: the objects are untouched)
is refused and not marked verified. No scratch container or volume is left after any run."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from drivers.engine_scratch import SCRATCH_LABEL, ScratchEngine, scratch_leftovers
from drivers.storage import LocalStore
from flows.backup import backup_helix
from flows.verify_backup import TOOL, verify_helix_backup
from helix_ops.errors import BackupIntegrityError, ConfigError, DriverError, WaitTimeout

pytestmark = pytest.mark.bed

CHECKS = ["checksums", "scratch-neo4j-start", "neo4j-load", "neo4j-counts", "neo4j-admin-check",
          "scratch-redis-start", "redis-check-rdb", "redis-counts"]


def _endpoint(stack, service: str) -> tuple[str, int]:
    row = [r for r in stack["result"]["status"] if r["service"] == service][0]
    host, port = row["endpoint"].rsplit(":", 1)
    return host, int(port)


def _secrets(stack):
    from blocks.secrets import load_environment_secrets
    from helix_ops.descriptor import load_descriptor

    return load_environment_secrets(load_descriptor(stack["path"]))


def _nothing_left(docker_client, bed) -> None:
    """No scratch container or volume of this test bed run (other sessions may share the engine)."""
    assert scratch_leftovers(docker_client, bed.container_labels()) == {"containers": [], "volumes": []}


def _artifact(key: str) -> str:
    from prefect.artifacts import Artifact

    art = Artifact.get(key)
    assert art is not None, key
    return str(art.data)


@pytest.fixture(scope="module")
def scratch_backup(helix_stack, engine, tmp_path_factory):
    """Data of every shape the checks count (labels, types, a constraint, Redis keys with a TTL in two
    databases), then one backup by backup-helix into this module's own folder."""
    import neo4j
    import redis

    s = _secrets(helix_stack)
    nhost, nport = _endpoint(helix_stack, "neo4j")
    with neo4j.GraphDatabase.driver(f"bolt://{nhost}:{nport}",
                                    auth=(s.neo4j_user, s.neo4j_password.get_secret_value())) as drv:
        drv.execute_query("UNWIND range(1, 30) AS i CREATE (:ScratchProbe:Tagged {i: i, at: datetime()})")
        drv.execute_query("MATCH (a:ScratchProbe), (b:ScratchProbe) WHERE b.i = a.i + 1 "
                          "CREATE (a)-[:NEXT {w: a.i * 0.5}]->(b)")
        drv.execute_query("CREATE CONSTRAINT scratch_probe_i IF NOT EXISTS FOR (n:ScratchProbe) REQUIRE n.i IS UNIQUE")
    rhost, rport = _endpoint(helix_stack, "redis")
    user = s.redis_username if s.redis_username not in ("", "default") else None
    with redis.Redis(host=rhost, port=rport, username=user, password=s.redis_password.get_secret_value()) as r:
        for i in range(50):
            r.set(f"scratch-probe:{i}", f"v{i}")
        r.hset("scratch-probe:h", mapping={"a": "1", "b": "2"})
        r.set("scratch-probe:ttl", "x", ex=3600)
    with redis.Redis(host=rhost, port=rport, username=user, password=s.redis_password.get_secret_value(),
                     db=1) as r1:
        r1.set("scratch-probe:db1", "one")
    store = tmp_path_factory.mktemp("verify-backups")
    result = backup_helix(env="local", descriptor=str(helix_stack["path"]), engine_url=engine.base_url,
                          storage_path=str(store))
    yield {"store": store, "backup_id": result["backup_id"], "counts": result["counts"]}
    # The stack is shared with test_backup_flow.py (which counts db0 keys): take this module's data out again.
    with neo4j.GraphDatabase.driver(f"bolt://{nhost}:{nport}",
                                    auth=(s.neo4j_user, s.neo4j_password.get_secret_value())) as drv:
        drv.execute_query("DROP CONSTRAINT scratch_probe_i IF EXISTS")
        drv.execute_query("MATCH (n:ScratchProbe) DETACH DELETE n")
    with redis.Redis(host=rhost, port=rport, username=user, password=s.redis_password.get_secret_value()) as r:
        r.delete(*[f"scratch-probe:{i}" for i in range(50)], "scratch-probe:h", "scratch-probe:ttl")
    with redis.Redis(host=rhost, port=rport, username=user, password=s.redis_password.get_secret_value(),
                     db=1) as r1:
        r1.delete("scratch-probe:db1")


def test_scratch_engine_refuses_project_labels():
    with pytest.raises(ConfigError, match="project labels"):
        ScratchEngine(None, "verify-abc", {"helix-ops.project": "helix-local"})
    with pytest.raises(ConfigError, match="run_id"):
        ScratchEngine(None, "../etc", {})
    assert ScratchEngine(None, "verify-abc", {"x": "1"}).labels == {"x": "1", SCRATCH_LABEL: "verify-abc"}


def test_scratch_restore_verifies_and_marks_the_manifest(helix_stack, engine, bed, scratch_backup, docker_client):
    store_dir, bid = scratch_backup["store"], scratch_backup["backup_id"]
    store = LocalStore(store_dir)
    m = store.read_manifest(bid)
    assert m.verified and m.verification.by == "helix-ops backup-helix"  # backup-helix's checksum verification
    store.write_manifest(m.model_copy(update={"verification": None}))  # so "verified" below is this run's
    assert not store.read_manifest(bid).verified
    project_before = sorted(c.name for c in docker_client.containers.list(
        all=True, filters={"label": f"helix-ops.project={helix_stack['project']}"}))

    result = verify_helix_backup(env="local", descriptor=str(helix_stack["path"]), backup_id=bid,
                                 storage_path=str(store_dir), engine_url=engine.base_url,
                                 container_labels=bed.container_labels())
    print(json.dumps(result, indent=1))
    assert result["ok"] and result["backup_id"] == bid
    rows = {r["name"]: r for r in result["checks"]}
    assert [r["name"] for r in result["checks"]] == CHECKS
    assert all(r["ok"] for r in result["checks"]), result["checks"]
    assert all(r["seconds"] > 1 for r in result["checks"] if r["name"] in ("scratch-neo4j-start",
                                                                         "neo4j-admin-check"))
    counts = scratch_backup["counts"]
    assert f"{counts['neo4j']['nodes']} nodes, {counts['neo4j']['relationships']} relationships" in \
        rows["neo4j-load"]["detail"]
    assert counts["neo4j"]["nodes"] >= 30 and counts["neo4j"]["relationships"] >= 29
    assert "exit 0" in rows["neo4j-admin-check"]["detail"]
    assert f"RDB looks OK ({counts['redis']['keys']} keys read" in rows["redis-check-rdb"]["detail"]
    assert counts["redis"]["keys_by_db"].get("db1", 0) >= 1

    m = store.read_manifest(bid)
    assert m.verified and m.verification.by == TOOL
    assert [line.split(":")[0] for line in m.verification.checks] == CHECKS
    assert all(": ok in " in line for line in m.verification.checks)
    report = _artifact("helix-backup-verify-local")
    assert f"`{bid}`: verified" in report and "scratch containers and volumes removed" in report
    for name in CHECKS:
        assert f"| {name} | pass | {rows[name]['seconds']:.1f}s |" in report
    text = (store_dir / bid / "manifest.json").read_text()
    s = _secrets(helix_stack)
    for secret in (s.neo4j_password, s.redis_password):
        assert secret.get_secret_value() not in text and secret.get_secret_value() not in json.dumps(result)
    _nothing_left(docker_client, bed)
    assert sorted(c.name for c in docker_client.containers.list(
        all=True, filters={"label": f"helix-ops.project={helix_stack['project']}"})) == project_before


def test_tampered_counts_are_refused_and_not_marked_verified(helix_stack, engine, bed, scratch_backup,
                                                            docker_client, tmp_path):
    bid = scratch_backup["backup_id"]
    shutil.copytree(scratch_backup["store"] / bid, tmp_path / bid)
    path = tmp_path / bid / "manifest.json"
    data = json.loads(path.read_text())
    data["neo4j"]["nodes"] += 1
    data["neo4j"]["labels"]["ScratchProbe"] += 1
    data["redis"]["keys"] += 1
    path.write_text(json.dumps(data))
    store = LocalStore(tmp_path)
    # The objects are untouched: the checksum-only verification passes and marks the tampered manifest verified.
    assert verify_helix_backup(env="local", descriptor=str(helix_stack["path"]), backup_id=bid,
                               storage_path=str(tmp_path), restore=False, deep=True)["ok"]
    assert store.read_manifest(bid).verified

    with pytest.raises(BackupIntegrityError) as refused:
        verify_helix_backup(env="local", descriptor=str(helix_stack["path"]), backup_id=bid,
                            storage_path=str(tmp_path), engine_url=engine.base_url,
                            container_labels=bed.container_labels())
    message = str(refused.value)
    n, k = scratch_backup["counts"]["neo4j"]["nodes"], scratch_backup["counts"]["redis"]["keys"]
    assert f"nodes: manifest {n + 1}, scratch restore {n}" in message
    assert "labels: manifest" in message
    assert f"keys: manifest {k + 1}, the RDB holds {k}" in message
    assert "hint:" in message
    m = store.read_manifest(bid)
    assert not m.verified and m.verification.ok is False and m.verification.by == TOOL
    lines = {line.split(":")[0]: line for line in m.verification.checks}
    assert list(lines) == CHECKS
    assert ": FAILED in " in lines["neo4j-counts"] and ": FAILED in " in lines["redis-counts"]
    # the other checks still ran and passed: the data itself is fine, only the manifest lies
    assert ": ok in " in lines["neo4j-admin-check"] and ": ok in " in lines["redis-check-rdb"]
    report = _artifact("helix-backup-verify-local")
    assert "verification FAILED" in report and "| neo4j-counts | **FAIL** |" in report
    assert "| redis-counts | **FAIL** |" in report and "| neo4j-admin-check | pass |" in report
    _nothing_left(docker_client, bed)


def test_a_scratch_machinery_failure_leaves_the_manifest_alone(helix_stack, engine, bed, scratch_backup,
                                                               docker_client, tmp_path):
    """The scratch machinery fails, not the backup: the error is raised, the manifest keeps its verification,
    and nothing of the scratch run is left. (1) an image the engine does not have: refused before any scratch
    object exists; (2) a scratch Neo4j that cannot come up within its deadline (1 s): its running container and
    volume are removed (also after the task's retry)."""
    bid = scratch_backup["backup_id"]
    shutil.copytree(scratch_backup["store"] / bid, tmp_path / bid)
    before = (tmp_path / bid / "manifest.json").read_text()
    desc = yaml.safe_load(helix_stack["path"].read_text())
    desc["services"]["neo4j"]["image"]["tag"] = "no-such-tag"
    other = tmp_path / "local.yaml"
    other.write_text(yaml.safe_dump(desc, sort_keys=False))
    with pytest.raises(DriverError, match="no-such-tag"):
        verify_helix_backup(env="local", descriptor=str(other), backup_id=bid, storage_path=str(tmp_path),
                            engine_url=engine.base_url, container_labels=bed.container_labels())
    assert (tmp_path / bid / "manifest.json").read_text() == before
    _nothing_left(docker_client, bed)

    with pytest.raises(WaitTimeout, match="scratch Neo4j"):
        verify_helix_backup(env="local", descriptor=str(helix_stack["path"]), backup_id=bid,
                            storage_path=str(tmp_path), engine_url=engine.base_url,
                            container_labels=bed.container_labels(), scratch_start_deadline_s=1)
    assert (tmp_path / bid / "manifest.json").read_text() == before
    _nothing_left(docker_client, bed)


# --- dump backups (neo4j_strategy="dump"): neo4j-admin database load into the scratch data volume ---------------

DUMP_CHECKS = ["checksums", "scratch-neo4j-start", "neo4j-load", "neo4j-admin-check", "neo4j-counts",
               "scratch-redis-start", "redis-check-rdb", "redis-counts"]


@pytest.fixture(scope="module")
def dump_backup(scratch_backup, helix_stack, engine, tmp_path_factory):
    """One backup-helix backup of the same data (``scratch_backup``'s) with the Neo4j dump strategy: the
    stack's Neo4j is stopped, dumped by neo4j-admin in a one-off container, and started again."""
    store = tmp_path_factory.mktemp("verify-dump-backups")
    result = backup_helix(env="local", descriptor=str(helix_stack["path"]), engine_url=engine.base_url,
                          storage_path=str(store), neo4j_strategy="dump")
    bid = result["backup_id"]
    m = LocalStore(store).read_manifest(bid)
    assert m.neo4j.strategy == "dump" and [o.name for o in m.objects] == ["neo4j.dump.zst", "redis.rdb.zst"]
    assert m.neo4j.nodes >= 30 and m.neo4j.labels["ScratchProbe"] == 30 and m.neo4j.constraints >= 1
    return {"store": store, "backup_id": bid, "manifest": m}


def _copy_backup(dump_backup, tmp_path):
    bid = dump_backup["backup_id"]
    shutil.copytree(dump_backup["store"] / bid, tmp_path / bid)
    return bid, tmp_path / bid / "manifest.json"


def test_a_dump_backup_is_loaded_checked_counted_and_marked_verified(helix_stack, engine, bed, dump_backup,
                                                                    docker_client):
    store_dir, bid, m = dump_backup["store"], dump_backup["backup_id"], dump_backup["manifest"]
    store = LocalStore(store_dir)
    store.write_manifest(m.model_copy(update={"verification": None}))  # so "verified" below is this run's
    assert not store.read_manifest(bid).verified
    dump = m.object("neo4j.dump.zst")

    result = verify_helix_backup(env="local", descriptor=str(helix_stack["path"]), backup_id=bid,
                                 storage_path=str(store_dir), engine_url=engine.base_url,
                                 container_labels=bed.container_labels())
    print(json.dumps(result, indent=1))
    assert result["ok"] and result["backup_id"] == bid
    rows = {r["name"]: r for r in result["checks"]}
    assert [r["name"] for r in result["checks"]] == DUMP_CHECKS
    assert all(r["ok"] for r in result["checks"]), result["checks"]
    assert f"neo4j-admin database load of neo4j.dump.zst ({dump.raw_size} bytes, checksums checked while " \
           f"streaming)" in rows["neo4j-load"]["detail"]
    assert rows["neo4j-admin-check"]["detail"].startswith("neo4j-admin database check neo4j (offline")
    assert "exit 0: the store is consistent" in rows["neo4j-admin-check"]["detail"]
    assert rows["neo4j-admin-check"]["seconds"] > 1  # the tool really ran
    n = m.neo4j
    assert rows["neo4j-counts"]["detail"].startswith(
        f"nodes {n.nodes}, relationships {n.relationships}, {len(n.labels)} labels, {len(n.relationship_types)} "
        f"types, {n.constraints} constraints, {n.indexes} indexes equal the manifest")

    after = store.read_manifest(bid)
    assert after.verified and after.verification.ok and after.verification.by == TOOL
    assert [line.split(":")[0] for line in after.verification.checks] == DUMP_CHECKS
    assert all(": ok in " in line for line in after.verification.checks)
    report = _artifact("helix-backup-verify-local")
    assert f"`{bid}`: verified" in report and "scratch containers and volumes removed" in report
    for name in DUMP_CHECKS:
        assert f"| {name} | pass | {rows[name]['seconds']:.1f}s |" in report
    assert "neo4j-admin database check neo4j" in report and "neo4j-admin database load" in report
    _nothing_left(docker_client, bed)


def test_a_dump_whose_counts_do_not_match_is_not_marked_verified(helix_stack, engine, bed, dump_backup,
                                                                docker_client, tmp_path):
    """The manifest's counts raised by one (the dump untouched: checksums, load and check pass)."""
    bid, path = _copy_backup(dump_backup, tmp_path)
    data = json.loads(path.read_text())
    data["neo4j"]["nodes"] += 1
    data["neo4j"]["relationships"] += 1
    data["neo4j"]["labels"]["ScratchProbe"] += 1
    data["verification"] = None
    path.write_text(json.dumps(data))
    store = LocalStore(tmp_path)

    with pytest.raises(BackupIntegrityError) as refused:
        verify_helix_backup(env="local", descriptor=str(helix_stack["path"]), backup_id=bid,
                            storage_path=str(tmp_path), engine_url=engine.base_url,
                            container_labels=bed.container_labels())
    message = str(refused.value)
    n, r = dump_backup["manifest"].neo4j.nodes, dump_backup["manifest"].neo4j.relationships
    assert f"nodes: manifest {n + 1}, scratch restore {n}" in message
    assert f"relationships: manifest {r + 1}, scratch restore {r}" in message
    assert "labels: manifest" in message and "hint:" in message
    m = store.read_manifest(bid)
    assert not m.verified and m.verification.ok is False and m.verification.by == TOOL
    lines = {line.split(":")[0]: line for line in m.verification.checks}
    assert list(lines) == DUMP_CHECKS
    assert ": FAILED in " in lines["neo4j-counts"]
    for name in ("checksums", "neo4j-load", "neo4j-admin-check", "redis-counts"):
        assert ": ok in " in lines[name], lines[name]
    report = _artifact("helix-backup-verify-local")
    assert "verification FAILED" in report and "| neo4j-counts | **FAIL** |" in report
    assert "| neo4j-admin-check | pass |" in report and "| neo4j-load | pass |" in report
    _nothing_left(docker_client, bed)


def test_a_dump_with_a_flipped_byte_is_not_marked_verified(helix_stack, engine, bed, dump_backup,
                                                           docker_client, tmp_path):
    """(1) A byte flipped in the stored object: the checksums refuse it before any scratch container exists.
    (2) A byte flipped in the dump itself, recompressed, and the manifest's stored size and sha256 made to match
    (so the checksum pass is fooled): the raw sha256 checked while the dump streams into ``neo4j-admin database
    load`` refuses it; the one-off load container and the scratch volume are removed."""
    import hashlib

    import zstandard

    bid, path = _copy_backup(dump_backup, tmp_path / "stored")
    obj = tmp_path / "stored" / bid / "neo4j.dump.zst"
    raw = bytearray(obj.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    obj.write_bytes(bytes(raw))
    with pytest.raises(BackupIntegrityError, match="neo4j.dump.zst does not match its manifest"):
        verify_helix_backup(env="local", descriptor=str(helix_stack["path"]), backup_id=bid,
                            storage_path=str(tmp_path / "stored"), engine_url=engine.base_url,
                            container_labels=bed.container_labels())
    m = LocalStore(tmp_path / "stored").read_manifest(bid)
    assert not m.verified and m.verification.ok is False
    assert [line.split(":")[0] for line in m.verification.checks] == ["checksums"]
    _nothing_left(docker_client, bed)

    bid, path = _copy_backup(dump_backup, tmp_path / "raw")
    entry = dump_backup["manifest"].object("neo4j.dump.zst")
    assert entry.encryption == "none" and entry.compression == "zstd"
    obj = tmp_path / "raw" / bid / "neo4j.dump.zst"
    dump = bytearray(b"".join(LocalStore(tmp_path / "raw").raw_chunks(bid, entry)))
    assert len(dump) == entry.raw_size and hashlib.sha256(dump).hexdigest() == entry.raw_sha256
    dump[len(dump) // 2] ^= 0x01
    stored = zstandard.ZstdCompressor().compress(bytes(dump))
    obj.write_bytes(stored)
    data = json.loads(path.read_text())
    for o in data["objects"]:
        if o["name"] == "neo4j.dump.zst":
            o["size"], o["sha256"] = len(stored), hashlib.sha256(stored).hexdigest()
    data["verification"] = None
    path.write_text(json.dumps(data))
    store = LocalStore(tmp_path / "raw")
    assert store.verify(bid)  # the stored bytes match the (doctored) manifest: only the content check can tell

    with pytest.raises(BackupIntegrityError) as refused:
        verify_helix_backup(env="local", descriptor=str(helix_stack["path"]), backup_id=bid,
                            storage_path=str(tmp_path / "raw"), engine_url=engine.base_url,
                            container_labels=bed.container_labels())
    assert "neo4j-load: the dump does not load" in str(refused.value)
    assert "decompresses to other content than was backed up" in str(refused.value)
    m = store.read_manifest(bid)
    assert not m.verified and m.verification.ok is False and m.verification.by == TOOL
    lines = {line.split(":")[0]: line for line in m.verification.checks}
    assert ": ok in " in lines["checksums"] and ": FAILED in " in lines["neo4j-load"]
    assert "neo4j-admin-check" not in lines and "neo4j-counts" not in lines  # nothing loaded, nothing counted
    report = _artifact("helix-backup-verify-local")
    assert "| neo4j-load | **FAIL** |" in report and "scratch containers and volumes removed" in report
    _nothing_left(docker_client, bed)


def test_check_verdicts_from_the_tools_output():
    """The parsers on the tools' own wording (exit 0 seen on the bed above; the failure texts as Neo4j 5 and
    Redis 7 print them)."""
    from helix_ops.backup import RedisInfo
    from tasks.verify import compare_redis, neo4j_check_verdict, parse_check_rdb

    assert neo4j_check_verdict(0, "....................  10%\n. 100%\n") == (True, "exit 0: the store is consistent")
    ok, line = neo4j_check_verdict(1, "....................  10%\nDatabase 'neo4j' is inconsistent: 3 errors found\n"
                                      "See '/tmp/inconsistencies-2026-11-29.report' for a detailed report.\n")
    assert not ok and "exit 1" in line and "inconsistent" in line and "inconsistencies-2026-11-29.report" in line
    with pytest.raises(DriverError, match="did not finish"):
        neo4j_check_verdict(1, "java.lang.OutOfMemoryError: Java heap space")
    rdb = parse_check_rdb(0, "[offset 0] Checking RDB file dump.rdb\n[offset 1] \\o/ RDB looks OK! \\o/\n"
                             "[info] 12 keys read\n[info] 3 expires\n[info] 2 already expired\n")
    assert rdb == {"ok": True, "keys": 12, "expires": 3, "already_expired": 2,
                   "tail": "[info] 12 keys read | [info] 3 expires | [info] 2 already expired"}
    info = RedisInfo(strategy="redis-cli-rdb", server_version="7.0.15", keys=12, keys_by_db={"db0": 12},
                     rdb_check="RDB looks OK (12 keys read)")
    assert compare_redis(info, rdb, {"keys": 10, "keys_by_db": {"db0": 10}}) == []  # 2 expired since the backup
    assert compare_redis(info, rdb, {"keys": 9, "keys_by_db": {"db0": 9}}) == [
        "keys: the scratch server loaded 9, the RDB holds 12 (2 already expired)"]
    assert not parse_check_rdb(1, "--- RDB ERROR DETECTED ---\n[info] 0 keys read\n")["ok"]
