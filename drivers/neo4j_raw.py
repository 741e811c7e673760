"""Fast export reads: Bolt's temporal and spatial structures turned straight into the logical format's text.

The Python driver hydrates every temporal value into a ``neo4j.time`` object (pure Python, and it cannot hold
years outside 1-9999); formatting it again cost most of an export's client time. Letting the server format
them instead (``toString`` per property, typed by ``IS ::``) moved the cost to the server: about 20x the cost
of ``properties(n)`` (profiled at 20k and 100k nodes). So the export reads ``properties(n)`` and, for the
length of its read transaction, replaces the connection's hydration of these structures with the functions
here. Each one turns the structure's fields (days since the epoch, nanoseconds of the day, UTC seconds and an
offset or a zone id, …) into exactly the text Neo4j's ``toString`` writes (tested against the server), tagged
as :mod:`drivers.logical_format` describes. The format does not change; only who writes the text.

A value this cannot write exactly (a zoned datetime outside years 1-9999 or in a zone this machine's tz
database lacks, an offset with seconds) hydrates to :data:`NEEDS_SERVER`; the export then asks the server to
type that one entity's properties (the old way). If the driver's internals this relies on are missing (a
driver upgrade), :func:`raw_hydration` yields False and the export types every property on the server.
"""

from __future__ import annotations

import datetime as _dt
import zoneinfo
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from drivers.logical_format import (
    COORDS_KEY,
    TAG_DATE,
    TAG_DT,
    TAG_DUR,
    TAG_LDT,
    TAG_LTIME,
    TAG_PT,
    TAG_TIME,
)

NEEDS_SERVER = object()
"""Hydrated in place of a value only the server can format exactly."""

_NANOS_PER_DAY = 86_400 * 10**9
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()


def civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of ``days`` since 1970-01-01, proleptic Gregorian, any year (H. Hinnant's
    ``civil_from_days``)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d


@lru_cache(maxsize=1 << 12)  # dates repeat; a hit costs a tenth of a formatting (small: each export worker has one)
def date_text(days: int) -> str:
    if -_EPOCH_ORDINAL < days < 2_932_897:  # years 1-9999: the C implementation
        return _dt.date.fromordinal(days + _EPOCH_ORDINAL).isoformat()
    y, m, d = civil(days)
    year = f"+{y}" if y > 9999 else (f"-{-y:04d}" if y < 0 else f"{y:04d}")
    return f"{year}-{m:02d}-{d:02d}"


@lru_cache(maxsize=1 << 12)  # seconds of the day (86 400 texts at most would be ~12 MiB per export worker)
def _hms(secs: int) -> str:
    h, rem = divmod(secs, 3600)
    return f"{h:02d}:{rem // 60:02d}:{rem % 60:02d}"


def time_text(nanos: int) -> str:
    """``HH:MM:SS[.fraction]`` of nanoseconds of the day, the fraction without trailing zeros (as Neo4j)."""
    secs, ns = divmod(nanos, 1_000_000_000)
    return f"{_hms(secs)}.{ns:09d}".rstrip("0") if ns else _hms(secs)


def offset_text(seconds: int) -> str:
    if seconds == 0:
        return "Z"
    if seconds % 60:
        raise ValueError("an offset with seconds")  # Neo4j cannot parse its own text for these
    sign = "-" if seconds < 0 else "+"
    h, m = divmod(abs(seconds) // 60, 60)
    return f"{sign}{h:02d}:{m:02d}"


def _local(seconds: int, nanos: int) -> str:
    days, secs = divmod(seconds, 86_400)
    return f"{date_text(days)}T{time_text(secs * 10**9 + nanos)}"


@lru_cache(maxsize=512)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


_UTC_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def _zone_offset(utc_seconds: int, zone: str) -> int:
    at = _UTC_EPOCH + _dt.timedelta(seconds=utc_seconds)  # OverflowError outside years 1-9999
    return int(at.astimezone(_zone(zone)).utcoffset().total_seconds())


# One function per Bolt 5 structure tag; fields as the protocol sends them.

def _date(days: int) -> dict[str, Any]:
    return {TAG_DATE: date_text(days)}


def _time(nanos: int, offset: int) -> dict[str, Any]:
    return {TAG_TIME: time_text(nanos) + offset_text(offset)}


def _local_time(nanos: int) -> dict[str, Any]:
    return {TAG_LTIME: time_text(nanos)}


def _datetime_offset(utc_seconds: int, nanos: int, offset: int) -> dict[str, Any]:
    return {TAG_DT: _local(utc_seconds + offset, nanos) + offset_text(offset)}


def _datetime_zone(utc_seconds: int, nanos: int, zone: str) -> dict[str, Any]:
    offset = _zone_offset(utc_seconds, zone)
    return {TAG_DT: f"{_local(utc_seconds + offset, nanos)}{offset_text(offset)}[{zone}]"}


def _local_datetime(seconds: int, nanos: int) -> dict[str, Any]:
    return {TAG_LDT: _local(seconds, nanos)}


def _duration(months: int, days: int, seconds: int, nanos: int) -> dict[str, Any]:
    return {TAG_DUR: [months, days, seconds, nanos]}


def _point(srid: int, *coords: float) -> dict[str, Any]:
    return {TAG_PT: srid, COORDS_KEY: [float(c) for c in coords]}


STRUCTURES: dict[bytes, Callable[..., Any]] = {
    b"D": _date, b"T": _time, b"t": _local_time, b"I": _datetime_offset, b"i": _datetime_zone,
    b"d": _local_datetime, b"E": _duration, b"X": _point, b"Y": _point,
}
"""Bolt 5 (UTC datetimes): the tags Neo4j 5 sends for property values."""


class _Scope:
    """A hydration scope whose structures become the format's tagged values (nodes and relationships as
    structures are not expected: the export returns ids, labels and property maps)."""

    def __init__(self, base: Any) -> None:
        from neo4j._codec.packstream import Structure

        self._base = base
        self.dehydration_hooks = base.dehydration_hooks

        def structure(value: Any) -> Any:
            f = STRUCTURES.get(value.tag)
            if f is None:
                return NEEDS_SERVER
            try:
                return f(*value.fields)
            except (ValueError, OverflowError, KeyError, zoneinfo.ZoneInfoNotFoundError, TypeError):
                return NEEDS_SERVER

        self.hydration_hooks = {Structure: structure}

    def get_graph(self) -> Any:
        return self._base.get_graph()


class _Handler:
    def __init__(self, base: Any) -> None:
        self._base = base

    def new_hydration_scope(self) -> _Scope:
        return _Scope(self._base.new_hydration_scope())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


@contextmanager
def raw_hydration(tx: Any) -> Iterator[bool]:
    """For the results of ``tx`` (a driver Transaction) run inside the block, hydrate temporal and spatial
    values as the format's tagged text. Yields False, changing nothing, when the driver's internals are not
    as expected or the protocol is older than Bolt 5 (then the caller must type values on the server)."""
    conn = getattr(tx, "_connection", None)
    handler = getattr(conn, "hydration_handler", None)
    version = getattr(conn, "PROTOCOL_VERSION", None)
    try:
        usable = (handler is not None and callable(getattr(handler, "new_hydration_scope", None))
                  and version is not None and tuple(version)[0] >= 5)
        if usable:
            from neo4j._codec.packstream import Structure  # noqa: F401 - present, or not usable
    except (ImportError, TypeError):
        usable = False
    if not usable:
        yield False
        return
    conn.hydration_handler = _Handler(handler)
    try:
        yield True
    finally:
        conn.hydration_handler = handler
