"""The logical Neo4j strategy on real Neo4j 5.26 servers: every property type, labels, relationship types
and the schema round-trip with equal content; the format refuses truncation; memory stays bounded."""

from __future__ import annotations

import io
import json

import pytest
import zstandard

from bench.graphgen import content_digest, generate
from drivers.neo4j_backup import (
    FORMAT,
    decode_value,
    encode_value,
    export_logical,
    graph_counts,
    load_logical,
    read_records,
)
from helix_ops.errors import BackupIntegrityError, DriverError


@pytest.fixture(scope="module")
def source(bed):
    server = bed.new_neo4j("logical-src")
    generate(server.uri, server.user, server.password, nodes=1500, rels=3000, batch=1000)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def target(bed):
    server = bed.new_neo4j("logical-dst")
    yield server
    server.stop()


def export_bytes(server) -> bytes:
    out = io.BytesIO()
    export_logical(server.uri, server.user, server.password, out.write, fetch_size=500, flush_bytes=64 << 10)
    return out.getvalue()


def test_every_property_type_round_trips(source, target):
    data = export_bytes(source)
    lines = data.splitlines()
    header = json.loads(lines[0])
    assert header["format"] == FORMAT and header["version"] == 1 and header["server_version"].startswith("5.26")
    assert json.loads(lines[-1]) == {"end": True, "nodes": 1500, "relationships": 3000}
    node = next(json.loads(x) for x in lines if b'"uid":"cpe-0"' in x)
    tags = {k: next(iter(v)) for k, v in node["p"].items() if isinstance(v, dict)}
    assert tags == {"created": "$date", "seen": "$dt", "at_offset": "$dt", "at_utc": "$dt", "local_dt": "$ldt",
                    "t": "$time", "lt": "$ltime", "d": "$dur", "p2": "$pt", "p3": "$pt", "geo": "$pt",
                    "geo3": "$pt", "blob": "$b", "nan": "$f"}
    assert node["p"]["seen"]["z"] == "Europe/Berlin" and node["p"]["big"] == 9007199254740993

    stats = load_logical(target.uri, target.user, target.password, io.BytesIO(data), batch_size=700, wipe=True)
    assert (stats.nodes, stats.relationships, stats.constraints, stats.indexes) == (1500, 3000, 1, 3)
    assert content_digest(target.uri, target.user, target.password) == \
        content_digest(source.uri, source.user, source.password)
    counts = graph_counts(target.uri, target.user, target.password)
    assert counts["labels"] == {"Entity": 1500, "Claim": 500, "Source": 500, "Odd Label": 500,
                                "Weird`Label": 500}
    assert counts["relationship_types"] == {"SUPPORTS": 1500, "DERIVED FROM": 1500}
    # no trace of the restore machinery
    assert target.query("MATCH (n:__HelixRestore) RETURN count(n) AS c") == [{"c": 0}]
    assert target.query("MATCH (n) WHERE n.__hx IS NOT NULL RETURN count(n) AS c") == [{"c": 0}]
    # the constraint is live again
    with pytest.raises(Exception, match="already exists"):
        target.query("CREATE (:Entity {uid: 'cpe-1'})")


def test_load_refuses_a_non_empty_database_without_wipe(source, target):
    target.query("CREATE (:Leftover {x: 1})")
    with pytest.raises(DriverError, match="refusing to load over them"):
        load_logical(target.uri, target.user, target.password, io.BytesIO(export_bytes(source)))


def test_truncated_or_foreign_exports_are_refused():
    good = [json.dumps({"format": FORMAT, "version": 1}).encode(), b'{"n":0,"l":[],"p":{}}',
            b'{"end":true,"nodes":1,"relationships":0}']
    assert len(list(read_records(good))) == 3
    with pytest.raises(BackupIntegrityError, match="truncated"):
        list(read_records(good[:2]))
    with pytest.raises(BackupIntegrityError, match="version 2"):
        list(read_records([json.dumps({"format": FORMAT, "version": 2}).encode()]))
    with pytest.raises(BackupIntegrityError, match="not a helix"):
        list(read_records([b'{"n":0}']))
    with pytest.raises(BackupIntegrityError, match="not JSON"):
        list(read_records([good[0], b"{nope"]))


@pytest.mark.parametrize("value", [
    None, True, 0, -(2**63), 2**63 - 1, 1.5, float("inf"), "", "☃", b"", b"\x00\xff", [1, 2], ["a"], [b"x"],
])
def test_codec_round_trip_plain_values(value):
    assert decode_value(json.loads(json.dumps(encode_value(value)))) == value

