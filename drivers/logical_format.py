"""The logical export's format, without the Neo4j driver (so a conversion worker does not load it).

A logical export is zstd-compressed JSON lines: a header record (``format``, ``version``, server version and
edition, database), then one record per node (``n`` id, ``l`` labels, ``p`` properties) and per relationship
(``r`` type, ``s`` / ``e`` node ids, ``p``), the schema records (``schema``, ``name``, ``statement``) and an end
record with the counts (``end``, ``nodes``, ``relationships``). Property values are JSON where JSON is exact
and tagged objects otherwise (see :mod:`drivers.neo4j_backup`).
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
