"""backup-helix, verify-helix-backup and restore-helix in-process (Prefect's test harness) against one real
deployed local stack (deployed once for the module; the tests run in file order and share its backup)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivers.storage import LocalStore
from flows.backup import backup_helix
from flows.restore import restore_helix
from flows.verify_backup import verify_helix_backup
from helix_ops.errors import BackupIntegrityError

pytestmark = pytest.mark.bed


@pytest.fixture(scope="module")
def deployed(helix_stack):
    """The session's deployed local stack (``tests/backup/conftest.py``), with this module's own notes."""
    return dict(helix_stack)


@pytest.fixture(scope="module")
def backup_store(tmp_path_factory):
    return tmp_path_factory.mktemp("backups")


def _endpoint(deployed, service: str) -> tuple[str, int]:
    row = [r for r in deployed["result"]["status"] if r["service"] == service][0]
    host, port = row["endpoint"].rsplit(":", 1)
    return host, int(port)


def test_backup_then_verify_then_a_flipped_byte_is_refused(deployed, engine, backup_store, tmp_path):
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
                          storage_path=str(backup_store))
    bid = result["backup_id"]
    deployed.update(backup_id=bid, counts=result["counts"])
    assert set(result) == {"backup_id", "components", "objects", "counts", "duration", "writer_window"}
    assert result["components"] == ["neo4j", "redis"]
    window = result["writer_window"]
    assert window["paused"] and len(window["containers"]) == 1 and "mcp-graph" in window["containers"][0]
    # no strategy named (descriptor: auto): picked by the edition the running server reports
    assert window["neo4j_strategy"] == "logical"
    assert window["neo4j_strategy_why"] == "logical on Neo4j community (picked by edition)"
    assert _running(engine, deployed, "mcp-graph") == window["containers"]  # started again
    by_name = {o["name"]: o for o in result["objects"]}
    assert set(by_name) == {"neo4j.jsonl.zst", "redis.rdb.zst"}
    assert all(len(o["sha256"]) == 64 for o in by_name.values())
    assert result["counts"]["neo4j"] == {"nodes": nodes, "relationships": rels}
    assert nodes >= 25 and rels >= 1
    assert result["counts"]["redis"]["keys"] == keys >= 41

    manifest = json.loads((backup_store / bid / "manifest.json").read_text())
    assert {o["name"]: o["sha256"] for o in manifest["objects"]} == {n: o["sha256"] for n, o in by_name.items()}
    assert manifest["neo4j"]["nodes"] == nodes and manifest["redis"]["keys"] == keys
    assert manifest["redis"]["rdb_check"].startswith("RDB looks OK")
    assert manifest["verification"]["ok"] is True
    assert manifest["neo4j"]["writer_paused"] is True and manifest["neo4j"]["warnings"] == []
    text = (backup_store / bid / "manifest.json").read_text()
    for secret in (secrets.neo4j_password, secrets.redis_password):
        assert secret.get_secret_value() not in text
        assert secret.get_secret_value() not in json.dumps(result)

    ok = verify_helix_backup(env="local", descriptor=str(deployed["path"]), storage_path=str(backup_store),
                             restore=False)
    assert ok["backup_id"] == bid and ok["ok"]
    ok = verify_helix_backup(env="local", descriptor=str(deployed["path"]), backup_id=bid,
                             storage_path=str(backup_store), deep=True, restore=False)
    assert ok["ok"]

    import shutil

    shutil.copytree(backup_store / bid, tmp_path / bid)  # flip a byte in a copy: the next tests restore this one
    stored = tmp_path / bid / "redis.rdb.zst"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    with pytest.raises(BackupIntegrityError, match="redis.rdb.zst"):
        verify_helix_backup(env="local", descriptor=str(deployed["path"]), backup_id=bid,
                            storage_path=str(tmp_path), restore=False)


def _counts(deployed):
    import neo4j
    import redis

    from blocks.secrets import load_environment_secrets
    from helix_ops.descriptor import load_descriptor

    secrets = load_environment_secrets(load_descriptor(deployed["path"]))
    nhost, nport = _endpoint(deployed, "neo4j")
    rhost, rport = _endpoint(deployed, "redis")
    user = secrets.redis_username if secrets.redis_username not in ("", "default") else None
    drv = neo4j.GraphDatabase.driver(f"bolt://{nhost}:{nport}",
                                     auth=(secrets.neo4j_user, secrets.neo4j_password.get_secret_value()))
    r = redis.Redis(host=rhost, port=rport, username=user, password=secrets.redis_password.get_secret_value())
    return drv, r


def _running(engine, deployed, service):
    from drivers.engine import EngineDriver

    d = EngineDriver.connect(engine.base_url, deployed["project"], "local")
    return [c.name for c in d.containers(service) if c.status == "running"]


def test_restore_refuses_a_flipped_byte_before_touching_anything(deployed, engine, backup_store, tmp_path):
    import shutil

    bid = deployed["backup_id"]
    bad = tmp_path / "corrupt"
    shutil.copytree(backup_store, bad)
    obj = bad / bid / "neo4j.jsonl.zst"
    data = bytearray(obj.read_bytes())
    data[len(data) // 3] ^= 0x01
    obj.write_bytes(bytes(data))
    drv, r = _counts(deployed)
    with drv, r:
        drv.execute_query("CREATE (:AfterBackup {x: 1})")
        r.set("after-backup", "still here")
        before = drv.execute_query("MATCH (n) RETURN count(n) AS c").records[0]["c"]
        with pytest.raises(BackupIntegrityError, match="neo4j.jsonl.zst"):
            restore_helix(env="local", descriptor=str(deployed["path"]), engine_url=engine.base_url,
                          storage_path=str(bad), backup_id=bid)
        assert drv.execute_query("MATCH (n) RETURN count(n) AS c").records[0]["c"] == before
        assert r.get("after-backup") == b"still here"
    assert [m.backup_id for m in LocalStore(bad).list()] == [bid]  # no safety backup either: nothing touched
    assert _running(engine, deployed, "mcp-graph")


def test_a_bad_strategy_or_load_is_refused_before_anything(deployed, engine, backup_store):
    # the parameters' types (flows/params.py) refuse them before the flow's body runs
    from prefect.exceptions import ParameterTypeError

    before = sorted(p.name for p in backup_store.iterdir())
    running = _running(engine, deployed, "mcp-graph")
    with pytest.raises(ParameterTypeError, match=r"neo4j_strategy: Input should be 'auto', 'logical' or 'dump'"):
        backup_helix(env="local", descriptor=str(deployed["path"]), engine_url=engine.base_url,
                     storage_path=str(backup_store), neo4j_strategy="rsync")
    with pytest.raises(ParameterTypeError, match=r"neo4j_load: Input should be 'import' or 'transactional'"):
        restore_helix(env="local", descriptor=str(deployed["path"]), engine_url=engine.base_url,
                      storage_path=str(backup_store), neo4j_load="fast")
    assert sorted(p.name for p in backup_store.iterdir()) == before
    assert _running(engine, deployed, "mcp-graph") == running


def test_restore_waits_for_the_environment_lease(deployed, engine, backup_store):
    from helix_ops.errors import LockHeld
    from flows.lease import environment_lease

    with environment_lease("local", "a backup holding the lease"):
        with pytest.raises(LockHeld):
            restore_helix(env="local", descriptor=str(deployed["path"]), engine_url=engine.base_url,
                          storage_path=str(backup_store), lease_wait_s=2)


def test_restore_latest_verified_round_trip(deployed, engine, backup_store):
    """Changes after the backup are undone (Neo4j and Redis, TTLs kept), a safety backup holds them, the
    writer runs again, and Redis (AOF on) still has everything after a restart."""
    from drivers.engine import EngineDriver

    bid = deployed["backup_id"]
    drv, r = _counts(deployed)
    with drv, r:
        drv.execute_query("CREATE (:AfterBackup {x: 2})")
        drv.execute_query("MATCH (n:BackupProbe {i: 3}) DETACH DELETE n")
        r.set("backup-probe:0", "changed")
        r.delete("backup-probe:ttl")
        r.set("after-backup-2", "goes away")
    result = restore_helix(env="local", descriptor=str(deployed["path"]), engine_url=engine.base_url,
                           storage_path=str(backup_store))
    assert result["backup_id"] == bid and result["problems"] == []
    assert result["counts"]["neo4j"]["nodes"] == deployed["counts"]["neo4j"]["nodes"]
    assert result["counts"]["neo4j"]["relationships"] == deployed["counts"]["neo4j"]["relationships"]
    assert result["counts"]["redis"]["keys"] == deployed["counts"]["redis"]["keys"]
    assert result["writer_window"]["containers"] and result["writer_window"]["seconds"] > 0
    # the default load is neo4j-admin database import: Neo4j was stopped for it, and the downtime measured
    assert 0 < result["neo4j_downtime_s"] < result["duration"]
    from prefect.artifacts import Artifact

    report = str(Artifact.get("helix-restore-local").data)
    assert "(neo4j-admin database import)" in report and "Neo4j downtime" in report
    from tasks.writer_pause import read_pause

    assert read_pause("local") is None  # the writer-pause record of the restore was cleared
    store = LocalStore(backup_store)
    safety = store.read_manifest(result["safety_backup_id"])
    assert safety.safety_for == bid and safety.neo4j.writer_paused and safety.verified
    # the safety backup holds the state it replaced: two AfterBackup nodes more, one BackupProbe less
    assert safety.neo4j.nodes == deployed["counts"]["neo4j"]["nodes"] + 1
    drv, r = _counts(deployed)
    with drv, r:
        assert drv.execute_query("MATCH (n:AfterBackup) RETURN count(n) AS c").records[0]["c"] == 0
        assert drv.execute_query("MATCH (n:BackupProbe) RETURN count(n) AS c").records[0]["c"] == 25
        assert r.get("backup-probe:0") == b"v0" and r.get("after-backup-2") is None
        assert 0 < r.ttl("backup-probe:ttl") <= 3600
    assert _running(engine, deployed, "mcp-graph")
    # The restored keys are in Redis's AOF: a restart (AOF wins over any RDB) keeps every one.
    d = EngineDriver.connect(engine.base_url, deployed["project"], "local")
    d.start_containers(d.stop_service("redis"))
    _, r = _counts(deployed)
    import time

    with r:
        end = time.monotonic() + 60
        while True:
            try:
                if r.dbsize() == deployed["counts"]["redis"]["keys"]:
                    break
            except Exception:  # noqa: BLE001 - loading
                pass
            assert time.monotonic() < end, "redis did not come back with every key"
            time.sleep(0.5)
        assert r.get("backup-probe:0") == b"v0" and r.ttl("backup-probe:ttl") > 0


def test_restore_falls_back_to_the_transactional_load_when_the_import_cannot_run(deployed, engine, backup_store,
                                                                                 monkeypatch):
    """No image for the one-off neo4j-admin container (or not exactly one running Neo4j): the import is refused
    before anything stops, and the export goes back over Bolt instead, Neo4j up throughout."""
    from drivers.neo4j_offline import EngineNeo4j
    from helix_ops.errors import OfflineUnavailable

    def no_image(self):
        raise OfflineUnavailable(f"image {self.image} for the one-off neo4j-admin container is not on the engine")

    monkeypatch.setattr(EngineNeo4j, "preflight", no_image)
    drv, _ = _counts(deployed)
    with drv:
        drv.execute_query("CREATE (:AfterBackup {x: 3})")
    before = _started_at(engine, deployed, "neo4j")
    result = restore_helix(env="local", descriptor=str(deployed["path"]), engine_url=engine.base_url,
                           storage_path=str(backup_store))
    assert result["problems"] == [] and result["neo4j_downtime_s"] is None
    assert result["counts"]["neo4j"]["nodes"] == deployed["counts"]["neo4j"]["nodes"]
    assert _started_at(engine, deployed, "neo4j") == before  # Neo4j was never stopped
    from prefect.artifacts import Artifact

    assert "import unavailable: image" in str(Artifact.get("helix-restore-local").data)


def _started_at(engine, deployed, service):
    from drivers.engine import EngineDriver

    d = EngineDriver.connect(engine.base_url, deployed["project"], "local")
    return {c.name: c.attrs["State"]["StartedAt"] for c in d.containers(service) if c.status == "running"}


def test_a_restore_the_policy_guards_waits_for_the_backup_id_typed_back(deployed, engine, backup_store, tmp_path,
                                                                         monkeypatch, capsys):
    """An environment whose descriptor says ``approval: {when: on-change, actions: [restore]}``: the restore waits
    (paused: a flow called from Python has no deployment to be rescheduled by) with nothing touched; an approval
    with another backup id typed back is refused and touches nothing; the right id restores, and the change
    record names the approver and the reason."""
    import threading
    import time

    import yaml
    from prefect.client.orchestration import get_client

    from flows.restore import RestoreRefused
    from helix_ops.cli import main as cli

    monkeypatch.setenv("HELIX_OPS_AUDIT_DIR", str(tmp_path / "audit"))
    data = yaml.safe_load(Path(deployed["path"]).read_text())
    data["approval"] = {"when": "on-change", "timeout": "5m", "actions": ["restore"]}
    guarded = tmp_path / "guarded.yaml"
    guarded.write_text(yaml.safe_dump(data, sort_keys=False))
    bid = deployed["backup_id"]
    drv, r = _counts(deployed)
    with drv, r:
        drv.execute_query("CREATE (:AfterApproval {x: 1})")

    def restore(box):
        try:
            box["value"] = restore_helix(env="local", descriptor=str(guarded), engine_url=engine.base_url,
                                         storage_path=str(backup_store), backup_id=bid, neo4j_load="transactional",
                                         safety_backup=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    def waiting_run() -> str:
        end = time.monotonic() + 120
        while time.monotonic() < end:
            with get_client(sync_client=True) as client:
                for run in client.read_flow_runs():
                    if run.state and run.state.is_paused() and run.state.state_details.run_input_keyset:
                        return str(run.id)
            time.sleep(0.5)
        raise AssertionError("the restore did not wait for an approval")

    def after_approval_nodes() -> int:
        drv, _ = _counts(deployed)
        with drv:
            return drv.execute_query("MATCH (n:AfterApproval) RETURN count(n) AS c").records[0]["c"]

    for typed, outcome in (("local-20250102T020000Z-ffffff", "refused"), (bid, "restored")):
        box: dict = {}
        t = threading.Thread(target=restore, args=(box,), daemon=True)
        t.start()
        run_id = waiting_run()
        assert after_approval_nodes() == 1, "nothing is touched while the restore waits"
        assert cli(["approve", run_id, "--reason", f"ticket {outcome}", "--approver", "grace",
                    "--confirm-backup-id", typed]) == 0
        t.join(300)
        assert not t.is_alive()
        if outcome == "refused":
            assert isinstance(box.get("error"), RestoreRefused), box
            assert "is not " + bid in str(box["error"]) and after_approval_nodes() == 1
        else:
            assert "error" not in box, box.get("error")
            assert box["value"]["problems"] == [] and after_approval_nodes() == 0
            assert box["value"]["approval"] == f"approved by grace: ticket {outcome}"
    capsys.readouterr()
    records = [json.loads(line) for line in (tmp_path / "audit" / "local.jsonl").read_text().splitlines()]
    assert [(x["action"], x["result"], x["approval"]["approver"]) for x in records] == \
        [("restore", "refused", "grace"), ("restore", "succeeded", "grace")]
    assert records[1]["approval"]["reason"] == "ticket restored" and records[1]["change"]["backup_id"] == bid
