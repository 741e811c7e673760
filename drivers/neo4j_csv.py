"""The logical export as CSV files for ``neo4j-admin database import`` (see :mod:`drivers.neo4j_import`).

No Neo4j driver here: the conversion's worker processes (:func:`_serve_conversion`) import only this module,
the format (:mod:`drivers.logical_format`) and orjson.
"""

from __future__ import annotations

import base64
import csv
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from drivers.logical_format import (
    COORDS_KEY,
    TAG_BYTES,
    TAG_DUR,
    TAG_FLOAT,
    TAG_PT,
    TEMPORAL_TAGS,
    ZONE_KEY,
    LogicalStats,
    RecordOrder,
    check_end,
    parse_line,
    read_records,
)
from helix_ops.errors import BackupIntegrityError, DriverError

ARRAY_DELIMITER = "\x1f"
"""Between list elements (``--array-delimiter=U+001F``): a control character no Helix string holds."""

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
        if ZONE_KEY in v:
            raise ImportUnsupported("a zoned datetime of export format version 1")
        return ctype, v[tag]
    return text


_TAGGED: dict[str, Callable[[dict[str, Any], str], tuple[str, str]]] = {
    TAG_FLOAT: lambda v, tag: ("double", _float(float(v[tag]))),
    TAG_DUR: lambda v, tag: ("duration", duration_text(*v[tag])),
    TAG_PT: lambda v, tag: ("point", point_text(v[tag], v[COORDS_KEY])),
    **{tag: _temporal(ctype) for tag, (ctype, _) in TEMPORAL_TAGS.items()},
}
"""A tagged value's tag → its ``(type, text)`` (the format's tags, :mod:`drivers.logical_format`)."""


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
    if kind is dict and TAG_BYTES in v:
        raw = base64.b64decode(v[TAG_BYTES])
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
        try:
            self._add(rec)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:  # valid JSON, not a record
            raise BackupIntegrityError(f"logical export holds a malformed record ({type(exc).__name__}: {exc}): "
                                       f"{str(rec)[:120]}") from None

    def _add(self, rec: dict[str, Any]) -> None:
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
    (:func:`_serve_conversion`; 0: in this one). This process checks the records' order, keeps the schema and
    the end record, and hands the node and relationship lines out :data:`_BATCH_BYTES` at a time; each worker
    writes its own files (a signature has one file per worker: the importer takes several). Same errors as
    :func:`to_csv`; a worker that dies raises DriverError."""
    if workers <= 0:
        return to_csv(read_records(stream), folder, log)
    from drivers.pyworker import PyWorkers

    out = _fresh(folder)
    t0 = time.monotonic()
    first = [orjson.dumps({"folder": str(folder), "prefix": f"w{i}-"}, option=orjson.OPT_APPEND_NEWLINE)
             for i in range(workers)]
    order = RecordOrder()
    pool: PyWorkers | None = None
    try:
        pool = PyWorkers(workers, "drivers.neo4j_csv", "_serve_conversion", first)
        _hand_out(stream, pool, order, out, log, t0)
        pool.end_input()
        summaries = []
        for i, proc in enumerate(pool.procs):
            line = proc.stdout.readline()
            if not line:
                raise DriverError(f"a conversion worker exited (code {proc.wait()}): {pool.stderr_tail(i)}",
                                  hint="its last lines are above; is the machine out of memory or disk?")
            summaries.append(orjson.loads(line))
    finally:
        if pool is not None:
            pool.close()
    for kind, error in (("integrity", BackupIntegrityError), ("unsupported", ImportUnsupported)):  # a damaged
        for summary in summaries:  # export is refused, not loaded transactionally instead
            if kind in summary:
                raise error(summary[kind])
    order.finished()
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


def _hand_out(stream: BinaryIO | Iterable[bytes], pool: Any, order: RecordOrder, out: CsvSet,
              log: Callable[[str], None], t0: float) -> None:
    """The stream's node and relationship lines to the workers in turn, the rest kept in ``out`` / ``order``.
    Returns early when a worker gave up (its pipe is broken: its summary says why)."""
    batch, turn, lines, logged = bytearray(), 0, 0, 0
    workers = len(pool.procs)

    def send() -> bool:
        nonlocal turn
        try:
            pool.procs[turn].stdin.write(batch)
        except BrokenPipeError:
            return False
        batch.clear()
        turn = (turn + 1) % workers
        return True

    for raw in stream:
        if raw[:5] == b'{"n":' or raw[:5] == b'{"r":':  # the export's node and relationship lines
            order.placed()
            batch += raw if raw[-1:] == b"\n" else raw + b"\n"
        else:
            rec = order.record(raw)
            if rec is None or rec is order.header:
                continue
            if "n" in rec or "r" in rec:  # a record written with another key order: a worker's still
                batch += orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE)
            elif "schema" in rec:
                out.schema.append((rec["schema"], rec["name"], rec["statement"]))
                continue
            else:
                continue
        lines += 1
        if len(batch) >= _BATCH_BYTES and not send():
            return
        if lines - logged >= 500_000:
            logged = lines
            log(f"converting: {lines} records handed out ({time.monotonic() - t0:.0f}s)")
    if batch:
        send()


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
        summary = {"nodes": out.stats.nodes, "relationships": out.stats.relationships, "labels": out.stats.labels,
                   "types": out.stats.relationship_types, "node_files": out.nodes,
                   "relationship_files": out.relationships, "multiline": out.multiline}
    except ImportUnsupported as exc:
        summary = {"unsupported": str(exc)}
    except BackupIntegrityError as exc:
        summary = {"integrity": str(exc)}
    finally:
        conv.close()  # the files complete before the summary names them
    stdout.write(orjson.dumps(summary, option=orjson.OPT_APPEND_NEWLINE))
    stdout.flush()
