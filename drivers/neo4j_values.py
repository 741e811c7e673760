"""Property values of the logical backup, both ways: Python values ↔ the format's tagged JSON
(:func:`encode_value`, :func:`decode_value`), the load's split of what the server builds (:func:`split_props`,
:func:`typed_set`) and the export's fallback that has the server type every property
(:func:`typed_props_cypher`, :func:`props_from_typed`).

The tags and the format are :mod:`drivers.logical_format`'s; the export's fast path (text straight from Bolt's
fields) is :mod:`drivers.neo4j_raw`'s.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import Any

from neo4j.spatial import CartesianPoint, Point, WGS84Point
from neo4j.time import Date, DateTime, Duration, Time

from drivers.logical_format import (
    COORDS_KEY,
    TAG_BYTES,
    TAG_DATE,
    TAG_DT,
    TAG_DUR,
    TAG_FLOAT,
    TAG_LDT,
    TAG_LTIME,
    TAG_PT,
    TAG_TIME,
    TEMPORAL_TAGS,
    ZONE_KEY,
)
from helix_ops.errors import BackupIntegrityError, DriverError

# --- Python values ------------------------------------------------------------------------------------------


def _zone_name(tz: Any) -> str | None:
    for attr in ("zone", "key"):  # pytz / zoneinfo
        name = getattr(tz, attr, None)
        if isinstance(name, str):
            return name
    return None


def encode_value(v: Any) -> Any:
    """A property value as JSON-able data (see :mod:`drivers.logical_format` for the tags)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {TAG_FLOAT: repr(v)}
    if isinstance(v, (bytes, bytearray)):
        return {TAG_BYTES: base64.b64encode(bytes(v)).decode()}
    if isinstance(v, DateTime):
        if v.tzinfo is None:
            return {TAG_LDT: v.iso_format()}
        zone = _zone_name(v.tzinfo)
        if zone and zone != "UTC" or zone == "UTC" and type(v.tzinfo).__name__ != "timezone":
            return {TAG_DT: v.replace(tzinfo=None).iso_format(), ZONE_KEY: zone}
        return {TAG_DT: v.iso_format()}
    if isinstance(v, Date):
        return {TAG_DATE: v.iso_format()}
    if isinstance(v, Time):
        return {TAG_TIME: v.iso_format()} if v.tzinfo is not None else {TAG_LTIME: v.iso_format()}
    if isinstance(v, Duration):
        return {TAG_DUR: [v.months, v.days, v.seconds, v.nanoseconds]}
    if isinstance(v, Point):
        return {TAG_PT: v.srid, COORDS_KEY: [float(c) for c in v]}
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
    if TAG_FLOAT in v:
        return float(v[TAG_FLOAT])
    if TAG_BYTES in v:
        return base64.b64decode(v[TAG_BYTES])
    if TAG_DATE in v:
        return Date.from_iso_format(v[TAG_DATE])
    if TAG_LTIME in v:
        return Time.from_iso_format(v[TAG_LTIME])
    if TAG_TIME in v:
        return Time.from_iso_format(_z(v[TAG_TIME]))
    if TAG_LDT in v:
        return DateTime.from_iso_format(v[TAG_LDT])
    if TAG_DT in v:
        import pytz

        if ZONE_KEY in v:  # version 1: local time and zone
            return pytz.timezone(v[ZONE_KEY]).localize(DateTime.from_iso_format(v[TAG_DT]))
        text, _, zone = v[TAG_DT].partition("[")  # version 2: Neo4j's text, offset and optional [zone]
        at = DateTime.from_iso_format(_z(text))
        return at.astimezone(pytz.timezone(zone[:-1])) if zone else at
    if TAG_DUR in v:
        months, days, seconds, nanos = v[TAG_DUR]
        return Duration(months=months, days=days, seconds=seconds, nanoseconds=nanos)
    if TAG_PT in v:
        cls = _POINTS.get(int(v[TAG_PT]))
        if cls is None:
            raise BackupIntegrityError(f"unknown point srid {v[TAG_PT]}")
        return cls(tuple(v[COORDS_KEY]))
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
    **{tag: (tag[1:], f"{function}({{v}})") for tag, (function, _) in TEMPORAL_TAGS.items()},
    TAG_DUR: (TAG_DUR[1:], "duration({{months: {v}[0], days: {v}[1], seconds: {v}[2], nanoseconds: {v}[3]}})"),
    TAG_PT: (TAG_PT[1:], "point({v})"),
}
"""A format tag → (the tag the load's rows carry, the Cypher that builds the value from ``{v}``)."""


def _server_value(v: dict[str, Any]) -> tuple[str, Any] | None:
    """(tag, argument) for a value the server constructs, None for the others."""
    for key, (tag, _) in _SERVER_TAGS.items():
        if key in v:
            if key == TAG_DT and ZONE_KEY in v:
                return tag, f"{v[TAG_DT]}[{v[ZONE_KEY]}]"
            if key == TAG_PT:
                c = v[COORDS_KEY]
                if int(v[TAG_PT]) not in _POINTS:
                    raise BackupIntegrityError(f"unknown point srid {v[TAG_PT]}")
                return tag, {"srid": int(v[TAG_PT]), "x": c[0], "y": c[1], **({"z": c[2]} if len(c) > 2 else {})}
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


def typed_set(var: str) -> str:
    """Cypher that sets ``row.t``'s typed properties on ``var`` (after the row's CREATE)."""
    cases = []
    for tag, expr in _SERVER_TAGS.values():
        cases.append(f"WHEN '{tag}' THEN {expr.format(v='t[2]')}")
        cases.append(f"WHEN '{tag}[]' THEN [v IN t[2] | {expr.format(v='v')}]")
    return (f" WITH {var}, r WHERE size(r.t) > 0 UNWIND r.t AS t "
            f"SET {var}[t[0]] = CASE t[1] {' '.join(cases)} END")


# --- export-side, the server's way: every property typed in Cypher ------------------------------------------
#
# The fallback of the fast path (drivers.neo4j_raw): for the few values the client cannot write exactly, and
# for every value when the driver cannot be given raw hydration. The query turns each property into
# ``[key, tag, value]``: temporal values (and lists of them) as Neo4j's own ISO text, durations as their
# [months, days, seconds, nanoseconds] components; everything else (points included) comes as it is, tag null.
# About 20x the server time of ``properties(n)`` (profiled at 20k nodes).

_TEMPORAL_TYPES = {ctype: tag for tag, (_, ctype) in TEMPORAL_TAGS.items()}
_PLAIN = "STRING | INTEGER | FLOAT | BOOLEAN | POINT"


def typed_props_cypher(var: str) -> str:
    """Cypher for ``[[key, tag, value], …]`` of ``var``'s properties. Type predicates (``IS ::``), the common
    plain types first: 1.7x less server time than one ``valueType()`` string per property (20k nodes)."""
    v = f"{var}[k]"
    dur = "[{x}.months, {x}.days, {x}.seconds, {x}.nanosecondsOfSecond]"
    cases = [f"WHEN {v} IS :: {_PLAIN} | LIST<{_PLAIN}> THEN [k, null, {v}]"]
    for ctype, tag in _TEMPORAL_TYPES.items():
        cases.append(f"WHEN {v} IS :: {ctype} THEN [k, '{tag}', toString({v})]")
    cases.append(f"WHEN {v} IS :: DURATION THEN [k, '{TAG_DUR}', {dur.format(x=v)}]")
    for ctype, tag in _TEMPORAL_TYPES.items():
        cases.append(f"WHEN {v} IS :: LIST<{ctype} NOT NULL> THEN [k, '{tag}[]', [x IN {v} | toString(x)]]")
    cases.append(f"WHEN {v} IS :: LIST<DURATION NOT NULL> THEN [k, '{TAG_DUR}[]', "
                 f"[x IN {v} | {dur.format(x='x')}]]")
    return f"[k IN keys({var}) | CASE {' '.join(cases)} ELSE [k, null, {v}] END]"


def props_from_typed(triples: list[list[Any]], encode: Callable[[Any], Any] = encode_value) -> dict[str, Any]:
    """The format's properties from :func:`typed_props_cypher`'s triples (untagged values through ``encode``)."""
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
