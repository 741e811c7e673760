"""A generated Helix-like graph with every Neo4j property type, and an order-independent content digest.

Used by ``bench/backup_bench.py`` and the backup tests. Generation runs server-side in batches (Cypher
``UNWIND range``), byte arrays (which Cypher cannot write) through parameters.
"""

from __future__ import annotations

import hashlib
import json

import neo4j

from drivers.neo4j_values import encode_props

# Constants are computed once per query (the WITH before the UNWIND), not per row; each label set and each
# relationship type has its own statement, so no per-row subquery is needed.
_NODE_PROPS = """{uid: 'cpe-' + i, i: i, name: 'entity ' + i, score: i * 0.5, active: i % 2 = 0,
  big: 9007199254740993 + i, tags: ['t' + (i % 5), 'x'], nums: [i, i + 1], floats: [0.5, i * 1.5],
  flags: [true, false], created: c.d0 + duration({days: i % 400}), seen: c.seen0 + duration({seconds: i}),
  at_offset: c.at_offset, at_utc: c.at_utc, local_dt: c.local_dt, t: c.t, lt: c.lt, d: c.d, dates: c.dates,
  p2: point({x: i * 1.0, y: -1.5}), p3: point({x: 1.0, y: 2.0, z: i * 1.0}), geo: c.geo,
  geo3: point({longitude: 13.4, latitude: 52.5, height: i * 1.0}), uni: 'naïve ☃ \\u0000 `quote` "dq"'}"""

NODE_CONSTANTS = """
WITH {d0: date('2024-01-01'),
  seen0: datetime({year: 2024, month: 3, day: 31, hour: 2, minute: 30, second: 15, nanosecond: 123456789,
                   timezone: 'Europe/Berlin'}),
  at_offset: datetime('2024-06-01T12:00:00.000000001+05:45'), at_utc: datetime('2024-06-01T12:00:00Z'),
  local_dt: localdatetime('2024-02-29T23:59:59.999999999'), t: time('12:34:56.789+01:00'),
  lt: localtime('08:00:00.000000001'), d: duration({months: 14, days: 3, seconds: 7, nanoseconds: 9}),
  dates: [date('2020-01-01'), date('2021-12-31')], geo: point({longitude: 13.4, latitude: 52.5})} AS c
"""

LABEL_SETS = ((0, ":Entity:Claim"), (1, ":Entity:Source:`Odd Label`"), (2, ":Entity:`Weird``Label`"))
"""``i % 3`` → the node's labels."""

NODE_QUERIES = tuple(
    NODE_CONSTANTS + f"UNWIND [x IN range($lo, $hi) WHERE x % 3 = {r}] AS i CREATE (n{labels} {_NODE_PROPS})"
    for r, labels in LABEL_SETS)

REL_QUERIES = (
    "WITH date('2023-05-05') AS since UNWIND [x IN range($lo, $hi) WHERE x % 2 = 0] AS k "
    "MATCH (a:Entity {i: k % $n}) MATCH (b:Entity {i: (k * 7919 + 1) % $n}) "
    "CREATE (a)-[:SUPPORTS {w: k * 0.25, since: since, why: ['x', 'y']}]->(b)",
    "WITH localtime('10:00') AS at UNWIND [x IN range($lo, $hi) WHERE x % 2 = 1] AS k "
    "MATCH (a:Entity {i: k % $n}) MATCH (b:Entity {i: (k * 7919 + 1) % $n}) "
    "CREATE (a)-[:`DERIVED FROM` {k: k, at: at}]->(b)",
)


def generate(uri: str, user: str, password: str, nodes: int, rels: int, batch: int = 2000,
             database: str = "neo4j") -> None:
    """Create ``nodes`` :Entity nodes (all property types, three label sets) and ``rels`` relationships,
    plus a uniqueness constraint, a range index, a text index and a relationship index."""
    with neo4j.GraphDatabase.driver(uri, auth=(user, password)) as drv, drv.session(database=database) as s:
        s.run("CREATE CONSTRAINT entity_uid IF NOT EXISTS FOR (n:Entity) REQUIRE n.uid IS UNIQUE").consume()
        s.run("CREATE INDEX entity_i IF NOT EXISTS FOR (n:Entity) ON (n.i)").consume()
        s.run("CREATE TEXT INDEX entity_name IF NOT EXISTS FOR (n:Entity) ON (n.name)").consume()
        s.run("CREATE INDEX supports_w IF NOT EXISTS FOR ()-[r:SUPPORTS]-() ON (r.w)").consume()
        s.run("CALL db.awaitIndexes(300)").consume()
        for lo in range(0, nodes, batch):
            for query in NODE_QUERIES:
                s.run(query, lo=lo, hi=min(lo + batch, nodes) - 1).consume()
        blobs = [{"i": i, "b": bytes([i % 256, 0, 255]) * (1 + i % 7)} for i in range(0, nodes, 97)]
        for lo in range(0, len(blobs), batch):
            s.run("UNWIND $rows AS r MATCH (n:Entity {i: r.i}) SET n.blob = r.b, n.nan = 0.0/0.0",
                  rows=blobs[lo:lo + batch]).consume()
        for lo in range(0, rels, batch):
            for query in REL_QUERIES:
                s.run(query, lo=lo, hi=min(lo + batch, rels) - 1, n=nodes).consume()


def content_digest(uri: str, user: str, password: str, database: str = "neo4j") -> dict[str, object]:
    """Counts and an order-independent digest of every node (labels, properties) and relationship (type,
    properties, endpoint uids). Equal digests: equal content, whatever the internal ids."""

    def h(obj: object) -> int:
        return int.from_bytes(hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).digest(), "big")

    mod = 1 << 256
    node_sum = rel_sum = 0
    n = r = 0
    with neo4j.GraphDatabase.driver(uri, auth=(user, password)) as drv, drv.session(database=database) as s:
        for rec in s.run("MATCH (x) RETURN labels(x) AS l, properties(x) AS p"):
            node_sum = (node_sum + h([sorted(rec["l"]), encode_props(rec["p"])])) % mod
            n += 1
        for rec in s.run("MATCH (a)-[x]->(b) RETURN a.uid AS s, type(x) AS t, properties(x) AS p, b.uid AS e"):
            rel_sum = (rel_sum + h([rec["s"], rec["t"], encode_props(rec["p"]), rec["e"]])) % mod
            r += 1
        schema = sorted([x["s"] for x in s.run("SHOW CONSTRAINTS YIELD createStatement AS s RETURN s")]
                        + [x["s"] for x in s.run("SHOW INDEXES YIELD createStatement AS s, type, owningConstraint "
                                                 "WHERE owningConstraint IS NULL AND type <> 'LOOKUP' RETURN s")])
    return {"nodes": n, "relationships": r, "node_digest": f"{node_sum:064x}", "rel_digest": f"{rel_sum:064x}",
            "schema": schema}
