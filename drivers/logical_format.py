"""The logical export's format: its name and version, the value tags, and reading its records (no Neo4j
driver here, so a conversion worker does not load it).

**Format** ``helix-neo4j-logical``, version 2 (:data:`FORMAT`, :data:`FORMAT_VERSION`; versions 1 and 2 are
read, :data:`READS_VERSIONS`): zstd-compressed JSON lines (the storage layer compresses), one record each:

* ``{"format": "helix-neo4j-logical", "version": 2, "server_version": …, "edition": …, "database": …}``
* ``{"n": <id>, "l": [labels], "p": {props}}`` for each node, then
* ``{"r": <type>, "s": <start id>, "e": <end id>, "p": {props}}`` for each relationship, then
* ``{"schema": "constraint"|"index", "name": …, "statement": <its createStatement>}``, then
* ``{"end": true, "nodes": N, "relationships": M}`` (a file without it is truncated and refused).

**Property values**: JSON strings, integers, booleans and finite floats as they are; anything else a one-key
object tagged with one of the ``TAG_*`` names below: ``{"$f": "nan"}``, ``{"$b": base64}`` (byte arrays),
``{"$date": iso}``, ``{"$time": iso}`` (with offset), ``{"$ltime": iso}``, ``{"$dt": iso with offset[zone id]}``
(Neo4j's own text), ``{"$ldt": iso}``, ``{"$dur": [months, days, seconds, nanoseconds]}``,
``{"$pt": srid, "c": [x, y(, z)]}``; lists element-wise. Version 1 wrote a zoned datetime as
``{"$dt": local iso, "z": zone id}``, which loses the offset in a DST overlap; both forms are read. Temporal
text is Neo4j's own (``toString``'s), so nanoseconds and years outside 1-9999 survive.

Who writes and reads values: :mod:`drivers.neo4j_raw` (the export's text from Bolt's fields),
:mod:`drivers.neo4j_values` (Python values and the Cypher that types or builds them on the server),
:mod:`drivers.neo4j_csv` (the values as ``neo4j-admin database import`` columns).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson

from helix_ops.errors import BackupIntegrityError

FORMAT = "helix-neo4j-logical"
FORMAT_VERSION = 2
READS_VERSIONS = (1, 2)  # 2: zoned datetimes as Neo4j writes them (offset and zone), temporals stringified by the server


# --- value tags: the one table (a property value JSON cannot hold exactly is ``{tag: …}``) --------------------

TAG_FLOAT = "$f"  # a float that is not finite: {"$f": "nan" | "inf" | "-inf"}
TAG_BYTES = "$b"  # a byte array: {"$b": base64}
TAG_DATE = "$date"
TAG_TIME = "$time"  # with its offset
TAG_LTIME = "$ltime"
TAG_DT = "$dt"  # version 2: Neo4j's text, offset and optional [zone id]; version 1: local text, zone in ZONE_KEY
TAG_LDT = "$ldt"
TAG_DUR = "$dur"  # [months, days, seconds, nanoseconds]
TAG_PT = "$pt"  # the srid; the coordinates in COORDS_KEY
ZONE_KEY = "z"  # beside TAG_DT in version 1 only: the zone id
COORDS_KEY = "c"  # beside TAG_PT: [x, y] or [x, y, z]

TEMPORAL_TAGS: dict[str, tuple[str, str]] = {
    TAG_DATE: ("date", "DATE"),
    TAG_LTIME: ("localtime", "LOCAL TIME"),
    TAG_TIME: ("time", "ZONED TIME"),
    TAG_LDT: ("localdatetime", "LOCAL DATETIME"),
    TAG_DT: ("datetime", "ZONED DATETIME"),
}
"""Temporal tag → (Neo4j's name of the type: its Cypher function and its ``neo4j-admin import`` column type,
the Cypher type a value is tested for with ``IS ::``)."""

VALUE_TAGS = frozenset({TAG_FLOAT, TAG_BYTES, *TEMPORAL_TAGS, TAG_DUR, TAG_PT})


@dataclass
class LogicalStats:
    nodes: int = 0
    relationships: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    relationship_types: dict[str, int] = field(default_factory=dict)
    constraints: int = 0
    indexes: int = 0
    seconds: float = 0.0


def parse_line(raw: bytes) -> dict[str, Any]:
    try:
        return orjson.loads(raw)
    except ValueError:
        raise BackupIntegrityError("logical export holds a line that is not JSON") from None


def check_header(rec: dict[str, Any]) -> None:
    """The export's first record: this format, a version this code reads."""
    if rec.get("format") != FORMAT:
        raise BackupIntegrityError("not a helix-neo4j-logical export")
    if rec.get("version") not in READS_VERSIONS:
        raise BackupIntegrityError(f"logical export version {rec.get('version')} is not supported "
                                   f"(this helix-ops reads versions {', '.join(map(str, READS_VERSIONS))}: restore it with "
                                   "the helix-ops version that wrote it, or a newer one)")


class RecordOrder:
    """Where an export's records may be: the header first, nothing after the end record, which must come."""

    def __init__(self) -> None:
        self.header: dict[str, Any] | None = None
        self.end: dict[str, Any] | None = None

    def record(self, raw: bytes) -> dict[str, Any] | None:
        """The record on line ``raw`` (None for a blank line), checked for its place."""
        if not raw.strip():
            return None
        rec = parse_line(raw)
        if self.header is None:
            check_header(rec)
            self.header = rec
        else:
            self.placed()
        if rec.get("end"):
            self.end = rec
        return rec

    def placed(self) -> None:
        """A record read without :meth:`record` (a node or relationship line) is in its place."""
        if self.header is None:
            raise BackupIntegrityError("not a helix-neo4j-logical export")
        if self.end is not None:
            raise BackupIntegrityError("logical export has records after its end record")

    def finished(self) -> None:
        if self.end is None:
            raise BackupIntegrityError("logical export is truncated (no end record)")


def read_records(stream: BinaryIO | Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """Records of a logical export, checking the header first and the end record last."""
    order = RecordOrder()
    for raw in stream:
        rec = order.record(raw)
        if rec is not None:
            yield rec
    order.finished()


def check_end(end: dict[str, Any] | None, stats: LogicalStats) -> None:
    """The export's end record must name the nodes and relationships read (else it is refused)."""
    if end is None or end.get("nodes") != stats.nodes or end.get("relationships") != stats.relationships:
        raise BackupIntegrityError(f"logical export counts disagree: end record {end}, read "
                                   f"{stats.nodes} nodes / {stats.relationships} relationships")
