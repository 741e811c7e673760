"""The issue's round trip at its size, on real Neo4j 5.26 Community servers: a generated graph of 100k nodes and
200k relationships with every property type (temporal with zones and nanoseconds, durations, 2D/3D cartesian and
WGS-84 points, byte arrays, NaN, lists, odd labels and types) plus constraints and indexes, through each
strategy that runs here (logical over Bolt; physical ``neo4j-admin database dump`` / ``load``) and through both
storages (a local folder and S3Proxy), with equal counts and equal content after the restore.

Cost control (one server for the whole module, generated once, two Neo4j restarts in all):

* each backup stream is written **once** into both storages at the same time (a tee), the two manifests
  must agree on the raw sha256 and size, and both are deep-verified (decompressed, raw sha256 re-checked);
  the restore then reads from one storage (logical from S3, dump from local). Since the restore consumes a
  stream whose raw sha256 equals the other storage's, the other storage would give the same result;
* content is compared by ``bench.graphgen.content_digest``: an order-independent sum of per-node and
  per-relationship sha256 over the streamed records (endpoints by uid), plus the schema statements; counts
  come with it;
* the logical restore goes into the same server after an explicit wipe (checked empty: no node, no
  constraint, no index but the lookup ones), so no second server has to start.

The small format checks (tags, truncation, codec) of the logical strategy live here too, on the same servers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import secrets
import time

import pytest

from bench.graphgen import content_digest, generate
from drivers.logical_format import FORMAT, read_records
from drivers.neo4j_export import export_logical
from drivers.neo4j_load import graph_counts, load_logical
from drivers.neo4j_offline import dump_offline, load_offline
from drivers.neo4j_values import decode_value, encode_value, split_props
from drivers.storage import LocalStore, S3Store, s3_client
from helix_ops.backup import Manifest, new_backup_id
from helix_ops.errors import BackupIntegrityError, DriverError
from testbed.neo4j import HostNeo4j

# At the size the module needs more than the suite's 600 s per test on a loaded 2-core machine (the
# generation alone took 6-8 min there): see docs/backup.md, "Test time".
pytestmark = [pytest.mark.bed, pytest.mark.timeout(3600)]

# HELIX_ROUNDTRIP_NODES sets the size (relationships are always twice the nodes). The issue asks for 100k /
# 200k, which passes by hand (12 min on a quiet machine, docs/backup.md); the suite runs 12k / 24k (a multiple
# of 3: the label counts; six of the loader's 2,000-row batches) to keep CI's time down. (An early 100k wipe ran out of heap: the bed's servers then
# ran with 96 MiB, not the 512 MiB of their conf; fixed in testbed/neo4j.py.)
NODES = int(os.environ.get("HELIX_ROUNDTRIP_NODES", "12000"))
RELS = 2 * NODES
NOW = dt.datetime(2025, 3, 10, 2, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def source(bed):
    server = bed.new_neo4j("roundtrip")
    t0 = time.monotonic()
    generate(server.uri, server.user, server.password, nodes=NODES, rels=RELS, batch=2000)
    t1 = time.monotonic()
    digest = content_digest(server.uri, server.user, server.password)
    print(f"generated {NODES}/{RELS} in {t1 - t0:.0f}s, digest in {time.monotonic() - t1:.0f}s")
    yield server, digest
    server.stop()


@pytest.fixture(scope="module")
def stores(bed, tmp_path_factory):
    s3 = bed.s3()
    bucket = "rt-" + secrets.token_hex(4)
    s3.client().create_bucket(Bucket=bucket)
    return (LocalStore(tmp_path_factory.mktemp("rt-local")),
            S3Store(s3_client(s3.endpoint, s3.access_key, s3.secret_key), bucket, "helix/rt"))


def tee_backup(stores, name: str, kind: str, produce) -> tuple[str, list[Manifest], object]:
    """Run ``produce(write)`` once, writing the same bytes into one backup in every store."""
    bid = new_backup_id("test", dt.datetime.now(dt.UTC))
    with contextlib.ExitStack() as outer:
        writers = [outer.enter_context(s.begin(bid)) for s in stores]
        with contextlib.ExitStack() as inner:
            objs = [inner.enter_context(w.object(name, component="neo4j", kind=kind)) for w in writers]

            def write(data: bytes) -> None:
                for o in objs:
                    o.write(data)

            result = produce(write)
        manifests = [w.commit(Manifest(backup_id=bid, environment="test", project="helix", created_at=NOW,
                                       finished_at=NOW, duration_s=0.0, tool="tests", components=("neo4j",),
                                       objects=())) for w in writers]
    local, s3 = manifests
    assert local.objects == s3.objects  # same stored bytes, same raw content, in both storages
    for store in stores:
        assert store.verify(bid, deep=True) == [f"{name}: {local.objects[0].size} bytes, sha256 ok, content ok"]
    return bid, manifests, result


def test_logical_round_trip_through_both_storages(source, stores):
    server, want = source
    assert (want["nodes"], want["relationships"]) == (NODES, RELS)
    bid, (m, _), stats = tee_backup(
        stores, "neo4j.jsonl.zst", "logical",
        lambda write: export_logical(server.uri, server.user, server.password, write))
    assert (stats.nodes, stats.relationships, stats.constraints, stats.indexes) == (NODES, RELS, 1, 3)

    local, s3 = stores
    # the format: header, every property type tagged, end record (read from the local copy, first lines only)
    with local.open_raw(bid, m.objects[0]) as f:
        header = json.loads(f.readline())
        node = json.loads(f.readline())
    assert header["format"] == FORMAT and header["version"] == 2 and header["server_version"].startswith("5.26")
    assert node["p"]["uid"] == "cpe-0"
    tags = {k: next(iter(v)) for k, v in node["p"].items() if isinstance(v, dict)}
    assert tags == {"created": "$date", "seen": "$dt", "at_offset": "$dt", "at_utc": "$dt", "local_dt": "$ldt",
                    "t": "$time", "lt": "$ltime", "d": "$dur", "p2": "$pt", "p3": "$pt", "geo": "$pt",
                    "geo3": "$pt", "blob": "$b", "nan": "$f"}
    # version 2: a zoned datetime as Neo4j writes it, offset and zone (no DST ambiguity)
    assert node["p"]["seen"]["$dt"].endswith("[Europe/Berlin]") and "z" not in node["p"]["seen"]
    assert node["p"]["seen"]["$dt"][19:].startswith((".", "+", "-"))  # fraction or offset before the zone
    assert node["p"]["big"] == 9007199254740993

    with pytest.raises(DriverError, match="refusing to load over them"):  # never over data without wipe
        load_logical(server.uri, server.user, server.password, io.BytesIO(b""))
    import neo4j

    from drivers.neo4j_load import wipe_database

    with neo4j.GraphDatabase.driver(server.uri, auth=(server.user, server.password)) as drv:
        wipe_database(drv)
    empty = graph_counts(server.uri, server.user, server.password)
    assert (empty["nodes"], empty["relationships"], empty["constraints"], empty["indexes"]) == (0, 0, 0, 0)
    target = server
    loaded = load_logical(target.uri, target.user, target.password, s3.open_raw(bid, m.objects[0]))
    assert (loaded.nodes, loaded.relationships, loaded.constraints, loaded.indexes) == (NODES, RELS, 1, 3)
    assert content_digest(target.uri, target.user, target.password) == want
    counts = graph_counts(target.uri, target.user, target.password)
    third = NODES // 3
    assert counts["labels"] == {"Entity": NODES, "Claim": NODES - 2 * third, "Source": third,
                                "Odd Label": third, "Weird`Label": third}
    assert counts["relationship_types"] == {"SUPPORTS": RELS // 2, "DERIVED FROM": RELS // 2}
    # no trace of the restore machinery, and the constraint is live again
    assert target.query("MATCH (n:__HelixRestore) RETURN count(n) AS c") == [{"c": 0}]
    assert target.query("MATCH (n) WHERE n.__hx IS NOT NULL RETURN count(n) AS c") == [{"c": 0}]
    with pytest.raises(Exception, match="already exists"):
        target.query("CREATE (:Entity {uid: 'cpe-1'})")


def test_dump_and_load_round_trip_through_both_storages(source, stores, tmp_path):
    """Community physical: offline dump of the server (after the logical round trip it holds the generated
    content), a change, then the offline load brings the dumped content back; downtime measured for both."""
    target, want = source
    host = HostNeo4j(target, tmp_path / "work")
    bid, (m, _), dumped = tee_backup(stores, "neo4j.dump", "neo4j-admin-dump",
                                     lambda write: dump_offline(host, write))
    assert dumped.dump_bytes == m.objects[0].raw_size > 0 and dumped.downtime_s > 0
    target.query("MATCH (n:Entity {i: 7}) DETACH DELETE n")
    target.query("CREATE (:AfterDump {x: 1})")
    local = stores[0]
    loaded = load_offline(host, local.raw_chunks(bid, m.objects[0]), m.objects[0].raw_size)
    assert loaded.downtime_s > 0
    assert content_digest(target.uri, target.user, target.password) == want


EDGE_CYPHER = """
CREATE (a:Edge {`weird, "key"`: 'v', ml: $ml, pad: ' pad ', empty: '', neg: duration({months: -3, days: 2}),
               neg2: duration({seconds: -5, nanoseconds: -500000000}), z: -0.0, tiny: 5e-324, inf: 1.0 / 0.0,
               strs: ['a, b', ' c ', $quote], blobs: $blob, pts: [point({x: 1.0, y: 2.0}), point({x: -0.0, y: 1e-05})],
               geo: point({longitude: -180.0, latitude: -90.0}), ts: [datetime('2024-10-27T02:30:00+01:00[Europe/Berlin]')]})
       -[:BARE]->(b {solo: true})
"""


def test_logical_round_trip_through_the_importer(source, stores, tmp_path):
    """The logical export back through ``neo4j-admin database import`` (offline, into the stopped server),
    with the edge values CSV makes hard (keys with commas and quotes, line breaks, empty and padded strings,
    negative durations, -0.0, 5e-324, Infinity, a node without labels, a relationship without properties);
    then an export the importer cannot carry exactly is refused before Neo4j is touched."""
    from drivers.neo4j_import import ImportUnsupported, import_logical

    target, _ = source
    target.query(EDGE_CYPHER, ml='line1\nline2\r\n"x"', quote='say "hi"', blob=b"\x00\xff\x7f\x80")
    want = content_digest(target.uri, target.user, target.password)
    bid, (m, _), stats = tee_backup(
        stores, "neo4j.jsonl.zst", "logical",
        lambda write: export_logical(target.uri, target.user, target.password, write))
    assert (stats.nodes, stats.relationships) == (want["nodes"], want["relationships"]) == (NODES + 2, RELS + 1)
    target.query("MATCH (n:Entity {i: 8}) DETACH DELETE n")  # changes the import must undo
    target.query("CREATE (:AfterExport {x: 1})")
    host = HostNeo4j(target, tmp_path / "work")
    logs: list[str] = []
    r = import_logical(host, stores[1].open_raw(bid, m.objects[0]), tmp_path / "csv", target.uri, target.user,
                       target.password, log=logs.append)
    assert (r.stats.nodes, r.stats.relationships, r.stats.constraints, r.stats.indexes) == (NODES + 2, RELS + 1, 1, 3)
    assert r.physical.downtime_s > 0 and r.csv_bytes > 0 and not (tmp_path / "csv").exists()
    assert any("converted" in line and "CSV files" in line for line in logs)
    assert content_digest(target.uri, target.user, target.password) == want
    with pytest.raises(Exception, match="already exists"):  # the constraint is live again
        target.query("CREATE (:Entity {uid: 'cpe-1'})")
    assert target.query("MATCH (n:AfterExport) RETURN count(n) AS c") == [{"c": 0}]

    # an empty list: the importer would read it as "no property": refused while converting, Neo4j untouched
    target.query("CREATE (:Edge {nothing: []})")
    buf = io.BytesIO()
    export_logical(target.uri, target.user, target.password, buf.write)
    proc = target.proc
    with pytest.raises(ImportUnsupported, match="empty list"):
        import_logical(host, io.BytesIO(buf.getvalue()), tmp_path / "csv2", target.uri, target.user,
                       target.password)
    assert target.proc is proc and target.query("MATCH (n:Edge) RETURN count(n) AS c") == [{"c": 2}]


def test_truncated_or_foreign_exports_are_refused():
    good = [json.dumps({"format": FORMAT, "version": 1}).encode(), b'{"n":0,"l":[],"p":{}}',
            b'{"end":true,"nodes":1,"relationships":0}']
    assert len(list(read_records(good))) == 3
    with pytest.raises(BackupIntegrityError, match="truncated"):
        list(read_records(good[:2]))
    v1 = [json.dumps({"format": FORMAT, "version": 1}).encode(), *good[1:]]  # version 1 exports stay readable
    assert len(list(read_records(v1))) == 3
    with pytest.raises(BackupIntegrityError, match="version 3 is not supported.*reads versions 1, 2"):
        list(read_records([json.dumps({"format": FORMAT, "version": 3}).encode()]))
    with pytest.raises(BackupIntegrityError, match="not a helix"):
        list(read_records([b'{"n":0}']))
    with pytest.raises(BackupIntegrityError, match="not JSON"):
        list(read_records([good[0], b"{nope"]))


@pytest.mark.parametrize("value", [
    None, True, 0, -(2**63), 2**63 - 1, 1.5, float("inf"), "", "☃", b"", b"\x00\xff", [1, 2], ["a"], [b"x"],
])
def test_codec_round_trip_plain_values(value):
    assert decode_value(json.loads(json.dumps(encode_value(value)))) == value


def test_load_side_split_sends_temporal_text_to_the_server_in_both_format_versions():
    plain, typed = split_props({
        "s": "x", "n": 1, "nan": {"$f": "nan"}, "blob": {"$b": "AAE="}, "ints": [1, 2],
        "v1": {"$dt": "2024-10-27T01:30:00", "z": "Europe/London"},  # version 1: local time + zone
        "v2": {"$dt": "2024-10-27T01:30:00Z[Europe/London]"},  # version 2: Neo4j's text
        "days": [{"$date": "2024-01-01"}, {"$date": "-0001-12-31"}],
        "d": {"$dur": [14, -3, -1, 5]}, "p": {"$pt": 4979, "c": [1.0, 2.0, 3.0]},
    })
    assert plain["s"] == "x" and plain["ints"] == [1, 2] and plain["blob"] == b"\x00\x01"
    assert plain["nan"] != plain["nan"]  # NaN decoded here: Cypher has no literal for it
    assert typed == [["v1", "dt", "2024-10-27T01:30:00[Europe/London]"],
                     ["v2", "dt", "2024-10-27T01:30:00Z[Europe/London]"],
                     ["days", "date[]", ["2024-01-01", "-0001-12-31"]],
                     ["d", "dur", [14, -3, -1, 5]],
                     ["p", "pt", {"srid": 4979, "x": 1.0, "y": 2.0, "z": 3.0}]]
    with pytest.raises(BackupIntegrityError, match="mixed types"):
        split_props({"bad": [{"$date": "2024-01-01"}, {"$ldt": "2024-01-01T00:00"}]})
    with pytest.raises(BackupIntegrityError, match="unknown point srid"):
        split_props({"bad": {"$pt": 1, "c": [0, 0]}})
