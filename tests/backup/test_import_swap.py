"""restore through the importer: the import writes a staging store while Neo4j serves the old one, and the
window only swaps stores. A failed import changes nothing; a swapped-in store that does not come up with the
export's counts is swapped back. Against a real Neo4j of the test bed (``HostNeo4j``: the same swap script the
engine's one-off container runs)."""

from __future__ import annotations

import pytest

from drivers.logical_format import read_records
from drivers.neo4j_export import export_logical
from drivers.neo4j_csv import to_csv
from drivers.neo4j_import import import_csv_set
from helix_ops.backup_tools import BEFORE_RESTORE, STAGING_DATABASE, neo4j_store_swap_argv
from helix_ops.errors import ConfigError, DriverError
from testbed.neo4j import HostNeo4j

pytestmark = pytest.mark.bed


@pytest.fixture(scope="module")
def server(bed):
    s = bed.new_neo4j("swap")
    s.query("UNWIND range(1, 300) AS i CREATE (:Item {i: i, at: datetime('2024-01-01T00:00:00Z')})")
    s.query("MATCH (a:Item), (b:Item) WHERE b.i = a.i + 1 CREATE (a)-[:NEXT {w: a.i}]->(b)")
    s.query("CREATE CONSTRAINT item_i FOR (n:Item) REQUIRE n.i IS UNIQUE")
    yield s
    s.stop()


def _csvs(server, tmp_path):
    """The server's export as importer CSV, and a marker written after the export (the restore must remove it
    when it succeeds, and keep it when it fails: the old store is what serves)."""
    server.query("MATCH (n:Marker) DETACH DELETE n")
    out: list[bytes] = []
    export_logical(server.uri, server.user, server.password, out.append)
    csvs = to_csv(read_records(b"".join(out).splitlines(keepends=True)), tmp_path / "csv")
    server.query("MERGE (:Marker {x: 1})")
    return csvs


def _state(server) -> tuple[int, int, int]:
    return (server.query("MATCH (n:Item) RETURN count(n) AS c")[0]["c"],
            server.query("MATCH ()-[r]->() RETURN count(r) AS c")[0]["c"],
            server.query("MATCH (n:Marker) RETURN count(n) AS c")[0]["c"])


def _leftovers(server) -> list[str]:
    data = server.home / "data"
    return [str(p.relative_to(data)) for p in [data / BEFORE_RESTORE, data / "databases" / STAGING_DATABASE,
                                               data / "transactions" / STAGING_DATABASE] if p.exists()]


def test_a_failed_import_changes_nothing_and_leaves_no_staging_store(server, tmp_path):
    csvs = _csvs(server, tmp_path)
    before = _state(server)
    # a relationship to a node id the export does not have: the importer refuses it (zero bad-entry tolerance)
    _, data = csvs.relationships[0]
    with open(csvs.folder / data, "a") as f:
        f.write('"1","999999999","NEXT","1"\n')
    csvs.stats.relationships += 1
    pid_before = server.proc.pid
    with pytest.raises(DriverError, match="was not touched"):
        import_csv_set(HostNeo4j(server, tmp_path / "work"), csvs, server.uri, server.user, server.password)
    assert server.proc.pid == pid_before  # never stopped
    assert _state(server) == before
    assert _leftovers(server) == []


def test_a_store_that_does_not_match_the_export_is_swapped_back(server, tmp_path):
    csvs = _csvs(server, tmp_path)
    before = _state(server)
    assert before[2] == 1
    csvs.stats.nodes += 1  # the counts after the swap will differ from what the export says
    logs: list[str] = []
    with pytest.raises(DriverError, match="previous store is back"):
        import_csv_set(HostNeo4j(server, tmp_path / "work"), csvs, server.uri, server.user, server.password,
                       log=logs.append)
    assert _state(server) == before  # the marker is there: the old store serves again
    assert not (server.home / "data" / BEFORE_RESTORE).exists()  # nothing kept aside: the next restore may run
    assert any("putting the previous store back" in line for line in logs)
    assert not (server.home / "data" / "databases" / STAGING_DATABASE).exists()


def test_a_good_import_is_swapped_in_with_a_short_window(server, tmp_path):
    csvs = _csvs(server, tmp_path)
    items, rels, _ = _state(server)
    r = import_csv_set(HostNeo4j(server, tmp_path / "work"), csvs, server.uri, server.user, server.password)
    assert _state(server) == (items, rels, 0)  # the marker written after the export is gone
    assert r.import_s > 0 and r.physical.downtime_s > 0
    assert (r.stats.constraints, r.stats.nodes) == (1, items)
    assert _leftovers(server) == []
    with pytest.raises(Exception, match="already exists"):  # the constraint is live again
        server.query("CREATE (:Item {i: 1})")


@pytest.mark.parametrize("kept_db", ["neo4j", "other"])
def test_a_store_kept_aside_by_an_interrupted_restore_stops_the_next_one_before_anything_changes(server, tmp_path,
                                                                                                  kept_db):
    """A restore killed between the swap and the clean-up leaves the old store in ``helix-restore-before``: the
    only copy of what Neo4j held before. The next restore must not replace it (its swap would), nor remove it
    (its clean-up removes the whole folder, so any database's store counts): it refuses before the import,
    with Neo4j never stopped, the kept-aside store untouched and its CSV folder removed."""
    csvs = _csvs(server, tmp_path)
    before = _state(server)
    kept = server.home / "data" / BEFORE_RESTORE / "databases" / kept_db
    kept.mkdir(parents=True)
    (kept / "neostore").write_bytes(b"the old store")
    pid_before = server.proc.pid
    try:
        with pytest.raises(DriverError, match="interrupted inside its window") as err:
            import_csv_set(HostNeo4j(server, tmp_path / "work"), csvs, server.uri, server.user, server.password)
        assert f"{BEFORE_RESTORE}/databases/{kept_db}" in str(err.value) and "remov" in err.value.hint
        assert server.proc.pid == pid_before
        assert _state(server) == before
        assert (kept / "neostore").read_bytes() == b"the old store"
        assert not (server.home / "data" / "databases" / STAGING_DATABASE).exists()
        assert not csvs.folder.exists()
    finally:
        import shutil

        shutil.rmtree(server.home / "data" / BEFORE_RESTORE)


def test_swap_argv_checks_its_names():
    argv = neo4j_store_swap_argv("in", "/data", "neo4j")
    assert argv[:2] == ["sh", "-c"] and argv[-4:] == ["/data", "neo4j", STAGING_DATABASE, BEFORE_RESTORE]
    for bad in (("sideways", "/data", "neo4j"), ("in", "data", "neo4j"), ("in", "/data", "../etc"),
                ("in", "/data", STAGING_DATABASE)):
        with pytest.raises(ConfigError):
            neo4j_store_swap_argv(*bad)
