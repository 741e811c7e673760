"""restore-helix's pure parts: the count comparison after a restore and the report (no databases)."""

from __future__ import annotations

import datetime as dt

from flows.restore import compare_counts, report_markdown
from helix_ops.backup import Manifest, Neo4jInfo, RedisInfo

NOW = dt.datetime(2025, 3, 10, 2, 0, tzinfo=dt.UTC)
M = Manifest(backup_id="local-20250310T020000Z-a1b2c3", environment="local", project="helix", created_at=NOW,
             finished_at=NOW, duration_s=1.0, tool="t", components=("neo4j", "redis"), objects=(),
             neo4j=Neo4jInfo(strategy="logical", server_version="5.26.0", edition="community", nodes=10,
                             relationships=4, labels={"A": 10}, relationship_types={"R": 4}, constraints=1,
                             indexes=2, writer_paused=True),
             redis=RedisInfo(strategy="redis-cli-rdb", server_version="7.0.15", keys=5, keys_by_db={"db0": 5}))
NEO = {"nodes": 10, "relationships": 4, "labels": {"A": 10}, "relationship_types": {"R": 4}, "constraints": 1,
       "indexes": 2}
RED = {"loaded": {"keys": 5, "expires": 1, "keys_by_db": {"db0": 5}},
       "restored": {"keys": 5, "expires": 1, "keys_by_db": {"db0": 5}}, "rdb_check": "RDB looks OK (5 keys read)"}


def test_equal_counts_pass_and_every_difference_is_named():
    assert compare_counts(M, NEO, RED) == []
    bad_neo = {**NEO, "nodes": 9, "labels": {"A": 9}, "indexes": 1}
    bad_red = {**RED, "restored": {"keys": 4, "expires": 1, "keys_by_db": {"db0": 4}}}
    assert compare_counts(M, bad_neo, bad_red) == [
        "neo4j nodes: backup 10, restored 9", "neo4j labels: backup {'A': 10}, restored {'A': 9}",
        "neo4j indexes: backup 2, restored 1", "redis keys: backup RDB {'db0': 5}, restored {'db0': 4}"]
    assert compare_counts(M, None, None) == []  # components not restored are not compared


def test_report_names_backup_safety_window_and_verdict():
    report = {"approval": "no approval needed in local", "checks": ["a: ok", "b: ok"],
              "safety_backup_id": "local-20250311T020000Z-ffffff", "problems": [], "duration": 12.5,
              "counts": {"neo4j": {k: NEO[k] for k in ("nodes", "relationships", "constraints", "indexes")}},
              "writer_window": {"paused": True, "containers": ["p-mcp-graph-1"], "seconds": 8.25,
                                "started": "2025-03-11T02:00:00+00:00"}}
    text = report_markdown("local", M, report, {"nodes": 10, "relationships": 4, "seconds": 3.0}, RED)
    assert text.splitlines()[0] == "# Restore of `local-20250310T020000Z-a1b2c3` into `local`: OK"
    assert "safety backup: `local-20250311T020000Z-ffffff`" in text
    assert "`p-mcp-graph-1` stopped at 2025-03-11T02:00:00+00:00 for 8.2s" in text
    assert "for the safety backup and the restore" in text and "2 object(s) ok" in text
