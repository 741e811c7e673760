"""Restore a logical export through ``neo4j-admin database import full``: offline, into a stopped Neo4j.

Why: :func:`drivers.neo4j_backup.load_logical` writes every node and relationship through Cypher, with two index
seeks per relationship; at 200k nodes / 400k relationships that took 11x the time of a dump's load. The
importer writes the store files directly.

How (:func:`import_logical`):

1. **convert** (Neo4j still running, nothing changed yet): the export's records become CSV files in a work
   folder, one header file and one data file per *property signature* (the set of ``key:type`` of a node or
   relationship). Labels go in a ``:LABEL`` column and types in a ``:TYPE`` column, the ids are the export's node
   ids (``--id-type=integer``), and every field is quoted (a quoted ``""`` is an empty string, not a missing
   value). The schema statements are kept aside.
2. **import** (Neo4j still serving the old store): ``neo4j-admin database import full`` with zero bad-entry
   tolerance into a *staging* database (``helix-restore``: Community never hosts a second user database, so the
   server ignores its folder). A failed import changes nothing.
3. **the window**: stop Neo4j, swap the staging store and transaction logs in for the database's (the replaced
   ones kept aside, :func:`helix_ops.backup.neo4j_store_swap_argv`), start Neo4j and check the counts; if it
   does not come up or the counts differ, the replaced store goes back and Neo4j starts on it. Then the
   replaced store is removed. The downtime is a stop and a start, whatever the graph's size.
4. **schema**: the export's constraints and indexes are created over Bolt after the data, and the indexes are
   awaited.

Values CSV cannot carry exactly raise :class:`ImportUnsupported` in step 1, before anything is stopped: an empty
list or byte array (the importer reads an empty field as "no property"), a string list holding an empty string
or the array delimiter (U+001F), a key with ``:`` in it, a label with the delimiter, a version-1 zoned datetime.
The caller then loads transactionally (:func:`drivers.neo4j_backup.load_logical`) instead.

Every field's text was checked against Neo4j 5.26's importer: temporal text as Neo4j writes it (zones, offsets,
nanoseconds, years beyond 9999), durations with negative parts, ``NaN``/``Infinity``, ``-0.0``, ``5e-324``,
points of the four CRSs and lists of them, byte arrays, NUL and newlines in strings (``--multiline-fields`` is
turned on only when a value holds a line break: it is slower).
"""

from __future__ import annotations

import base64
import csv
import math
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import neo4j.exceptions as nex
import orjson

from drivers.neo4j_backup import (
    LogicalStats,
    OfflineNeo4j,
    PhysicalResult,
    RecordOrder,
    _driver,
    _translate,
    apply_schema,
    check_end,
    parse_line,
    read_records,
)
from helix_ops.errors import BackupIntegrityError, CommandFailed, DriverError

if TYPE_CHECKING:  # not at run time: a conversion worker would carry pydantic for nothing
    from pydantic import SecretStr

ARRAY_DELIMITER = "\x1f"
"""Between list elements (``--array-delimiter=U+001F``): a control character no Helix string holds."""

_TEMPORAL = {"$date": "date", "$ltime": "localtime", "$time": "time", "$ldt": "localdatetime", "$dt": "datetime"}
_CRS = {7203: ("cartesian", ("x", "y")), 9157: ("cartesian-3d", ("x", "y", "z")),
        4326: ("wgs-84", ("longitude", "latitude")), 4979: ("wgs-84-3d", ("longitude", "latitude", "height"))}
MAX_OPEN_FILES = 64


class ImportUnsupported(Exception):
    """The export holds a value the CSV importer cannot carry exactly; load it transactionally instead."""


# --- values -------------------------------------------------------------------------------------------------


_FLOAT_WORDS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _float(f: float) -> str:
    text = repr(f)
    return _FLOAT_WORDS.get(text, text)


def duration_text(months: int, days: int, seconds: int, nanos: int) -> str:
    """ISO text of Neo4j's duration components (``nanos`` in [0, 1e9), ``seconds`` of any sign)."""
    if seconds < 0 and nanos:
        secs = f"-{-seconds - 1}.{1_000_000_000 - nanos:09d}"
    else:
        secs = f"{seconds}.{nanos:09d}"
    return f"P{months}M{days}DT{secs}S"


def point_text(srid: int, coords: list[float]) -> str:
    crs = _CRS.get(int(srid))
    if crs is None or len(coords) != len(crs[1]):
        raise BackupIntegrityError(f"unknown point srid {srid} with {len(coords)} coordinates")
    parts = ", ".join([f"{name}:{_float(float(c))}" for name, c in zip(crs[1], coords)])
    return f"{{{parts}, crs:'{crs[0]}'}}"


def _temporal(ctype: str) -> Callable[[dict[str, Any], str], tuple[str, str]]:
    def text(v: dict[str, Any], tag: str) -> tuple[str, str]:
        if "z" in v:
            raise ImportUnsupported("a zoned datetime of export format version 1")
        return ctype, v[tag]
    return text


_TAGGED: dict[str, Callable[[dict[str, Any], str], tuple[str, str]]] = {
    "$f": lambda v, tag: ("double", _float(float(v[tag]))),
    "$dur": lambda v, tag: ("duration", duration_text(*v[tag])),
    "$pt": lambda v, tag: ("point", point_text(v[tag], v["c"])),
    **{tag: _temporal(ctype) for tag, ctype in _TEMPORAL.items()},
}
"""A tagged value's tag → its ``(type, text)`` (the export's tags, see drivers/neo4j_backup.py)."""


def _scalar(v: Any) -> tuple[str, str]:
    kind = type(v)  # exact types (bool is an int subclass): what orjson gives, checked most frequent first
    if kind is str:
        return "string", v
    if kind is int:
        return "long", str(v)
    if kind is float:
        return "double", _float(v)
    if kind is bool:
        return "boolean", "true" if v else "false"
    if kind is dict:
        for tag in v:
            text = _TAGGED.get(tag)
            if text is not None:
                return text(v, tag)
    raise ImportUnsupported(f"a value the importer does not know: {str(v)[:60]}")


def csv_value(v: Any) -> tuple[str, str]:
    """``(importer type, field text)`` of one exported property value (the logical format's encoding)."""
    kind = type(v)
    if kind is dict and "$b" in v:
        raw = base64.b64decode(v["$b"])
        if not raw:
            raise ImportUnsupported("an empty byte array")
        return "byte[]", ARRAY_DELIMITER.join(str(b - 256 if b > 127 else b) for b in raw)
    if kind is list:
        if not v:
            raise ImportUnsupported("an empty list")
        items = [_scalar(x) for x in v]
        types = {t for t, _ in items}
        if len(types) > 1:
            raise ImportUnsupported(f"a list of mixed types {sorted(types)}")
        ctype = items[0][0]
        texts = [t for _, t in items]
        if ctype == "string" and ("" in texts or any(ARRAY_DELIMITER in t for t in texts)):
            raise ImportUnsupported("a string list holding an empty string or U+001F")
        return ctype + "[]", ARRAY_DELIMITER.join(texts)
    return _scalar(v)


_KEYS_SEEN: set[str] = set()
"""Property keys already checked (a graph has few; checking each record's again cost a tenth of the time)."""


def _row(props: dict[str, Any]) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """(signature, texts in signature order) of one record's properties."""
    signature = []
    texts = []
    for key in sorted(props):
        if key not in _KEYS_SEEN:
            if ":" in key or not key:
                raise ImportUnsupported(f"a property key the importer's header cannot name: {key!r}")
            _KEYS_SEEN.add(key)
        ctype, text = csv_value(props[key])
        signature.append((key, ctype))
        texts.append(text)
    return tuple(signature), texts


# --- conversion ---------------------------------------------------------------------------------------------


@dataclass
class CsvSet:
    """The CSV files of one export, ready for the importer (names relative to ``folder``)."""

    folder: Path
    nodes: list[tuple[str, str]] = field(default_factory=list)  # (header file, data file)
    relationships: list[tuple[str, str]] = field(default_factory=list)
    schema: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, statement)
    stats: LogicalStats = field(default_factory=LogicalStats)
    multiline: bool = False
    bytes: int = 0


class _Groups:
    """One CSV data file per signature; at most ``MAX_OPEN_FILES`` open at once (reopened for appending)."""

    def __init__(self, out: CsvSet, kind: str, id_columns: list[str]) -> None:
        self.out, self.kind, self.id_columns = out, kind, id_columns
        self.names: dict[tuple[tuple[str, str], ...], str] = {}
        self.open: OrderedDict[str, tuple[Any, Any]] = OrderedDict()

    def write(self, signature: tuple[tuple[str, str], ...], row: list[str]) -> None:
        name = self.names.get(signature)
        if name is None:
            name = f"{self.kind}-{len(self.names):04d}"
            self.names[signature] = name
            header = [*self.id_columns, *(f"{k}:{t}" for k, t in signature)]
            with open(self.out.folder / f"{name}.header.csv", "w", newline="", encoding="utf-8") as f:
                csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(header)
            (self.out.nodes if self.id_columns[0] == ":ID" else self.out.relationships).append(
                (f"{name}.header.csv", f"{name}.csv"))
        handle = self.open.get(name)
        if handle is None:
            if len(self.open) >= MAX_OPEN_FILES:
                _, (f, _) = self.open.popitem(last=False)
                f.close()
            f = open(self.out.folder / f"{name}.csv", "a", newline="", encoding="utf-8")  # noqa: SIM115
            handle = (f, csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n"))
            self.open[name] = handle
        else:
            self.open.move_to_end(name)
        handle[1].writerow(row)

    def close(self) -> None:
        for f, _ in self.open.values():
            f.close()
        self.open.clear()


def _has_break(texts: list[str]) -> bool:
    joined = "".join(texts)
    return "\n" in joined or "\r" in joined


class _Converter:
    """Records (dicts of the export) → CSV rows in ``out.folder``, file names starting with ``prefix``."""

    def __init__(self, out: CsvSet, prefix: str = "") -> None:
        self.out = out
        self.nodes = _Groups(out, f"{prefix}nodes", [":ID", ":LABEL"])
        self.rels = _Groups(out, f"{prefix}relationships", [":START_ID", ":END_ID", ":TYPE"])
        self.end: dict[str, Any] | None = None

    def add(self, rec: dict[str, Any]) -> None:
        out, stats = self.out, self.out.stats
        if "n" in rec:
            labels = rec["l"]
            if any(ARRAY_DELIMITER in lab for lab in labels):
                raise ImportUnsupported("a label holding U+001F")
            signature, texts = _row(rec["p"])
            out.multiline = out.multiline or _has_break(texts) or _has_break(labels)
            self.nodes.write(signature, [str(rec["n"]), ARRAY_DELIMITER.join(labels), *texts])
            stats.nodes += 1
            for lab in labels:
                stats.labels[lab] = stats.labels.get(lab, 0) + 1
        elif "r" in rec:
            signature, texts = _row(rec["p"])
            out.multiline = out.multiline or _has_break(texts) or _has_break([rec["r"]])
            self.rels.write(signature, [str(rec["s"]), str(rec["e"]), rec["r"], *texts])
            stats.relationships += 1
            stats.relationship_types[rec["r"]] = stats.relationship_types.get(rec["r"], 0) + 1
        elif "schema" in rec:
            out.schema.append((rec["schema"], rec["name"], rec["statement"]))
        elif rec.get("end"):
            self.end = rec

    def close(self) -> None:
        self.nodes.close()
        self.rels.close()


def _fresh(folder: Path) -> CsvSet:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return CsvSet(folder)


def _finish(out: CsvSet, end: dict[str, Any] | None, t0: float) -> CsvSet:
    check_end(end, out.stats)
    out.bytes = sum(p.stat().st_size for p in out.folder.iterdir())
    out.stats.seconds = time.monotonic() - t0
    return out


def to_csv(records: Iterable[dict[str, Any]], folder: Path,
           log: Callable[[str], None] = lambda m: None) -> CsvSet:
    """Write the export's ``records`` (from :func:`read_records`) as importer CSV files into ``folder`` (created
    empty), in this process. Raises :class:`ImportUnsupported` for a value CSV cannot carry,
    BackupIntegrityError when the export's end record disagrees with what was read."""
    out = _fresh(folder)
    conv = _Converter(out)
    t0 = time.monotonic()
    try:
        for rec in records:
            conv.add(rec)
            if "n" in rec and out.stats.nodes % 100_000 == 0 or "r" in rec and out.stats.relationships % 200_000 == 0:
                log(f"converted {out.stats.nodes} nodes, {out.stats.relationships} relationships "
                    f"({time.monotonic() - t0:.0f}s)")
    finally:
        conv.close()
    return _finish(out, conv.end, t0)


CONVERT_WORKERS = 2
"""Processes converting in :func:`to_csv_parallel` by default (two cores; Neo4j idles meanwhile)."""
_BATCH_BYTES = 1 << 18
"""Lines handed to one conversion worker at a time: a fraction of its pipe (:data:`drivers.pyworker.PIPE_BYTES`), so one
worker's full pipe does not leave the other idle while this process waits on it."""


def to_csv_parallel(stream: BinaryIO | Iterable[bytes], folder: Path, workers: int = CONVERT_WORKERS,
                    log: Callable[[str], None] = lambda m: None) -> CsvSet:
    """:func:`to_csv` of the export's lines in ``stream``, the records converted by ``workers`` processes
    (:func:`_serve_conversion`; 0: in this one). This process checks the header, keeps the schema and the end
    record, and hands the node and relationship lines out a MiB at a time; each worker writes its own files
    (a signature has one file per worker: the importer takes several). Same errors as :func:`to_csv`."""
    if workers <= 0:
        return to_csv(read_records(stream), folder, log)
    from drivers.pyworker import PyWorkers

    out = _fresh(folder)
    t0 = time.monotonic()
    first = [orjson.dumps({"folder": str(folder), "prefix": f"w{i}-"}, option=orjson.OPT_APPEND_NEWLINE)
             for i in range(workers)]
    pool = PyWorkers(workers, "drivers.neo4j_import", "_serve_conversion", first)
    order = RecordOrder()
    try:
        batch, turn, lines = bytearray(), 0, 0
        try:
            for raw in stream:
                if raw[:5] == b'{"n":' or raw[:5] == b'{"r":':  # the export's node and relationship lines
                    order.placed()
                    batch += raw if raw[-1:] == b"\n" else raw + b"\n"
                    lines += 1
                    if len(batch) >= _BATCH_BYTES:
                        pool.procs[turn].stdin.write(batch)
                        batch.clear()
                        turn = (turn + 1) % workers
                        if turn == 0 and lines >= 500_000:
                            log(f"converting: {lines} lines handed out ({time.monotonic() - t0:.0f}s)")
                            lines = 0
                    continue
                rec = order.record(raw)
                if rec is None or rec is order.header:
                    continue
                if "n" in rec or "r" in rec:  # a record written with another key order: a worker's still
                    batch += orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE)
                elif "schema" in rec:
                    out.schema.append((rec["schema"], rec["name"], rec["statement"]))
            order.finished()
            if batch:
                pool.procs[turn].stdin.write(batch)
        except BrokenPipeError:
            pass  # a worker gave up: its summary says why
        pool.end_input()
        summaries = []
        for i, proc in enumerate(pool.procs):
            line = proc.stdout.readline()
            if not line:
                raise DriverError(f"a conversion worker exited (code {proc.wait()}): {pool.stderr_tail(i)}",
                                  hint="its last lines are above; is the machine out of memory or disk?")
            summaries.append(orjson.loads(line))
    finally:
        pool.close()
    for summary in summaries:
        if "unsupported" in summary:
            raise ImportUnsupported(summary["unsupported"])
        if "integrity" in summary:
            raise BackupIntegrityError(summary["integrity"])
    for summary in summaries:
        stats = out.stats
        stats.nodes += summary["nodes"]
        stats.relationships += summary["relationships"]
        for mine, theirs in ((stats.labels, summary["labels"]), (stats.relationship_types, summary["types"])):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count
        out.nodes += [tuple(pair) for pair in summary["node_files"]]
        out.relationships += [tuple(pair) for pair in summary["relationship_files"]]
        out.multiline = out.multiline or summary["multiline"]
    return _finish(out, order.end, t0)


def _serve_conversion() -> None:
    """A conversion worker's main loop (see :func:`to_csv_parallel`): its folder and file prefix on the first
    stdin line, then export lines until stdin ends; then one JSON summary line on stdout (counts and files,
    or why it gave up: ``unsupported`` / ``integrity``)."""
    import sys

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    setup = orjson.loads(stdin.readline())
    out = CsvSet(Path(setup["folder"]))
    conv = _Converter(out, setup["prefix"])
    summary: dict[str, Any]
    try:
        for line in stdin:
            conv.add(parse_line(line))
        conv.close()
        summary = {"nodes": out.stats.nodes, "relationships": out.stats.relationships, "labels": out.stats.labels,
                   "types": out.stats.relationship_types, "node_files": out.nodes,
                   "relationship_files": out.relationships, "multiline": out.multiline}
    except ImportUnsupported as exc:
        summary = {"unsupported": str(exc)}
    except BackupIntegrityError as exc:
        summary = {"integrity": str(exc)}
    finally:
        conv.close()
    stdout.write(orjson.dumps(summary, option=orjson.OPT_APPEND_NEWLINE))
    stdout.flush()


def import_error(output: str) -> str:
    """The lines of the importer's output that say what was wrong (its stack traces say little)."""
    keep = ("original error", "raw field value", "in field", "data source", "IllegalArgumentException",
            "doesn't exist", "OutOfMemoryError", "Error in input", "InputException")
    lines = [line.strip() for line in output.splitlines() if any(k in line for k in keep)]
    seen: list[str] = []
    for line in lines:
        if line not in seen:
            seen.append(line)
    return " | ".join(seen[:6]) or (output.strip().splitlines() or ["no output"])[-1]


# --- the offline window -------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    stats: LogicalStats
    physical: PhysicalResult
    convert_s: float
    csv_bytes: int
    schema_s: float
    import_s: float = 0.0  # the import itself, with Neo4j serving the old store


def import_logical(target: OfflineNeo4j, stream: BinaryIO | Iterable[bytes], workdir: Path, uri: str, user: str,
                   password: SecretStr | str, *, database: str = "neo4j", workers: int = CONVERT_WORKERS,
                   log: Callable[[str], None] = lambda m: None) -> ImportResult:
    """Convert the export in ``stream`` to CSV in ``workdir`` with ``workers`` processes (Neo4j untouched;
    :class:`ImportUnsupported` here means: load it transactionally), then :func:`import_csv_set`."""
    try:
        csvs = to_csv_parallel(stream, workdir, workers, log)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return import_csv_set(target, csvs, uri, user, password, database=database, log=log)


def import_csv_set(target: OfflineNeo4j, csvs: CsvSet, uri: str, user: str, password: SecretStr | str, *,
                   database: str = "neo4j", log: Callable[[str], None] = lambda m: None) -> ImportResult:
    """Import ``csvs`` into :data:`~helix_ops.backup.STAGING_DATABASE` while Neo4j still serves ``database``
    (a failed import changes nothing), then the window: stop Neo4j, swap the imported store in (the replaced
    one kept aside), start it and check its counts. If it does not come up or the counts differ, the replaced
    store is swapped back and Neo4j started on it before the error is raised. Then the replaced store is
    removed and the schema created. The CSV folder is removed. The downtime runs from the stop to the counts
    checked; the schema comes after it (the writers are still stopped then)."""
    from helix_ops.backup import STAGING_DATABASE

    _refuse_leftover(target, database)
    log(f"converted {csvs.stats.nodes} nodes, {csvs.stats.relationships} relationships into "
        f"{len(csvs.nodes) + len(csvs.relationships)} CSV files ({csvs.bytes / 2**20:.1f} MiB) "
        f"in {csvs.stats.seconds:.1f}s")
    t_import = time.monotonic()
    try:
        target.import_csv(csvs, STAGING_DATABASE)
    except BaseException as exc:
        _forget_staging(target, database, log)
        if not isinstance(exc, CommandFailed):
            raise
        raise DriverError(f"neo4j-admin database import failed (exit {exc.rc}): {import_error(exc.stderr)}; "
                          f"{database} was not touched (the import writes a staging store first)",
                          hint="the lines above name the field the importer refused") from exc
    finally:
        shutil.rmtree(csvs.folder, ignore_errors=True)
    import_s = time.monotonic() - t_import
    log(f"imported into a staging store in {import_s:.1f}s with Neo4j serving; stopping it to swap the store in")
    t0 = time.monotonic()
    target.stop()
    try:
        target.swap_store("in", database)
        target.start()
        uri = target.uri or uri
        _check_counts(uri, user, password, database, csvs.stats)
    except BaseException as exc:
        log(f"the restored store did not come up right ({exc}); putting the previous store back")
        _swap_back(target, database)
        raise DriverError(f"the imported store of {database} did not come up right: {exc}; the previous store is "
                          "back and Neo4j runs on it", hint="nothing was lost; the cause is above") from exc
    downtime = time.monotonic() - t0
    _forget_staging(target, database, log)
    t1 = time.monotonic()
    stats = csvs.stats
    try:
        with _driver(uri, user, password) as drv, drv.session(database=database) as s:
            stats.constraints, stats.indexes = apply_schema(s, csvs.schema)
    except (nex.Neo4jError, nex.DriverError, OSError) as exc:
        raise _translate(exc, "creating the schema after the import", uri) from exc
    log(f"swapped in with Neo4j down for {downtime:.1f}s; schema ({stats.constraints} constraints, "
        f"{stats.indexes} indexes) online {time.monotonic() - t1:.1f}s later")
    return ImportResult(stats, PhysicalResult(downtime), csvs.stats.seconds, csvs.bytes,
                        round(time.monotonic() - t1, 2), round(import_s, 2))


def _refuse_leftover(target: OfflineNeo4j, database: str) -> None:
    """Refuse to start (nothing changed yet) when an earlier restore was interrupted inside its window: the
    store it kept aside is the only copy of what Neo4j held before, and this restore's swap would replace it."""
    from helix_ops.backup import BEFORE_RESTORE, LEFTOVER_EXIT

    try:
        target.swap_store("check", database)
    except CommandFailed as exc:
        if exc.rc != LEFTOVER_EXIT:
            raise
        raise DriverError(
            f"an earlier restore of {database} was interrupted inside its window: Neo4j's data folder still holds "
            f"{BEFORE_RESTORE}/ (the store {database} had before that restore: {exc.stderr.strip() or 'see there'}); "
            "nothing was changed",
            hint=f"check what Neo4j serves now; keep it by removing {BEFORE_RESTORE}/ from the data folder, or put "
                 f"the old store back by moving {BEFORE_RESTORE}/databases/{database} and "
                 f"{BEFORE_RESTORE}/transactions/{database} over databases/ and transactions/ (Neo4j stopped); "
                 "then restore again") from None


def _check_counts(uri: str, user: str, password: SecretStr | str, database: str, stats: LogicalStats) -> None:
    with _driver(uri, user, password) as drv:
        got = drv.execute_query("CALL { MATCH (n) RETURN count(n) AS n } CALL { MATCH ()-[r]->() RETURN count(r) AS r }"
                                " RETURN n, r", database_=database).records[0]
    if (got["n"], got["r"]) != (stats.nodes, stats.relationships):
        raise BackupIntegrityError(f"{got['n']} nodes, {got['r']} relationships after the swap; the export holds "
                                   f"{stats.nodes}, {stats.relationships}")


def _swap_back(target: OfflineNeo4j, database: str) -> None:
    """Neo4j on the store the swap kept aside again (from any point of the window)."""
    try:
        target.stop()
    except Exception:  # noqa: BLE001 - it may not have started at all
        pass
    target.swap_store("back", database)
    target.start()


def _forget_staging(target: OfflineNeo4j, database: str, log: Callable[[str], None]) -> None:
    """Remove the staging store and the replaced one (space only: a failure is logged, not raised)."""
    try:
        target.swap_store("drop", database)
    except Exception as exc:  # noqa: BLE001 - the restore itself is done or already failing
        log(f"could not remove the staging / replaced store: {exc}")
