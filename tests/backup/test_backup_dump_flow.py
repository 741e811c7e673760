"""backup-helix with ``neo4j_strategy="dump"`` and restore-helix of that dump against the session's deployed local
stack (``helix_stack``): Neo4j's container is stopped, ``neo4j-admin database dump`` / ``load`` runs in a one-off
container on its data volume, Neo4j is started again and health-checked, the downtime is measured. Also: a
failure inside the one-off container still restarts Neo4j and leaves no one-off container; a missing image
stops nothing. The tests run in file order (the restore uses the first test's backup); the module's data is
removed at teardown (other modules share the stack)."""

from __future__ import annotations

import json

import pytest

from drivers.storage import LocalStore
from flows.backup import backup_helix
from flows.restore import restore_helix

pytestmark = pytest.mark.bed

PROBES = 30


def _secrets(deployed):
    from blocks.secrets import load_environment_secrets
    from helix_ops.descriptor import load_descriptor

    return load_environment_secrets(load_descriptor(deployed["path"]))


def _engine_driver(engine, deployed):
    from drivers.engine import EngineDriver

    return EngineDriver.connect(engine.base_url, deployed["project"], "local")


def _neo4j_container(engine, deployed):
    running = [c for c in _engine_driver(engine, deployed).containers("neo4j") if c.status == "running"]
    assert len(running) == 1, running
    return running[0]


def _started_at(container) -> str:
    """When the engine last started ``container`` (its own timestamp text: equal means not restarted)."""
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def _query(engine, deployed, cypher: str, **params):
    """Run ``cypher`` on the environment's Neo4j through its *current* published port (it was restarted)."""
    import neo4j

    secrets = _secrets(deployed)
    driver = _engine_driver(engine, deployed)
    host, port = driver.probe_address(_neo4j_container(engine, deployed), 7687)
    with neo4j.GraphDatabase.driver(f"bolt://{host}:{port}", auth=(secrets.neo4j_user,
                                                                   secrets.neo4j_password.get_secret_value())) as drv:
        return drv.execute_query(cypher, params).records


def _count(engine, deployed, cypher: str) -> int:
    return _query(engine, deployed, cypher)[0]["c"]


def _running(engine, deployed, service):
    return [c.name for c in _engine_driver(engine, deployed).containers(service) if c.status == "running"]


def _one_offs(engine, deployed) -> list[str]:
    """Every one-off (scratch) container of this project's Neo4j dump/load runs still on the engine."""
    from drivers.engine_scratch import SCRATCH_LABEL, SCRATCH_PREFIX

    client = _engine_driver(engine, deployed).client
    return sorted(c.name for c in client.containers.list(all=True, filters={"label": [SCRATCH_LABEL]})
                  if c.name.startswith(f"{SCRATCH_PREFIX}-{deployed['project']}-admin-"))


@pytest.fixture(scope="module")
def deployed(helix_stack, engine):
    """The session's stack with this module's probe data (removed again at teardown)."""
    state = dict(helix_stack)
    _query(engine, state, "UNWIND range(1, $n) AS i CREATE (:DumpProbe {i: i, name: 'probe-' + toString(i), "
                          "at: datetime('2024-03-31T02:30:00[Europe/Berlin]')})", n=PROBES)
    _query(engine, state, "MATCH (a:DumpProbe {i: 1}), (b:DumpProbe {i: 2}) CREATE (a)-[:DUMP_PROBES {w: 1.5}]->(b)")
    state["probe_at"] = _query(engine, state, "MATCH (a:DumpProbe {i: 1}) RETURN toString(a.at) AS at")[0]["at"]
    yield state
    _query(engine, state, "MATCH (n) WHERE n:DumpProbe OR n:AfterDump DETACH DELETE n")


@pytest.fixture(scope="module")
def backup_store(tmp_path_factory):
    return tmp_path_factory.mktemp("dump-backups")


def _artifact(key: str) -> str:
    from prefect.artifacts import Artifact

    art = Artifact.get(key)
    assert art is not None, key
    return str(art.data)


def test_backup_with_the_dump_strategy(deployed, engine, backup_store):
    nodes = _count(engine, deployed, "MATCH (n) RETURN count(n) AS c")
    rels = _count(engine, deployed, "MATCH ()-[r]->() RETURN count(r) AS c")
    before_start = _started_at(_neo4j_container(engine, deployed))

    result = backup_helix(env="local", descriptor=str(deployed["path"]), engine_url=engine.base_url,
                          storage_path=str(backup_store), neo4j_strategy="dump")
    bid = result["backup_id"]
    deployed.update(dump_backup_id=bid, nodes=nodes, rels=rels)

    manifest = json.loads((backup_store / bid / "manifest.json").read_text())
    n = manifest["neo4j"]
    assert n["strategy"] == "dump" and n["tool"].startswith("neo4j-admin database dump")
    assert n["downtime_s"] > 0 and n["writer_paused"] is True and n["warnings"] == []
    assert n["nodes"] == nodes >= PROBES and n["relationships"] == rels >= 1
    assert n["labels"]["DumpProbe"] == PROBES and n["relationship_types"]["DUMP_PROBES"] == 1
    kinds = {o["name"]: o["kind"] for o in manifest["objects"]}
    assert kinds == {"neo4j.dump.zst": "dump", "redis.rdb.zst": "rdb"}
    dump = [o for o in manifest["objects"] if o["name"] == "neo4j.dump.zst"][0]
    assert dump["raw_size"] > 1000 and len(dump["sha256"]) == 64
    assert manifest["verification"]["ok"] is True
    # the dump is what neo4j-admin wrote: it starts with a dump format's magic, not JSON lines
    head = next(LocalStore(backup_store).raw_chunks(bid, LocalStore(backup_store).read_manifest(bid)
                                                    .object("neo4j.dump.zst")))
    assert not head.startswith(b"{") and len(head) > 0

    window = result["writer_window"]
    assert window["neo4j_strategy"] == "dump" and window["neo4j_downtime_s"] == n["downtime_s"]
    assert window["paused"] and "mcp-graph" in window["containers"][0]
    assert window["seconds"] >= n["downtime_s"]  # Neo4j was down inside the writer window
    assert f"Neo4j downtime: {n['downtime_s']:.1f}s" in _artifact("helix-backup-local")

    # Neo4j was really stopped and started again, and answers; the writer runs again; no one-off is left
    after_start = _started_at(_neo4j_container(engine, deployed))
    assert after_start != before_start
    assert _count(engine, deployed, "MATCH (n:DumpProbe) RETURN count(n) AS c") == PROBES
    assert _running(engine, deployed, "mcp-graph") == window["containers"]
    assert _one_offs(engine, deployed) == []


def test_restore_of_the_dump_brings_the_graph_back(deployed, engine, backup_store):
    bid = deployed["dump_backup_id"]
    _query(engine, deployed, "MATCH (n:DumpProbe) WHERE n.i >= 26 DETACH DELETE n")
    _query(engine, deployed, "MATCH (n:DumpProbe {i: 1}) SET n.name = 'changed'")
    _query(engine, deployed, "CREATE (:AfterDump {x: 1})")
    changed = _count(engine, deployed, "MATCH (n) RETURN count(n) AS c")
    assert changed == deployed["nodes"] - 5 + 1

    result = restore_helix(env="local", descriptor=str(deployed["path"]), engine_url=engine.base_url,
                           storage_path=str(backup_store), backup_id=bid, components=["neo4j"])
    assert result["backup_id"] == bid and result["problems"] == [] and result["restored"] == ["neo4j"]
    assert result["neo4j_downtime_s"] > 0
    assert result["counts"]["neo4j"]["nodes"] == deployed["nodes"]
    assert result["counts"]["neo4j"]["relationships"] == deployed["rels"]
    report = _artifact("helix-restore-local")
    assert f"Neo4j downtime: {result['neo4j_downtime_s']:.1f}s" in report and ": OK" in report

    assert _count(engine, deployed, "MATCH (n) RETURN count(n) AS c") == deployed["nodes"]
    assert _count(engine, deployed, "MATCH (n:DumpProbe) RETURN count(n) AS c") == PROBES
    assert _count(engine, deployed, "MATCH (n:AfterDump) RETURN count(n) AS c") == 0
    probe = _query(engine, deployed, "MATCH (a:DumpProbe {i: 1})-[r:DUMP_PROBES]->(b:DumpProbe {i: 2}) "
                                     "RETURN a.name AS name, toString(a.at) AS at, r.w AS w")
    assert [(p["name"], p["at"], p["w"]) for p in probe] == [("probe-1", deployed["probe_at"], 1.5)]
    assert "Europe/Berlin" in deployed["probe_at"]
    # the safety backup (logical, online: the writer already stopped) holds the state the restore replaced
    safety = LocalStore(backup_store).read_manifest(result["safety_backup_id"])
    assert safety.safety_for == bid and safety.verified and safety.neo4j.nodes == changed
    assert _running(engine, deployed, "mcp-graph")
    assert _one_offs(engine, deployed) == []


def test_a_failing_one_off_still_restarts_neo4j_and_a_missing_image_stops_nothing(deployed, engine):
    from drivers.neo4j_offline import EngineNeo4j, dump_offline
    from helix_ops.errors import CommandFailed, DriverError

    secrets = _secrets(deployed)
    driver = _engine_driver(engine, deployed)
    writers = driver.stop_service("mcp-graph")  # as the flow does: no writer while Neo4j is down
    try:
        started = _started_at(_neo4j_container(engine, deployed))
        missing = EngineNeo4j(driver, secrets.neo4j_user, secrets.neo4j_password,
                              image="localhost/helix-neo4j:no-such-tag")
        with pytest.raises(DriverError, match="no-such-tag"):
            dump_offline(missing, lambda b: None)
        assert _started_at(_neo4j_container(engine, deployed)) == started  # never stopped: no downtime

        got: list[bytes] = []
        failing = EngineNeo4j(driver, secrets.neo4j_user, secrets.neo4j_password)
        with pytest.raises(CommandFailed) as err:  # neo4j-admin fails inside the one-off: no such database
            dump_offline(failing, got.append, database="nosuchdb")
        assert err.value.rc != 0 and "dump" in err.value.argv and got == []
        assert failing.admin_seconds > 0  # the one-off container ran
        assert _started_at(_neo4j_container(engine, deployed)) != started  # stopped, then started again
        assert failing.health == "bolt login ok"
        assert _count(engine, deployed, "MATCH (n:DumpProbe) RETURN count(n) AS c") == PROBES
        assert _one_offs(engine, deployed) == []
    finally:
        driver.start_containers(writers)
    assert _running(engine, deployed, "mcp-graph") == writers
