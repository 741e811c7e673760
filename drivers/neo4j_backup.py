"""Neo4j backups: the logical strategy over Bolt (any edition, online) and the physical one (Community,
offline ``neo4j-admin database dump`` / ``load``).

**Logical format** (``helix-neo4j-logical``, version 1): JSON lines (compressed by the storage layer), one
record each:

* ``{"format": "helix-neo4j-logical", "version": 1, "server_version": …, "edition": …, "database": …}``
* ``{"n": <id>, "l": [labels], "p": {props}}`` for each node, then
* ``{"r": <type>, "s": <start id>, "e": <end id>, "p": {props}}`` for each relationship, then
* ``{"schema": "constraint"|"index", "name": …, "statement": <its createStatement>}``, then
* ``{"end": true, "nodes": N, "relationships": M}`` (a file without it is truncated and refused).

Property values: JSON strings, integers, booleans and finite floats as they are; anything else tagged in a
one-key object: ``{"$f": "nan"}``, ``{"$b": base64}`` (byte arrays), ``{"$date": iso}``, ``{"$time": iso}``
(with offset), ``{"$ltime": iso}``, ``{"$dt": iso with offset[zone id]}`` (Neo4j's own text; version 1 wrote
``{"$dt": local iso, "z": zone id}``, which loses the offset in a DST overlap; both are read),
``{"$ldt": iso}``, ``{"$dur": [months, days, seconds, nanoseconds]}``, ``{"$pt": srid, "c": [x, y(, z)]}``;
lists element-wise. Temporal text is Neo4j's own (``toString``'s, written by :mod:`drivers.neo4j_raw` from
the Bolt fields, or by the server for the few values the client cannot write exactly), so nanoseconds and
years outside 1-9999 survive; the loader hands it back to the server (``datetime(text)`` …).

Both directions stream: the export reads parts of 2500 ids (a record per 1000 ids, a read transaction per
part) in two worker processes and writes them in order;
the load reads one line at a time and writes batches of ``batch_size`` rows; nodes are matched for the
relationships through a temporary label and index (``__HelixRestore.__hx``), removed afterwards.
Peak memory is bounded by the batch size, not the graph.

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
from typing import TYPE_CHECKING, Any, BinaryIO

import neo4j
import neo4j.exceptions as nex
import orjson
from neo4j.spatial import CartesianPoint, Point, WGS84Point
from neo4j.time import Date, DateTime, Duration, Time

from drivers.logical_format import (  # noqa: F401 - the format's names are this module's API too
    FORMAT,
    FORMAT_VERSION,
    READS_VERSIONS,
    LogicalStats,
    RecordOrder,
    check_end,
    check_header,
    parse_line,
    read_records,
)
from drivers.neo4j_raw import NEEDS_SERVER, raw_hydration
from drivers.plain import plain
from helix_ops.errors import BackupIntegrityError, DriverError, OfflineUnavailable

if TYPE_CHECKING:  # not imported at run time: an export worker would carry pydantic's ~8 MiB for nothing
    from pydantic import SecretStr

RESTORE_LABEL = "__HelixRestore"
RESTORE_KEY = "__hx"
RESTORE_INDEX = "helix_restore_hx"


# --- value codec --------------------------------------------------------------------------------------------


def _zone_name(tz: Any) -> str | None:
    for attr in ("zone", "key"):  # pytz / zoneinfo
        name = getattr(tz, attr, None)
        if isinstance(name, str):
            return name
    return None


def encode_value(v: Any) -> Any:
    """A property value as JSON-able data (see the module docstring for the tags)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"$f": repr(v)}
    if isinstance(v, (bytes, bytearray)):
        return {"$b": base64.b64encode(bytes(v)).decode()}
    if isinstance(v, DateTime):
        if v.tzinfo is None:
            return {"$ldt": v.iso_format()}
        zone = _zone_name(v.tzinfo)
        if zone and zone != "UTC" or zone == "UTC" and type(v.tzinfo).__name__ != "timezone":
            return {"$dt": v.replace(tzinfo=None).iso_format(), "z": zone}
        return {"$dt": v.iso_format()}
    if isinstance(v, Date):
        return {"$date": v.iso_format()}
    if isinstance(v, Time):
        return {"$time": v.iso_format()} if v.tzinfo is not None else {"$ltime": v.iso_format()}
    if isinstance(v, Duration):
        return {"$dur": [v.months, v.days, v.seconds, v.nanoseconds]}
    if isinstance(v, Point):
        return {"$pt": v.srid, "c": [float(c) for c in v]}
    if isinstance(v, (list, tuple)):  # after Duration and Point: both are tuples
        return [encode_value(x) for x in v]
    raise DriverError(f"cannot back up a property value of type {type(v).__name__}",
                      hint="a Neo4j type this format does not know yet")


def _z(text: str) -> str:
    return text[:-1] + "+00:00" if text.endswith("Z") else text


_POINTS = {7203: CartesianPoint, 9157: CartesianPoint, 4326: WGS84Point, 4979: WGS84Point}


def decode_value(v: Any) -> Any:
    """The inverse of :func:`encode_value` (values ready to send as Cypher parameters)."""
    if isinstance(v, list):
        return [decode_value(x) for x in v]
    if not isinstance(v, dict):
        return v
    if "$f" in v:
        return float(v["$f"])
    if "$b" in v:
        return base64.b64decode(v["$b"])
    if "$date" in v:
        return Date.from_iso_format(v["$date"])
    if "$ltime" in v:
        return Time.from_iso_format(v["$ltime"])
    if "$time" in v:
        return Time.from_iso_format(_z(v["$time"]))
    if "$ldt" in v:
        return DateTime.from_iso_format(v["$ldt"])
    if "$dt" in v:
        import pytz

        if "z" in v:  # version 1: local time and zone
            return pytz.timezone(v["z"]).localize(DateTime.from_iso_format(v["$dt"]))
        text, _, zone = v["$dt"].partition("[")  # version 2: Neo4j's text, offset and optional [zone]
        at = DateTime.from_iso_format(_z(text))
        return at.astimezone(pytz.timezone(zone[:-1])) if zone else at
    if "$dur" in v:
        months, days, seconds, nanos = v["$dur"]
        return Duration(months=months, days=days, seconds=seconds, nanoseconds=nanos)
    if "$pt" in v:
        cls = _POINTS.get(int(v["$pt"]))
        if cls is None:
            raise BackupIntegrityError(f"unknown point srid {v['$pt']}")
        return cls(tuple(v["c"]))
    raise BackupIntegrityError(f"unknown value tag in {sorted(v)}")


def encode_props(props: dict[str, Any]) -> dict[str, Any]:
    return {k: encode_value(x) for k, x in props.items()}


def decode_props(props: dict[str, Any]) -> dict[str, Any]:
    return {k: decode_value(x) for k, x in props.items()}


# --- load-side split: temporal, spatial and duration values are built by the server -------------------------
#
# Decoding them in Python (pytz localisation, neo4j.time arithmetic) and packing them back cost 3/4 of a load's
# time (profiled at 20k nodes: 75 of 98 s). So the loader sends them as the strings and numbers of the export,
# tagged, and one Cypher CASE constructs them (``SET n[key] = …``). Floats that are not finite and byte arrays
# are decoded here (cheap: Bolt has no literal for them in Cypher).

_SERVER_TAGS = {
    "$date": ("date", "date({v})"),
    "$ltime": ("ltime", "localtime({v})"),
    "$time": ("time", "time({v})"),
    "$ldt": ("ldt", "localdatetime({v})"),
    "$dt": ("dt", "datetime({v})"),
    "$dur": ("dur", "duration({{months: {v}[0], days: {v}[1], seconds: {v}[2], nanoseconds: {v}[3]}})"),
    "$pt": ("pt", "point({v})"),
}


def _server_value(v: dict[str, Any]) -> tuple[str, Any] | None:
    """(tag, argument) for a value the server constructs, None for the others."""
    for key, (tag, _) in _SERVER_TAGS.items():
        if key in v:
            if key == "$dt" and "z" in v:
                return tag, f"{v['$dt']}[{v['z']}]"
            if key == "$pt":
                c = v["c"]
                if int(v["$pt"]) not in _POINTS:
                    raise BackupIntegrityError(f"unknown point srid {v['$pt']}")
                return tag, {"srid": int(v["$pt"]), "x": c[0], "y": c[1], **({"z": c[2]} if len(c) > 2 else {})}
            return tag, v[key]
    return None


def split_props(props: dict[str, Any]) -> tuple[dict[str, Any], list[list[Any]]]:
    """``(ready, typed)``: plain values ready to send, and ``[key, tag, argument]`` for the server to build."""
    ready: dict[str, Any] = {}
    typed: list[list[Any]] = []
    for k, v in props.items():
        if isinstance(v, dict):
            sv = _server_value(v)
            if sv is None:
                ready[k] = decode_value(v)
            else:
                typed.append([k, sv[0], sv[1]])
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            first = _server_value(v[0])
            if first is None:
                ready[k] = decode_value(v)
            else:  # Neo4j lists are homogeneous: one tag for all
                args = []
                for x in v:
                    sx = _server_value(x) if isinstance(x, dict) else None
                    if sx is None or sx[0] != first[0]:
                        raise BackupIntegrityError(f"property {k!r} holds a list of mixed types")
                    args.append(sx[1])
                typed.append([k, first[0] + "[]", args])
        else:
            ready[k] = v
    return ready, typed


def _typed_set(var: str) -> str:
    """Cypher that sets ``row.t``'s typed properties on ``var`` (after the row's CREATE)."""
    cases = []
    for tag, expr in _SERVER_TAGS.values():
        cases.append(f"WHEN '{tag}' THEN {expr.format(v='t[2]')}")
        cases.append(f"WHEN '{tag}[]' THEN [v IN t[2] | {expr.format(v='v')}]")
    return (f" WITH {var}, r WHERE size(r.t) > 0 UNWIND r.t AS t "
            f"SET {var}[t[0]] = CASE t[1] {' '.join(cases)} END")


def quote(name: str) -> str:
    """A label, type or property name as a Cypher identifier (backticks doubled)."""
    return "`" + name.replace("`", "``") + "`"


# --- export -------------------------------------------------------------------------------------------------


def _driver(uri: str, user: str, password: SecretStr | str) -> neo4j.Driver:
    secret = plain(password)
    # id() is deprecated in 5.x (still the cheapest seek): without this, every chunk's query logs a warning
    return neo4j.GraphDatabase.driver(uri, auth=(user, secret), connection_timeout=15,
                                      notifications_disabled_classifications=["DEPRECATION"],
                                      max_transaction_retry_time=30)


def _translate(exc: Exception, doing: str, uri: str) -> DriverError:
    return DriverError(f"Neo4j at {uri}: {type(exc).__name__} while {doing}: "
                       f"{getattr(exc, 'code', '') or ''} {getattr(exc, 'message', '') or ''}".strip(),
                       hint="is the server up and the password right?")


# --- export-side, the server's way: every property typed in Cypher ------------------------------------------
#
# The fallback of the fast path (drivers.neo4j_raw): for the few values the client cannot write exactly, and
# for every value when the driver cannot be given raw hydration. The query turns each property into
# ``[key, tag, value]``: temporal values (and lists of them) as Neo4j's own ISO text, durations as their
# [months, days, seconds, nanoseconds] components; everything else (points included) comes as it is, tag null.
# About 20x the server time of ``properties(n)`` (profiled at 20k nodes).

_TEMPORAL_TYPES = {"DATE": "$date", "LOCAL TIME": "$ltime", "ZONED TIME": "$time",
                   "LOCAL DATETIME": "$ldt", "ZONED DATETIME": "$dt"}
_PLAIN = "STRING | INTEGER | FLOAT | BOOLEAN | POINT"


def _export_props(var: str) -> str:
    """Cypher for ``[[key, tag, value], …]`` of ``var``'s properties. Type predicates (``IS ::``), the common
    plain types first: 1.7x less server time than one ``valueType()`` string per property (20k nodes)."""
    v = f"{var}[k]"
    dur = "[{x}.months, {x}.days, {x}.seconds, {x}.nanosecondsOfSecond]"
    cases = [f"WHEN {v} IS :: {_PLAIN} | LIST<{_PLAIN}> THEN [k, null, {v}]"]
    for ctype, tag in _TEMPORAL_TYPES.items():
        cases.append(f"WHEN {v} IS :: {ctype} THEN [k, '{tag}', toString({v})]")
    cases.append(f"WHEN {v} IS :: DURATION THEN [k, '$dur', {dur.format(x=v)}]")
    for ctype, tag in _TEMPORAL_TYPES.items():
        cases.append(f"WHEN {v} IS :: LIST<{ctype} NOT NULL> THEN [k, '{tag}[]', [x IN {v} | toString(x)]]")
    cases.append(f"WHEN {v} IS :: LIST<DURATION NOT NULL> THEN [k, '$dur[]', [x IN {v} | {dur.format(x='x')}]]")
    return f"[k IN keys({var}) | CASE {' '.join(cases)} ELSE [k, null, {v}] END]"


def _props_from_export(triples: list[list[Any]], encode: Callable[[Any], Any] = encode_value) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, tag, v in triples:
        if tag is None:
            out[k] = encode(v)
        elif tag.endswith("[]"):
            t = tag[:-2]
            out[k] = [{t: x} for x in v]
        else:
            out[k] = {tag: v}
    return out


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
               f"RETURN collect([i, labels(n), {_export_props('n')}])")
_REL_TYPED = ("UNWIND range($lo, $hi) AS i MATCH ()-[x]->() WHERE id(x) = i "
              f"RETURN collect([type(x), id(startNode(x)), id(endNode(x)), {_export_props('x')}, i])")
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
        return v if math.isfinite(v) else {"$f": repr(v)}
    if t is list:
        return [x if type(x) in _PASS else _encode_hydrated(x) for x in v]
    if t is bytes or t is bytearray:
        return {"$b": base64.b64encode(bytes(v)).decode()}
    if v is NEEDS_SERVER:
        raise _NeedsServer
    raise DriverError(f"cannot back up a property value of type {t.__name__}",
                      hint="a Neo4j type this format does not know yet")


def _typed_props(tx: neo4j.Transaction, match: str, var: str, i: int) -> dict[str, Any]:
    """One entity's properties typed by the server (the slow way), for values the client cannot write."""
    rec = tx.run(f"{match} WHERE id({var}) = $i RETURN {_export_props(var)} AS p", i=i).single(strict=True)
    return _props_from_export(rec[0], _encode_hydrated)  # points still come hydrated by neo4j_raw


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
    _reader.update(driver=_driver(uri, user, password), database=database, uri=uri)


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
                        p = _encoded(tx, props, "MATCH (n)", "n", i) if fast else _props_from_export(props)
                        out += dumps({"n": i, "l": labels, "p": p}, option=_LINE)
                        count += 1
                        for lab in labels:
                            kinds[lab] = kinds.get(lab, 0) + 1
                else:
                    for t, a, b, props, i in tx.run(_REL_CHUNK if fast else _REL_TYPED, params).single(strict=True)[0]:
                        p = _encoded(tx, props, "MATCH ()-[x]->()", "x", i) if fast else _props_from_export(props)
                        out += dumps({"r": t, "s": a, "e": b, "p": p}, option=_LINE)
                        count += 1
                        kinds[t] = kinds.get(t, 0) + 1
    except (nex.Neo4jError, nex.DriverError, OSError) as exc:
        raise _translate(exc, "exporting", _reader["uri"]) from None  # the driver's errors do not pickle
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
        self.workers = PyWorkers(n, "drivers.neo4j_backup", "_serve_parts", orjson.dumps(list(connect), option=_LINE))
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
        with _driver(uri, user, secret) as drv:
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
        raise _translate(exc, "exporting", uri) from exc
    write(orjson.dumps({"end": True, "nodes": stats.nodes, "relationships": stats.relationships}, option=_LINE))
    stats.seconds = time.monotonic() - t0
    return stats


# --- load ---------------------------------------------------------------------------------------------------


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
        with _driver(uri, user, password) as drv:
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
                                "SET n += r.p" + _typed_set("n"), rows)

            def flush_rels(rtype: str) -> None:
                rows = rel_buf.pop(rtype, [])
                if rows:
                    write_batch(f"UNWIND $rows AS r MATCH (a:{RESTORE_LABEL} {{{RESTORE_KEY}: r.s}}) "
                                f"MATCH (b:{RESTORE_LABEL} {{{RESTORE_KEY}: r.e}}) "
                                f"CREATE (a)-[x:{quote(rtype)}]->(b) SET x = r.p" + _typed_set("x"), rows)

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
        raise _translate(exc, "loading a logical backup", uri) from exc
    stats.seconds = time.monotonic() - t0
    return stats


def graph_counts(uri: str, user: str, password: SecretStr | str, database: str = "neo4j") -> dict[str, Any]:
    """Nodes, relationships, per-label and per-type counts, constraints and indexes (for verification)."""
    try:
        with _driver(uri, user, password) as drv, drv.session(database=database) as s:
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
        raise _translate(exc, "counting", uri) from exc
    return {"nodes": nodes, "relationships": rels, "labels": labels, "relationship_types": types,
            "constraints": constraints, "indexes": indexes, "server_version": version, "edition": edition}


# --- physical: offline dump / load (Community) ----------------------------------------------------------------


class OfflineNeo4j:
    """What the physical strategy needs from where Neo4j runs: stop, start (and wait), run ``neo4j-admin``.

    :class:`HostNeo4j` drives a host process (the test bed's ``Neo4jServer`` and the bench);
    :class:`EngineNeo4j` drives the environment's container on the engine (stop it, run a one-off container
    of the same image on the same data volume, start it again).
    """

    def stop(self) -> None: raise NotImplementedError
    def start(self) -> None: raise NotImplementedError
    def dump(self, write: Callable[[bytes], Any], database: str = "neo4j") -> int: raise NotImplementedError
    def load(self, chunks: Iterable[bytes], size: int, database: str = "neo4j") -> None: raise NotImplementedError
    def import_csv(self, csvs: Any, database: str = "neo4j") -> None: raise NotImplementedError
    def swap_store(self, op: str, database: str = "neo4j") -> None: raise NotImplementedError  # see neo4j_store_swap_argv
    uri: str | None = None  # where Bolt answers after start(), when it may have moved


@dataclass
class PhysicalResult:
    downtime_s: float
    dump_bytes: int = 0


def dump_offline(target: OfflineNeo4j, write: Callable[[bytes], Any], database: str = "neo4j") -> PhysicalResult:
    """Stop Neo4j, ``neo4j-admin database dump`` into ``write``, start Neo4j again (always, even on failure).

    The downtime is measured from the stop to Neo4j answering again. The writer must be drained first.
    """
    t0 = time.monotonic()
    target.stop()
    try:
        size = target.dump(write, database)
    finally:
        target.start()
    return PhysicalResult(time.monotonic() - t0, size)


def load_offline(target: OfflineNeo4j, chunks: Iterable[bytes], size: int, database: str = "neo4j") -> PhysicalResult:
    """Stop Neo4j, ``neo4j-admin database load --overwrite-destination=true`` from ``chunks``, start again."""
    t0 = time.monotonic()
    target.stop()
    try:
        target.load(chunks, size, database)
    finally:
        target.start()
    return PhysicalResult(time.monotonic() - t0)


class HostNeo4j(OfflineNeo4j):
    """A Neo4j host process with ``stop()``, ``start()`` and ``admin_argv(*args)`` (the test bed's server)."""

    def __init__(self, server: Any, workdir: Any) -> None:
        from pathlib import Path

        self.server = server
        self.workdir = Path(workdir)

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()

    def _admin(self, argv: list[str]) -> str:
        from helix_ops.errors import CommandFailed

        try:
            return self.server.admin(*argv[1:])
        except CommandFailed:
            raise
        except Exception as exc:  # the test bed's runner raises its own error type
            raise CommandFailed(argv, getattr(exc, "rc", 1), str(exc)) from exc

    def dump(self, write: Callable[[bytes], Any], database: str = "neo4j") -> int:
        import shutil as _sh

        from helix_ops.backup import neo4j_dump_argv

        folder = self.workdir / "dump"
        _sh.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            self._admin(neo4j_dump_argv(database, str(folder)))
            size = 0
            with open(folder / f"{database}.dump", "rb") as f:
                while chunk := f.read(1 << 20):
                    write(chunk)
                    size += len(chunk)
            return size
        finally:
            _sh.rmtree(folder, ignore_errors=True)

    def load(self, chunks: Iterable[bytes], size: int, database: str = "neo4j") -> None:
        import shutil as _sh

        from helix_ops.backup import neo4j_load_argv

        folder = self.workdir / "load"
        _sh.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            with open(folder / f"{database}.dump", "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
            self._admin(neo4j_load_argv(database, str(folder)))
        finally:
            _sh.rmtree(folder, ignore_errors=True)


    def import_csv(self, csvs: Any, database: str = "neo4j") -> None:
        from helix_ops.backup import neo4j_import_argv

        self._admin(neo4j_import_argv(database, str(csvs.folder), csvs.nodes, csvs.relationships,
                                      multiline=csvs.multiline))

    def swap_store(self, op: str, database: str = "neo4j") -> None:
        import subprocess

        from helix_ops.backup import neo4j_store_swap_argv
        from helix_ops.errors import CommandFailed

        argv = neo4j_store_swap_argv(op, str(self.server.home / "data"), database)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise CommandFailed(argv, done.returncode, done.stdout + done.stderr)


# --- physical on the container engine: the environment's Neo4j container --------------------------------------

IMPORT_JAVA_OPTS = "-Xmx1g"  # the importer's heap (its caches are off-heap): 96m ran out at one node, and at
# 512m it warns "may be too small" (it suggests 1 GiB)
ADMIN_DIR = "/backups"  # in the one-off container's own filesystem (the helix-neo4j image has it, owned by neo4j)


def _image_ids(client: Any, image: str) -> tuple[int, int]:
    """The numeric ``uid, gid`` ``image`` runs as (``Config.User`` ``"7474:7474"``; root when unset or a name)."""
    user = (client.images.get(image).attrs.get("Config") or {}).get("User") or "0:0"
    uid, _, gid = user.partition(":")
    return (int(uid), int(gid or uid)) if uid.isdigit() and (not gid or gid.isdigit()) else (0, 0)


class _ChunksReader:
    """A ``read(n)`` file object over an iterator of byte chunks (tarfile copies exactly ``size`` bytes)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""
        self._at = 0

    def read(self, n: int = -1) -> bytes:
        if self._at >= len(self._buf):
            self._buf, self._at = next(self._it, b""), 0
            while not self._buf:  # skip empty chunks; b"" at the end
                nxt = next(self._it, None)
                if nxt is None:
                    return b""
                self._buf = nxt
        end = len(self._buf) if n < 0 else min(len(self._buf), self._at + n)
        out = self._buf[self._at:end]
        self._at = end
        return bytes(out)

    def drain(self) -> None:
        """Read the source to its end (a checking source verifies its checksum there); more bytes are an error."""
        extra = len(self._buf) - self._at + sum(len(c) for c in self._it)
        if extra:
            raise BackupIntegrityError(f"the dump holds {extra} bytes more than its manifest says")


class EngineNeo4j(OfflineNeo4j):
    """The environment's Neo4j container on the engine, for the offline ``neo4j-admin`` dump and load.

    ``stop``: stop every running replica of ``service`` (graceful, ``stop_grace_s``), remembering them.
    ``dump`` / ``load``: a one-off container of the same image (or ``image``) mounts the stopped container's
    data volume at ``/data`` and runs ``neo4j-admin database dump`` / ``load --overwrite-destination=true``
    with the dump file in its own ``/backups`` (streamed out / in through the engine's archive API: nothing is
    held in memory). The one-off container is a :class:`drivers.engine.ScratchEngine` run (no project labels)
    and is removed in a ``finally``, also on failure or timeout.
    ``start``: start the remembered containers and wait for a Bolt login (``start_deadline_s``).

    The image is checked *before* Neo4j is stopped, so a missing image costs no downtime.
    """

    def __init__(self, driver: Any, user: str, password: SecretStr | str, *, service: str = "neo4j",
                 image: str | None = None, run_id: str | None = None, scratch_labels: dict[str, str] | None = None,
                 stop_grace_s: int = 120, start_deadline_s: float = 600, admin_deadline_s: float = 4 * 3600,
                 log: Callable[[str], None] = lambda m: None) -> None:
        import re
        import secrets as _secrets

        self.driver = driver
        self.user = user
        self.password = plain(password)
        self.service = service
        self.stop_grace_s = stop_grace_s
        self.start_deadline_s = start_deadline_s
        self.admin_deadline_s = admin_deadline_s
        self.scratch_labels = dict(scratch_labels or {})
        self.log = log
        self.stopped: list[str] = []
        self.uri: str | None = None  # the Bolt address after start() (a restart may publish another port)
        self.admin_seconds = 0.0
        self.health = ""
        containers = driver.containers(service)
        running = [c for c in containers if c.status == "running"]
        if len(running) != 1:
            raise OfflineUnavailable(f"{service} of {driver.project}: {len(running)} running container(s), the offline "
                              "dump/load needs exactly one", hint="a cluster uses the online backup (Enterprise); "
                                                                  "start a stopped Neo4j first (deploy-helix)")
        self.container = running[0]
        mounts = [m for m in self.container.attrs.get("Mounts") or [] if m.get("Destination") == "/data"]
        if not mounts or not mounts[0].get("Name"):
            raise OfflineUnavailable(f"{self.container.name} has no named volume on /data",
                              hint="helix-ops deploys Neo4j with its data volume on /data")
        self.data_volume = str(mounts[0]["Name"])
        self.image = image or self.container.labels.get("helix-ops.image") or self.container.attrs["Config"]["Image"]
        base = re.sub(r"[^a-z0-9-]", "-", str(driver.project).lower())[:24].strip("-") or "neo4j"
        self.run_id = run_id or f"{base}-admin-{_secrets.token_hex(3)}"

    def scratch(self) -> Any:
        from drivers.engine import ScratchEngine

        return ScratchEngine(self.driver.client, self.run_id, self.scratch_labels)

    def preflight(self) -> None:
        """The one-off image is on the engine (before anything is stopped)."""
        try:
            self.scratch().require_images([self.image])
        except DriverError as exc:
            raise OfflineUnavailable(f"image {self.image} for the one-off neo4j-admin container is not on the engine: "
                              f"{self.service} was not stopped", hint="build or pull the environment's Neo4j image "
                              "on this engine first") from exc

    def stop(self) -> None:
        self.preflight()
        self.stopped = [self.container.name]
        self.log(f"stopping {self.container.name} (grace {self.stop_grace_s}s)")
        try:
            self.container.stop(timeout=self.stop_grace_s)
        except Exception:
            self.start()  # dump_offline / load_offline only restart after a successful stop
            raise

    def start(self) -> None:
        from drivers.engine import bolt_check

        self.driver.start_containers(self.stopped or [self.container.name])
        host, port = self.driver.probe_address(self.container, 7687)
        self.uri = f"bolt://{host}:{port}"
        self.health = self.driver.wait_healthy(self.container, bolt_check(host, port, self.user, self.password),
                                               f"{self.container.name} to accept a Bolt login again",
                                               self.start_deadline_s, interval_s=1)
        self.log(f"{self.container.name} healthy again: {self.health}")

    def _run(self, short: str, argv: list[str], files: list[Any] = ()) -> tuple[Any, Any, Any]:
        from helix_ops.errors import CommandFailed

        eng = self.scratch()
        container, result = eng.run_to_exit(short, self.image, argv, volumes={self.data_volume: "/data"},
                                            files=files, deadline_s=self.admin_deadline_s)
        self.admin_seconds += result.seconds
        self.log(f"{' '.join(argv[:4])} in a one-off container: exit {result.rc} in {result.seconds:.1f}s")
        if result.rc != 0:
            raise CommandFailed(argv, result.rc, result.output[-2000:])
        return eng, container, result

    def dump(self, write: Callable[[bytes], Any], database: str = "neo4j") -> int:
        from helix_ops.backup import neo4j_dump_argv

        eng = self.scratch()
        try:
            _, container, _ = self._run("dump", neo4j_dump_argv(database, ADMIN_DIR))
            size = 0
            for chunk in eng.read_file(container, f"{ADMIN_DIR}/{database}.dump"):
                write(chunk)
                size += len(chunk)
            return size
        finally:
            eng.cleanup()

    def load(self, chunks: Iterable[bytes], size: int, database: str = "neo4j") -> None:
        import tarfile

        from helix_ops.backup import neo4j_load_argv

        def fill(tar: tarfile.TarFile, uid: int, gid: int) -> None:  # written while the chunks arrive: one copy on disk
            info = tarfile.TarInfo(f"{ADMIN_DIR.lstrip('/')}/{database}.dump")
            info.size, info.mode, info.uid, info.gid, info.mtime = size, 0o600, uid, gid, int(time.time())
            reader = _ChunksReader(chunks)
            tar.addfile(info, reader)
            reader.drain()  # the store checks the raw sha256 at the end of the stream

        self._run_with_files("load", neo4j_load_argv(database, ADMIN_DIR), fill)

    def import_csv(self, csvs: Any, database: str = "neo4j") -> None:
        """``neo4j-admin database import full`` in a one-off container on the data volume, the CSV files copied
        into its own ``/backups/import`` first."""
        import tarfile

        from helix_ops.backup import neo4j_import_argv

        folder = f"{ADMIN_DIR}/import"

        def fill(tar: tarfile.TarFile, uid: int, gid: int) -> None:
            def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
                info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
                return info

            tar.add(csvs.folder, arcname=folder.lstrip("/"), filter=owned)

        argv = neo4j_import_argv(database, folder, csvs.nodes, csvs.relationships, multiline=csvs.multiline)
        self._run_with_files("import", argv, fill, environment={"JAVA_OPTS": IMPORT_JAVA_OPTS})

    def swap_store(self, op: str, database: str = "neo4j") -> None:
        """:func:`helix_ops.backup.neo4j_store_swap_argv` in a one-off container on the data volume."""
        from helix_ops.backup import neo4j_store_swap_argv

        self._run_with_files(f"swap-{op}", neo4j_store_swap_argv(op, "/data", database), lambda tar, uid, gid: None)

    def _run_with_files(self, short: str, argv: list[str], fill: Callable[[Any, int, int], None],
                        environment: dict[str, str] | None = None) -> None:
        """Run ``argv`` in a one-off container on the data volume, after copying in the files ``fill`` writes
        into a tar (given the image's neo4j uid and gid): one tar on local disk, then the archive API."""
        import tarfile
        import tempfile

        eng = self.scratch()
        uid, gid = _image_ids(self.driver.client, self.image)
        try:
            with tempfile.TemporaryFile() as tar_file:
                with tarfile.open(fileobj=tar_file, mode="w") as tar:
                    fill(tar, uid, gid)
                tar_file.seek(0)
                container = eng._create(short, self.image, command=argv, entrypoint=None, environment=environment,
                                        volumes={self.data_volume: "/data"}, ports=(), user=None, mem_limit=None)
                container.put_archive("/", tar_file)
            self._start_and_wait(eng, container, argv)
        finally:
            eng.cleanup()

    def _start_and_wait(self, eng: Any, container: Any, argv: list[str]) -> None:
        from helix_ops.errors import CommandFailed, WaitTimeout

        t0 = time.monotonic()
        container.start()
        try:
            status = container.wait(timeout=self.admin_deadline_s)
        except Exception as exc:  # noqa: BLE001 - requests' timeout types
            raise WaitTimeout(f"{' '.join(argv[:4])} in {container.name} to finish",
                              f"still running after {self.admin_deadline_s:.0f}s") from exc
        seconds = round(time.monotonic() - t0, 2)
        self.admin_seconds += seconds
        rc = int(status.get("StatusCode", -1))
        self.log(f"{' '.join(argv[:4])} in a one-off container: exit {rc} in {seconds:.1f}s")
        if rc != 0:
            raise CommandFailed(argv, rc, container.logs().decode(errors="replace")[-20000:])
