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

from drivers.engine import SCRATCH_LABEL, ScratchEngine, scratch_leftovers
from drivers.storage import LocalStore
from flows.backup import backup_helix
from flows.verify_backup import TOOL, verify_helix_backup
from helix_ops.errors import BackupIntegrityError, ConfigError, DriverError

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


def _nothing_left(docker_client) -> None:
    assert scratch_leftovers(docker_client) == {"containers": [], "volumes": []}


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
        r.execute_command("SELECT", 1)
        r.set("scratch-probe:db1", "one")
    store = tmp_path_factory.mktemp("verify-backups")
    result = backup_helix(env="local", descriptor=str(helix_stack["path"]), engine_url=engine.base_url,
                          storage_path=str(store))
    return {"store": store, "backup_id": result["backup_id"], "counts": result["counts"]}


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
    assert all(r["seconds"] > 0 for r in result["checks"])
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
    text = (store_dir / bid / "manifest.json").read_text()
    s = _secrets(helix_stack)
    for secret in (s.neo4j_password, s.redis_password):
        assert secret.get_secret_value() not in text and secret.get_secret_value() not in json.dumps(result)
    _nothing_left(docker_client)
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
    _nothing_left(docker_client)


def test_a_scratch_machinery_failure_leaves_the_manifest_alone(helix_stack, engine, bed, scratch_backup,
                                                               docker_client, tmp_path):
    """An image the engine does not have: the error is raised, the manifest keeps its verification, and the
    scratch volume made before the container is gone too."""
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
    _nothing_left(docker_client)
