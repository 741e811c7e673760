"""The physical Community strategy on a real Neo4j 5.26 host server: offline dump and load through the
storage pipeline, with the downtime measured; content equal after the load."""

from __future__ import annotations

import datetime as dt

import pytest

from bench.graphgen import content_digest, generate
from drivers.neo4j_backup import HostNeo4j, dump_offline, load_offline
from drivers.storage import LocalStore
from helix_ops.backup import Manifest, new_backup_id

NOW = dt.datetime(2025, 3, 10, 2, 0, tzinfo=dt.UTC)


def test_dump_and_load_round_trip_with_downtime(bed, tmp_path):
    server = bed.new_neo4j("physical")
    try:
        generate(server.uri, server.user, server.password, nodes=500, rels=1000, batch=500)
        before = content_digest(server.uri, server.user, server.password)
        store = LocalStore(tmp_path / "backups")
        bid = new_backup_id("test", NOW)
        target = HostNeo4j(server, tmp_path / "work")
        with store.begin(bid) as w:
            with w.object("neo4j.dump", component="neo4j", kind="neo4j-admin-dump") as obj:
                result = dump_offline(target, obj.write)
            m = w.commit(Manifest(backup_id=bid, environment="test", project="helix", created_at=NOW,
                                  finished_at=NOW, duration_s=result.downtime_s, tool="tests",
                                  components=("neo4j",), objects=()))
        assert result.dump_bytes == m.objects[0].raw_size > 0 and result.downtime_s > 0
        server.query("MATCH (n) DETACH DELETE n")  # lose everything
        assert content_digest(server.uri, server.user, server.password)["nodes"] == 0
        store.verify(bid)
        entry = m.objects[0]
        loaded = load_offline(target, store.raw_chunks(bid, entry), entry.raw_size)
        assert loaded.downtime_s > 0
        assert content_digest(server.uri, server.user, server.password) == before
    finally:
        server.stop()
