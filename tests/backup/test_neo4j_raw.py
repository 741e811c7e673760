"""The export's client-side formatting of temporal and spatial values (``drivers.neo4j_raw``) against the
server's own ``toString``: an export through raw hydration must be byte-for-byte the export the server types
(the slow path), for edge values of every type, and values the client cannot write exactly must go the slow
path for their entity only."""

from __future__ import annotations

import datetime as dt
import json
import random
from contextlib import contextmanager

import pytest

from drivers import neo4j_export as nb
from drivers import neo4j_raw as raw
from testbed.procs import children


@pytest.mark.parametrize("days", [0, -1, 1, -719162, -719163, 2932896, 2932897, 11016, -25567, 10**8, -10**8])
def test_civil_matches_the_gregorian_calendar(days):
    y, m, d = raw.civil(days)
    if 1 <= y <= 9999:
        assert dt.date(y, m, d) == dt.date(1970, 1, 1) + dt.timedelta(days=days)
    # the inverse (days_from_civil) gives the same day back, any year
    yy = y - (m <= 2)
    era = yy // 400
    yoe = yy - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    assert era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468 == days


def test_civil_agrees_with_python_over_random_days():
    rng = random.Random(7)
    for days in (rng.randint(-719162, 2932896) for _ in range(20000)):
        assert raw.date_text(days) == (dt.date(1970, 1, 1) + dt.timedelta(days=days)).isoformat()


def test_text_of_edge_values():
    assert raw.date_text(raw.civil(0) and 2932897) == "+10000-01-01"
    assert raw.time_text(0) == "00:00:00"
    assert raw.time_text(1) == "00:00:00.000000001"
    assert raw.time_text(86_399_500_000_000) == "23:59:59.5"
    assert raw.offset_text(0) == "Z"
    assert raw.offset_text(-12_600) == "-03:30"
    with pytest.raises(ValueError):
        raw.offset_text(3601)


# --- against the server --------------------------------------------------------------------------------------

EDGE_NODE = """
CREATE (:Edge {
  d: [date('-0005-01-01'), date('0000-02-29'), date('0001-01-01'), date('9999-12-31'), date('+10000-01-01'),
      date('+999999999-12-31'), date('1970-01-01'), date('1969-12-31')],
  lt: [localtime('00:00'), localtime('23:59:59.999999999'), localtime('10:00:00.5'), localtime('08:00:00.000001')],
  t: [time('00:00Z'), time('23:59:59.999999999+14:00'), time('10:00:00.5-03:30'), time('12:00-18:00')],
  ldt: [localdatetime('-0005-06-01T12:00'), localdatetime('+12345-01-01T00:00:00.5'),
        localdatetime('1969-12-31T23:59:59.999999999'), localdatetime('2024-02-29T00:00')],
  dto: [datetime('1969-12-31T23:59:59.999999999+01:00'), datetime('2024-06-01T12:00:00.000000001+05:45'),
        datetime('2024-06-01T12:00Z'), datetime('0001-01-01T00:30+01:00'), datetime('-0100-01-01T00:00-10:00')],
  dtz: [datetime('2024-03-31T03:30:15.123456789+02:00[Europe/Berlin]'),
        datetime('2024-10-27T02:30+02:00[Europe/Berlin]'), datetime('2024-10-27T02:30+01:00[Europe/Berlin]'),
        datetime('2024-01-01T00:00-03:30[America/St_Johns]'),
        datetime('2024-06-01T00:00Z[UTC]'), datetime('2024-06-01T00:00+05:45[Asia/Kathmandu]')],
  one_d: date('2024-01-01'), one_dtz: datetime('2021-03-14T01:59:59.999+01:00[Europe/Paris]'),
  dur: [duration('P14M3DT7.000000009S'), duration({days: -1, seconds: -1, nanoseconds: -500000000}), duration('PT0S'), duration({seconds: -86401, nanoseconds: -1})],
  pts: [point({x: 1.5, y: -2}), point({x: 1, y: 2})], pts3: [point({x: 1, y: 2, z: -0.0})], geo: point({longitude: 13.4, latitude: 52.5}),
  geo3: point({longitude: -180, latitude: -90, height: 1e300}),
  f: [0.1, -0.0, 5e-324, 1.7976931348623157e308], nan: 0.0 / 0.0, inf: 1.0 / 0.0, s: ['', 'ünï', '\\u0000'],
  i: [-9223372036854775807 - 1, 9223372036854775807], b: [true, false]
})
"""
ONLY_SERVER = "CREATE (:Far {far: datetime('+12345-01-01T00:00+01:00[Europe/Berlin]'), other: date('2024-01-01')})"
REL = ("MATCH (a:Edge), (b:Far) CREATE (a)-[:AT {when: datetime('2024-10-27T02:30+01:00[Europe/Berlin]'), "
       "far: datetime({year: -100, month: 1, day: 1, timezone: 'Europe/Amsterdam'})}]->(b), "
       "(b)-[:AT {t: [localtime('01:02:03.4')]}]->(a)")


@pytest.fixture(scope="module")
def server(bed):
    s = bed.new_neo4j("rawfmt")
    import neo4j

    with neo4j.GraphDatabase.driver(s.uri, auth=(s.user, s.password)) as drv:
        for q in (EDGE_NODE, ONLY_SERVER, REL):
            drv.execute_query(q)
        drv.execute_query("MATCH (n:Edge) SET n.bytes = $b, n.nobytes = $e", b=bytes(range(256)), e=b"")
    yield s
    s.stop()


def _export(server, monkeypatch, fast: bool) -> tuple[dict, list[int]]:
    typed_calls: list[int] = []
    real_typed = nb._typed_props

    def counted(tx, match, var, i):
        typed_calls.append(i)
        return real_typed(tx, match, var, i)

    with monkeypatch.context() as m:
        m.setattr(nb, "_typed_props", counted)
        if not fast:
            @contextmanager
            def off(tx):
                yield False
            m.setattr(nb, "raw_hydration", off)
        out: list[bytes] = []
        nb.export_logical(server.uri, server.user, server.password, out.append, workers=0)  # patches: here
    records = [json.loads(line) for line in b"".join(out).splitlines()]
    by_key = {}
    for r in records:
        if "n" in r:
            by_key[("n", r["n"])] = r
        elif "r" in r:
            by_key[("r", r["s"], r["e"])] = r
    return by_key, typed_calls


def test_raw_hydration_writes_what_the_server_writes(server, monkeypatch):
    fast, fast_typed = _export(server, monkeypatch, fast=True)
    slow, _ = _export(server, monkeypatch, fast=False)
    assert len(fast) == len(slow) == 4
    for key, record in slow.items():
        assert fast[key] == record, key
    # the zoned datetimes the client cannot write (year 12345, year -100) went the slow way, for their entity
    # only: the :Far node and the relationship holding one; nothing else did
    assert len(fast_typed) == 2
    edge = next(r for r in fast.values() if "Edge" in r.get("l", ()))
    assert edge["p"]["dtz"][1] == {"$dt": "2024-10-27T02:30:00+02:00[Europe/Berlin]"}
    assert edge["p"]["dtz"][2] == {"$dt": "2024-10-27T02:30:00+01:00[Europe/Berlin]"}
    assert edge["p"]["d"][5] == {"$date": "+999999999-12-31"}
    assert edge["p"]["nan"] == {"$f": "nan"}


def test_the_fast_path_is_taken_with_this_driver(server):
    """A driver upgrade that moves the internals raw hydration needs would silently make exports ~3x slower:
    this fails first."""
    import neo4j

    with neo4j.GraphDatabase.driver(server.uri, auth=(server.user, server.password)) as drv:
        with drv.session() as s, s.begin_transaction() as tx, raw.raw_hydration(tx) as fast:
            assert fast is True
            value = tx.run("RETURN date('2024-01-01') AS d, localtime('10:00') AS t").single()
            assert value["d"] == {"$date": "2024-01-01"} and value["t"] == {"$ltime": "10:00:00"}
        with drv.session() as s, s.begin_transaction() as tx:  # and the connection is given back unchanged
            assert type(tx.run("RETURN date('2024-01-01') AS d").single()["d"]).__name__ == "Date"


def test_worker_processes_write_what_one_process_writes(server, monkeypatch):
    """Parts of one id each: the four entities spread over both workers (and the parts of unused ids too),
    written in order; the bytes equal a one-process export's, and no worker is left running."""
    monkeypatch.setattr(nb, "PART_IDS", 1)
    before = children()
    one: list[bytes] = []
    nb.export_logical(server.uri, server.user, server.password, one.append, workers=0)
    seen: list[tuple[int, int]] = []
    two: list[bytes] = []
    stats = nb.export_logical(server.uri, server.user, server.password, two.append, workers=2,
                              progress=lambda done, total, st: seen.append((done, total)))
    assert b"".join(two) == b"".join(one)
    lines = b"".join(one).splitlines()
    assert (stats.nodes, stats.relationships) == (sum(b'{"n":' in x for x in lines), sum(b'{"r":' in x for x in lines))
    assert stats.nodes >= 2 and stats.relationships >= 1
    assert len(seen) > 2 and seen[-1][0] == seen[-1][1] == len(seen)  # a call per part, the last one at 100%
    assert children() == before


def test_a_killed_worker_fails_the_export_with_one_error_and_leaves_no_process(server, monkeypatch):
    import os
    import signal

    from helix_ops.errors import DriverError

    monkeypatch.setattr(nb, "PART_IDS", 1)
    before = children()
    killed: list[int] = []

    def write(data: bytes) -> None:
        if b'"format"' not in data and not killed:  # the first part: the workers run now
            for pid in children() - before:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    with pytest.raises(DriverError, match="export worker"):
        nb.export_logical(server.uri, server.user, server.password, write, workers=2)
    assert len(killed) == 2
    assert children() == before
