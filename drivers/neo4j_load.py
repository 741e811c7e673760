"""The logical load into Neo4j over Bolt: :func:`load_logical` (a logical export into an empty or wiped
database), :func:`wipe_database`, :func:`apply_schema` (also the importer restore's), and :func:`graph_counts`
(what verification compares).

The load reads one line at a time and writes batches of ``batch_size`` rows, grouped by label set / type;
temporal, spatial and duration values are built by the server (:func:`drivers.neo4j_values.split_props`).
Nodes are matched for the relationships through a temporary label and index (``__HelixRestore.__hx``),
removed afterwards. Peak memory is bounded by the batch size, not the graph.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, BinaryIO

import neo4j
import neo4j.exceptions as nex

from drivers.logical_format import LogicalStats, check_end, read_records
from drivers.neo4j_bolt import connect, translate_error
from drivers.neo4j_values import split_props, typed_set
from helix_ops.errors import DriverError

if TYPE_CHECKING:
    from pydantic import SecretStr

RESTORE_LABEL = "__HelixRestore"
RESTORE_KEY = "__hx"
RESTORE_INDEX = "helix_restore_hx"


def quote(name: str) -> str:
    """A label, type or property name as a Cypher identifier (backticks doubled)."""
    return "`" + name.replace("`", "``") + "`"


def wipe_database(drv: neo4j.Driver, database: str = "neo4j", batch: int = 2_000) -> None:
    """Drop every constraint and non-lookup index, then delete every node (in batches)."""
    with drv.session(database=database) as s:
        for r in list(s.run("SHOW CONSTRAINTS YIELD name RETURN name")):
            s.run(f"DROP CONSTRAINT {quote(r['name'])} IF EXISTS").consume()
        for r in list(s.run("SHOW INDEXES YIELD name, type WHERE type <> 'LOOKUP' RETURN name")):
            s.run(f"DROP INDEX {quote(r['name'])} IF EXISTS").consume()
        # one bounded transaction per batch, relationships first: a single CALL … IN TRANSACTIONS over the
        # whole graph ran a 512 MiB heap out of memory at 100k nodes / 200k relationships
        for statement in ("MATCH ()-[r]->() WITH r LIMIT $batch DELETE r RETURN count(*) AS c",
                          "MATCH (n) WITH n LIMIT $batch DETACH DELETE n RETURN count(*) AS c"):
            while s.run(statement, batch=batch).single()["c"]:
                pass


def apply_schema(session: neo4j.Session, schema: list[tuple[str, str, str]], await_s: int = 600) -> tuple[int, int]:
    """Run the export's schema statements (``(kind, name, statement)``) and wait for the indexes to come online;
    returns ``(constraints, indexes)`` created."""
    counts = {"constraint": 0, "index": 0}
    for kind, _name, statement in schema:
        session.run(statement).consume()
        counts[kind if kind in counts else "index"] += 1
    session.run(f"CALL db.awaitIndexes({int(await_s)})").consume()
    return counts["constraint"], counts["index"]


def load_logical(uri: str, user: str, password: SecretStr | str, stream: BinaryIO | Iterable[bytes], *,
                 database: str = "neo4j", batch_size: int = 2000, wipe: bool = False,
                 log: Callable[[str], None] = lambda m: None) -> LogicalStats:
    """Load a logical export into ``database``. Refuses a non-empty database unless ``wipe``.

    Nodes and relationships are written in batches of ``batch_size`` (one transaction each) grouped by label
    set / type; then the temporary restore label and index are removed and the schema is created (after the
    data: faster, and constraints are checked against the whole graph).
    """
    t0 = time.monotonic()
    stats = LogicalStats()
    schema: list[tuple[str, str, str]] = []
    try:
        with connect(uri, user, password) as drv:
            with drv.session(database=database) as s:
                existing = s.run("MATCH (n) RETURN count(n) AS c").single()["c"]
                if existing and not wipe:
                    raise DriverError(f"Neo4j at {uri} holds {existing} nodes: refusing to load over them",
                                      hint="restore-helix wipes the database after taking a safety backup")
                if existing or wipe:
                    log(f"wiping {existing} nodes and the schema")
                    wipe_database(drv, database)
                s.run(f"CREATE INDEX {RESTORE_INDEX} IF NOT EXISTS FOR (n:{RESTORE_LABEL}) ON (n.{RESTORE_KEY})"
                      ).consume()
                s.run("CALL db.awaitIndexes(300)").consume()

            node_buf: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            rel_buf: dict[str, list[dict[str, Any]]] = {}

            def write_batch(query: str, rows: list[dict[str, Any]]) -> None:
                with drv.session(database=database) as s:
                    s.execute_write(lambda tx: tx.run(query, rows=rows).consume())

            def flush_nodes(labels: tuple[str, ...]) -> None:
                rows = node_buf.pop(labels, [])
                if rows:
                    lab = "".join(":" + quote(x) for x in labels)
                    write_batch(f"UNWIND $rows AS r CREATE (n:{RESTORE_LABEL}{lab} {{{RESTORE_KEY}: r.i}}) "
                                "SET n += r.p" + typed_set("n"), rows)

            def flush_rels(rtype: str) -> None:
                rows = rel_buf.pop(rtype, [])
                if rows:
                    write_batch(f"UNWIND $rows AS r MATCH (a:{RESTORE_LABEL} {{{RESTORE_KEY}: r.s}}) "
                                f"MATCH (b:{RESTORE_LABEL} {{{RESTORE_KEY}: r.e}}) "
                                f"CREATE (a)-[x:{quote(rtype)}]->(b) SET x = r.p" + typed_set("x"), rows)

            end: dict[str, Any] | None = None
            for rec in read_records(stream):
                if "n" in rec:
                    labels = tuple(rec["l"])
                    ready, typed = split_props(rec["p"])
                    node_buf.setdefault(labels, []).append({"i": rec["n"], "p": ready, "t": typed})
                    stats.nodes += 1
                    for lab in labels:
                        stats.labels[lab] = stats.labels.get(lab, 0) + 1
                    if len(node_buf[labels]) >= batch_size:
                        flush_nodes(labels)
                elif "r" in rec:
                    if node_buf:
                        for labels in list(node_buf):
                            flush_nodes(labels)
                    rtype = rec["r"]
                    ready, typed = split_props(rec["p"])
                    rel_buf.setdefault(rtype, []).append({"s": rec["s"], "e": rec["e"], "p": ready, "t": typed})
                    stats.relationships += 1
                    stats.relationship_types[rtype] = stats.relationship_types.get(rtype, 0) + 1
                    if len(rel_buf[rtype]) >= batch_size:
                        flush_rels(rtype)
                elif "schema" in rec:
                    schema.append((rec["schema"], rec["name"], rec["statement"]))
                elif rec.get("end"):
                    end = rec
            for labels in list(node_buf):
                flush_nodes(labels)
            for rtype in list(rel_buf):
                flush_rels(rtype)
            check_end(end, stats)
            log(f"loaded {stats.nodes} nodes, {stats.relationships} relationships; cleaning up")
            with drv.session(database=database) as s:
                s.run(f"MATCH (n:{RESTORE_LABEL}) CALL (n) {{ REMOVE n:{RESTORE_LABEL} "
                      f"REMOVE n.{RESTORE_KEY} }} IN TRANSACTIONS OF {batch_size} ROWS").consume()
                s.run(f"DROP INDEX {RESTORE_INDEX} IF EXISTS").consume()
                stats.constraints, stats.indexes = apply_schema(s, schema)
    except (nex.Neo4jError, nex.DriverError, OSError) as exc:
        raise translate_error(exc, "loading a logical backup", uri) from exc
    stats.seconds = time.monotonic() - t0
    return stats


def graph_counts(uri: str, user: str, password: SecretStr | str, database: str = "neo4j") -> dict[str, Any]:
    """Nodes, relationships, per-label and per-type counts, constraints and indexes (for verification)."""
    try:
        with connect(uri, user, password) as drv, drv.session(database=database) as s:
            nodes = s.run("MATCH (n) RETURN count(n) AS c").single()["c"]
            rels = s.run("MATCH ()-[r]->() RETURN count(r) AS c").single()["c"]
            labels = {r["l"]: r["c"] for r in s.run(
                "CALL db.labels() YIELD label AS l CALL (l) { MATCH (n) WHERE l IN labels(n) RETURN count(n) AS c } "
                "RETURN l, c") if r["c"]}
            types = {r["t"]: r["c"] for r in s.run(
                "CALL db.relationshipTypes() YIELD relationshipType AS t "
                "CALL (t) { MATCH ()-[r]->() WHERE type(r) = t RETURN count(r) AS c } RETURN t, c") if r["c"]}
            constraints = s.run("SHOW CONSTRAINTS YIELD name RETURN count(*) AS c").single()["c"]
            indexes = s.run("SHOW INDEXES YIELD name, type, owningConstraint WHERE owningConstraint IS NULL "
                            "AND type <> 'LOOKUP' RETURN count(*) AS c").single()["c"]
            version, edition = s.run("CALL dbms.components() YIELD versions, edition "
                                     "RETURN versions[0] AS v, edition AS e").single().values()
    except (nex.Neo4jError, nex.DriverError, OSError) as exc:
        raise translate_error(exc, "counting", uri) from exc
    return {"nodes": nodes, "relationships": rels, "labels": labels, "relationship_types": types,
            "constraints": constraints, "indexes": indexes, "server_version": version, "edition": edition}
