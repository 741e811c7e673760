"""backup-helix and verify-helix-backup in-process (Prefect's test harness) against a real deployed local stack."""

from __future__ import annotations

import json

import pytest

from flows.backup import backup_helix
from flows.verify_backup import verify_helix_backup
from helix_ops.errors import BackupIntegrityError
from testbed.helix import local_descriptor

pytestmark = pytest.mark.bed


@pytest.fixture(scope="module")
def deployed(bed, engine, images, prefect_harness, tmp_path_factory):
    """One full deploy of the local stack (own project and port), removed at the end of the module."""
    from blocks.bootstrap import main as bootstrap
    from drivers.engine import EngineDriver
    from flows.deploy import deploy_helix

    project = f"bk{bed.run_id.split('-')[-1]}"
    path = local_descriptor(tmp_path_factory.mktemp("backup") / "local.yaml", project)
    assert bootstrap(["--descriptor", str(path)]) == 0
    try:
        result = deploy_helix(env="local", descriptor=str(path), engine_url=engine.base_url,
                              container_labels=bed.container_labels())
        assert result["unhealthy"] == []
        yield {"path": path, "project": project, "result": result}
    finally:
        EngineDriver.connect(engine.base_url, project, "local").remove_project()


def _endpoint(deployed, service: str) -> tuple[str, int]:
    row = [r for r in deployed["result"]["status"] if r["service"] == service][0]
    host, port = row["endpoint"].rsplit(":", 1)
    return host, int(port)


def test_backup_then_verify_then_a_flipped_byte_is_refused(deployed, engine, tmp_path):
    import neo4j
    import redis

    from blocks.secrets import load_environment_secrets
    from helix_ops.descriptor import load_descriptor

    secrets = load_environment_secrets(load_descriptor(deployed["path"]))
    nhost, nport = _endpoint(deployed, "neo4j")
    with neo4j.GraphDatabase.driver(f"bolt://{nhost}:{nport}",
                                    auth=(secrets.neo4j_user, secrets.neo4j_password.get_secret_value())) as drv:
        drv.execute_query("UNWIND range(1, 25) AS i CREATE (:BackupProbe {i: i})")
        drv.execute_query("MATCH (a:BackupProbe {i: 1}), (b:BackupProbe {i: 2}) CREATE (a)-[:PROBES]->(b)")
        nodes = drv.execute_query("MATCH (n) RETURN count(n) AS c").records[0]["c"]
        rels = drv.execute_query("MATCH ()-[r]->() RETURN count(r) AS c").records[0]["c"]
    rhost, rport = _endpoint(deployed, "redis")
    user = secrets.redis_username if secrets.redis_username not in ("", "default") else None
    with redis.Redis(host=rhost, port=rport, username=user,
                     password=secrets.redis_password.get_secret_value()) as r:
        for i in range(40):
            r.set(f"backup-probe:{i}", f"v{i}")
        r.set("backup-probe:ttl", "x", ex=3600)
        keys = r.dbsize()

    result = backup_helix(env="local", descriptor=str(deployed["path"]), engine_url=engine.base_url,
                          storage_path=str(tmp_path))
    bid = result["backup_id"]
    assert set(result) == {"backup_id", "objects", "counts", "duration"}
    by_name = {o["name"]: o for o in result["objects"]}
    assert set(by_name) == {"neo4j.jsonl.zst", "redis.rdb.zst"}
    assert all(len(o["sha256"]) == 64 for o in by_name.values())
    assert result["counts"]["neo4j"] == {"nodes": nodes, "relationships": rels}
    assert nodes >= 25 and rels >= 1
    assert result["counts"]["redis"]["keys"] == keys >= 41

    manifest = json.loads((tmp_path / bid / "manifest.json").read_text())
    assert {o["name"]: o["sha256"] for o in manifest["objects"]} == {n: o["sha256"] for n, o in by_name.items()}
    assert manifest["neo4j"]["nodes"] == nodes and manifest["redis"]["keys"] == keys
    assert manifest["redis"]["rdb_check"].startswith("RDB looks OK")
    assert manifest["verification"]["ok"] is True
    text = (tmp_path / bid / "manifest.json").read_text()
    for secret in (secrets.neo4j_password, secrets.redis_password):
        assert secret.get_secret_value() not in text
        assert secret.get_secret_value() not in json.dumps(result)

    ok = verify_helix_backup(env="local", descriptor=str(deployed["path"]), storage_path=str(tmp_path))
    assert ok["backup_id"] == bid and ok["ok"]
    ok = verify_helix_backup(env="local", descriptor=str(deployed["path"]), backup_id=bid,
                             storage_path=str(tmp_path), deep=True)
    assert ok["ok"]

    stored = tmp_path / bid / "redis.rdb.zst"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    with pytest.raises(BackupIntegrityError, match="redis.rdb.zst"):
        verify_helix_backup(env="local", descriptor=str(deployed["path"]), backup_id=bid,
                            storage_path=str(tmp_path))
