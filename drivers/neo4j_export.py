"""The logical export of Neo4j over Bolt (any edition, online): :func:`export_logical` streams the whole
database as :mod:`drivers.logical_format`'s records.

It reads parts of :data:`PART_IDS` ids (a record per :data:`CHUNK_IDS` ids, a read transaction per part) in
:data:`EXPORT_WORKERS` worker processes (:func:`_serve_parts`, run by :class:`drivers.pyworker.PyWorkers` as
``drivers.neo4j_export._serve_parts``) and writes them in order; memory is bounded by the part size, not the
graph. Values come as text straight from Bolt's fields (:mod:`drivers.neo4j_raw`), or typed by the server for
the few the client cannot write (:func:`drivers.neo4j_values.typed_props_cypher`).

Consistency: Neo4j's read-committed isolation means a long read is not a snapshot while writers run; the
flow pauses the writer (mcp-graph) for the export and says so in the manifest.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import neo4j
import neo4j.exceptions as nex
import orjson

from drivers.logical_format import FORMAT, FORMAT_VERSION, TAG_BYTES, TAG_FLOAT, LogicalStats
from drivers.neo4j_bolt import connect, translate_error
from drivers.neo4j_raw import NEEDS_SERVER, raw_hydration
from drivers.neo4j_values import props_from_typed, typed_props_cypher
from drivers.plain import plain
from helix_ops.errors import DriverError

if TYPE_CHECKING:  # not imported at run time: an export worker would carry pydantic's ~8 MiB for nothing
    from pydantic import SecretStr


SCHEMA_QUERIES = (
    ("constraint", "SHOW CONSTRAINTS YIELD name, createStatement RETURN name, createStatement ORDER BY name"),
    ("index", "SHOW INDEXES YIELD name, type, owningConstraint, createStatement "
              "WHERE owningConstraint IS NULL AND type <> 'LOOKUP' AND NOT name STARTS WITH 'helix_restore' "
              "RETURN name, createStatement ORDER BY name"),
)


_NODE_CHUNK = ("UNWIND range($lo, $hi) AS i MATCH (n) WHERE id(n) = i "
               "RETURN collect([i, labels(n), properties(n)])")
_REL_CHUNK = ("UNWIND range($lo, $hi) AS i MATCH ()-[x]->() WHERE id(x) = i "
              "RETURN collect([type(x), id(startNode(x)), id(endNode(x)), properties(x), i])")
_NODE_TYPED = ("UNWIND range($lo, $hi) AS i MATCH (n) WHERE id(n) = i "
               f"RETURN collect([i, labels(n), {typed_props_cypher('n')}])")
_REL_TYPED = ("UNWIND range($lo, $hi) AS i MATCH ()-[x]->() WHERE id(x) = i "
              f"RETURN collect([type(x), id(startNode(x)), id(endNode(x)), {typed_props_cypher('x')}, i])")
_PASS = frozenset({str, int, bool, dict, type(None)})  # dict: a value neo4j_raw already wrote in the format
_LINE = orjson.OPT_APPEND_NEWLINE

EXPORT_WORKERS = 2
"""Processes reading the graph for an export, besides the one writing it. The client's work (unpacking Bolt,
formatting values, JSON) is one core per process; the export's parts run in them and are written in order."""
PART_IDS = 2_500
"""Ids per part (a worker's unit of work; a worker holds up to three: one being written, one waiting, one
being read). Measured at 100k nodes, two workers: 10 000 ids, 103 MiB per worker; 5000, 94; 2500, 76 (with the
smaller value caches of drivers.neo4j_raw), at the same speed."""
CHUNK_IDS = 1_000
"""Ids per query inside a part: one record per chunk, so the driver's per-record cost is paid once per chunk."""


class _NeedsServer(Exception):
    pass


def _encode_hydrated(v: Any) -> Any:
    """A value read under :func:`drivers.neo4j_raw.raw_hydration` as the format's JSON-able data."""
    t = type(v)
    if t in _PASS:
        return v
    if t is float:
        return v if math.isfinite(v) else {TAG_FLOAT: repr(v)}
    if t is list:
        return [x if type(x) in _PASS else _encode_hydrated(x) for x in v]
    if t is bytes or t is bytearray:
        return {TAG_BYTES: base64.b64encode(bytes(v)).decode()}
    if v is NEEDS_SERVER:
        raise _NeedsServer
    raise DriverError(f"cannot back up a property value of type {t.__name__}",
                      hint="a Neo4j type this format does not know yet")


def _typed_props(tx: neo4j.Transaction, match: str, var: str, i: int) -> dict[str, Any]:
    """One entity's properties typed by the server (the slow way), for values the client cannot write."""
    rec = tx.run(f"{match} WHERE id({var}) = $i RETURN {typed_props_cypher(var)} AS p", i=i).single(strict=True)
    return props_from_typed(rec[0], _encode_hydrated)  # points still come hydrated by neo4j_raw


def _encoded(tx: neo4j.Transaction, props: dict[str, Any], match: str, var: str, i: int) -> dict[str, Any]:
    """Properties read under raw hydration, in the format; the server types them if one value needs it."""
    try:
        return {k: v if type(v) in _PASS else _encode_hydrated(v) for k, v in props.items()}
    except _NeedsServer:
        return _typed_props(tx, match, var, i)


@dataclass
class _Part:
    """One id range of nodes or relationships, exported: its lines, and what they hold."""
    lines: Iterable[bytes | bytearray]  # pieces, in order (a worker's are read from its pipe as they are written)
    count: int
    kinds: dict[str, int]  # label or relationship type -> count


_reader: dict[str, Any] = {}  # this process's driver, for export parts (a worker's, or the caller's)


def _open_reader(uri: str, user: str, password: str, database: str) -> None:
    _reader.update(driver=connect(uri, user, password), database=database, uri=uri)


def _close_reader() -> None:
    drv = _reader.pop("driver", None)
    if drv is not None:
        drv.close()


def _export_part(kind: str, lo: int, hi: int, chunk: int = CHUNK_IDS) -> _Part:
    """Nodes (``kind`` "n") or relationships ("r") with ids ``lo``..``hi`` as the format's lines, read in one
    read transaction with ``properties()`` hydrated by :mod:`drivers.neo4j_raw` (or, when the driver cannot
    be given that, typed by the server)."""
    out = bytearray()  # not a list of lines: ~10x the memory (kept lines fragment the heap; measured)
    count = 0
    kinds: dict[str, int] = {}
    dumps = orjson.dumps
    try:
        with _reader["driver"].session(database=_reader["database"], default_access_mode=neo4j.READ_ACCESS) as s, \
                s.begin_transaction() as tx, raw_hydration(tx) as fast:
            for c in range(lo, hi + 1, chunk):
                params = {"lo": c, "hi": min(hi, c + chunk - 1)}
                if kind == "n":
                    for i, labels, props in tx.run(_NODE_CHUNK if fast else _NODE_TYPED, params).single(strict=True)[0]:
                        p = _encoded(tx, props, "MATCH (n)", "n", i) if fast else props_from_typed(props)
                        out += dumps({"n": i, "l": labels, "p": p}, option=_LINE)
                        count += 1
                        for lab in labels:
                            kinds[lab] = kinds.get(lab, 0) + 1
                else:
                    for t, a, b, props, i in tx.run(_REL_CHUNK if fast else _REL_TYPED, params).single(strict=True)[0]:
                        p = _encoded(tx, props, "MATCH ()-[x]->()", "x", i) if fast else props_from_typed(props)
                        out += dumps({"r": t, "s": a, "e": b, "p": p}, option=_LINE)
                        count += 1
                        kinds[t] = kinds.get(t, 0) + 1
    except (nex.Neo4jError, nex.DriverError, OSError) as exc:
        raise translate_error(exc, "exporting", _reader["uri"]) from None  # the driver's errors do not pickle
    return _Part((out,), count, kinds)


def _parts(drv: neo4j.Driver, database: str) -> list[tuple[str, int, int]]:
    """The export's parts: id ranges of nodes, then of relationships, up to the highest id in use."""
    tops = drv.execute_query("CALL { MATCH (n) RETURN max(id(n)) AS n } CALL { MATCH ()-[x]->() RETURN max(id(x)) AS r }"
                             " RETURN n, r", database_=database, routing_=neo4j.RoutingControl.READ).records[0]
    return [(kind, lo, lo + PART_IDS - 1) for kind, top in (("n", tops["n"]), ("r", tops["r"]))
            for lo in range(0, -1 if top is None else top + 1, PART_IDS)]


def _serve_parts() -> None:
    """An export worker's main loop (see :class:`_Workers`): the connection on its first stdin line, then one
    part per line; for each, a JSON header line (``count``, ``kinds``, ``size``, or ``error``) and ``size``
    bytes of lines on stdout. A thread writes, so the next part is read while the last one waits for the
    parent. Ends at stdin's end (the parent closed it, or died)."""
    import queue
    import sys
    import threading

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    _open_reader(*orjson.loads(stdin.readline()))
    ready: queue.Queue[tuple[bytes, bytes | bytearray] | None] = queue.Queue(maxsize=1)

    def send() -> None:
        while (frame := ready.get()) is not None:
            for piece in frame:
                stdout.write(piece)
            stdout.flush()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        for line in stdin:
            try:
                part = _export_part(*orjson.loads(line))
            except DriverError as exc:
                ready.put((orjson.dumps({"error": exc.message, "hint": exc.hint}, option=_LINE), b""))
                break
            size = sum(map(len, part.lines))
            head = orjson.dumps({"count": part.count, "kinds": part.kinds, "size": size}, option=_LINE)
            ready.put((head, *part.lines))
    finally:
        ready.put(None)
        sender.join()
        _close_reader()


class _Workers:
    """``n`` export worker processes (:func:`_serve_parts`, :class:`drivers.pyworker.PyWorkers`). Part ``k``
    goes to worker ``k % n``; a worker works through its parts in order, so reading the workers in turn gives
    the parts in order. At most ``depth`` parts per worker are asked for ahead."""

    def __init__(self, n: int, connect: tuple[str, str, str, str], depth: int = 2) -> None:
        from drivers.pyworker import PyWorkers

        self.depth = depth
        # the connection, password included, on stdin: a pipe, not argv
        self.workers = PyWorkers(n, "drivers.neo4j_export", "_serve_parts", orjson.dumps(list(connect), option=_LINE))
        self.procs = self.workers.procs

    def parts(self, parts: list[tuple[str, int, int]]) -> Iterator[_Part]:
        n = len(self.procs)
        asked = 0

        def ask_up_to(k: int) -> None:
            nonlocal asked
            while asked < min(k, len(parts)):
                stdin = self.procs[asked % n].stdin
                stdin.write(orjson.dumps(list(parts[asked]), option=_LINE))
                stdin.flush()
                asked += 1

        for k in range(len(parts)):
            ask_up_to(k + self.depth * n)
            proc = self.procs[k % n]
            head_line = proc.stdout.readline()
            if not head_line:
                raise DriverError(f"an export worker exited (code {proc.wait()}): {self.workers.stderr_tail(k % n)}",
                                  hint="its last lines are above; is the machine out of memory?")
            head = orjson.loads(head_line)
            if "error" in head:
                raise DriverError(head["error"], hint=head["hint"])
            yield _Part(self._pieces(proc, head["size"]), head["count"], head["kinds"])

    @staticmethod
    def _pieces(proc: Any, size: int, piece: int = 1 << 20) -> Iterator[bytes]:
        """A part's ``size`` bytes from ``proc``'s pipe, a MiB at a time (not the whole part in memory)."""
        while size > 0:
            got = proc.stdout.read(min(size, piece))
            if not got:
                raise DriverError("an export worker's output ended early", hint="did it get killed?")
            size -= len(got)
            yield got

    def close(self) -> None:
        """End the workers (a worker still busy after 10 s is killed: it holds only a read transaction)."""
        self.workers.close()


def _in_order(parts: list[tuple[str, int, int]], connect: tuple[str, str, str, str], workers: int) -> Iterator[_Part]:
    """The parts exported by ``workers`` processes (0: this one), in order. Memory is bounded by the part
    size, not the graph."""
    if workers <= 0:
        _open_reader(*connect)
        try:
            yield from (_export_part(*p) for p in parts)
        finally:
            _close_reader()
        return
    pool = _Workers(workers, connect)
    try:
        yield from pool.parts(parts)
    finally:
        pool.close()


def export_logical(uri: str, user: str, password: SecretStr | str, write: Callable[[bytes], Any], *,
                   database: str = "neo4j", workers: int = EXPORT_WORKERS,
                   progress: Callable[[int, int, LogicalStats], Any] | None = None) -> LogicalStats:
    """Stream the whole database into ``write`` (bytes of JSON lines, nodes and relationships in id order).
    Returns the counts; ``progress(parts done, parts, counts so far)`` is called after each part.

    Nodes and relationships are read in parts (id ranges, each its own read transaction) by ``workers``
    processes. Parts in separate transactions lose nothing: one long read transaction is no snapshot either
    (read-committed), so consistency comes from the paused writer (see the module's docstring)."""
    t0 = time.monotonic()
    stats = LogicalStats()
    secret = plain(password)
    try:
        with connect(uri, user, secret) as drv:
            rec = drv.execute_query("CALL dbms.components() YIELD versions, edition RETURN versions[0] AS v, edition",
                                    database_=database).records[0]
            write(orjson.dumps({"format": FORMAT, "version": FORMAT_VERSION, "server_version": rec["v"],
                                "edition": rec["edition"], "database": database}, option=_LINE))
            parts = _parts(drv, database)
            with closing(_in_order(parts, (uri, user, secret, database), workers)) as exported:
                for done, ((kind, _, _), part) in enumerate(zip(parts, exported), 1):
                    if kind == "n":
                        stats.nodes += part.count
                        into = stats.labels
                    else:
                        stats.relationships += part.count
                        into = stats.relationship_types
                    for k, n in part.kinds.items():
                        into[k] = into.get(k, 0) + n
                    for piece in part.lines:
                        write(piece)
                    if progress is not None:
                        progress(done, len(parts), stats)
            for kind, query in SCHEMA_QUERIES:
                for r in drv.execute_query(query, database_=database, routing_=neo4j.RoutingControl.READ).records:
                    write(orjson.dumps({"schema": kind, "name": r["name"], "statement": r["createStatement"]},
                                       option=_LINE))
                    if kind == "constraint":
                        stats.constraints += 1
                    else:
                        stats.indexes += 1
    except (nex.Neo4jError, nex.DriverError, OSError) as exc:
        raise translate_error(exc, "exporting", uri) from exc
    write(orjson.dumps({"end": True, "nodes": stats.nodes, "relationships": stats.relationships}, option=_LINE))
    stats.seconds = time.monotonic() - t0
    return stats
