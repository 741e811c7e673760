"""The JVM export reader (``exporter/``, :mod:`drivers.neo4j_export_jvm`) against the Python reader, its oracle: on
the same every-type graph (bench.graphgen's, plus edge values of every type, values only the server can type,
random doubles of every magnitude, a string longer than a Bolt chunk), the exported stream must be byte for byte
the Python reader's. Then the fallbacks (not built, turned off) and a killed reader."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import struct
import subprocess

import pytest

from bench.graphgen import generate
from drivers import neo4j_export as nb
from drivers import neo4j_export_jvm as jvm
from helix_ops.errors import DriverError
from testbed.procs import children

# the edge values of tests/backup/test_neo4j_raw.py (kept in step with it), plus a zoned datetime whose offset has
# seconds (Berlin's local mean time before 1893: the server's typing, in both readers)
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
  dur: [duration('P14M3DT7.000000009S'), duration({days: -1, seconds: -1, nanoseconds: -500000000}),
        duration('PT0S'), duration({seconds: -86401, nanoseconds: -1})],
  pts: [point({x: 1.5, y: -2}), point({x: 1, y: 2})], pts3: [point({x: 1, y: 2, z: -0.0})],
  geo: point({longitude: 13.4, latitude: 52.5}), geo3: point({longitude: -180, latitude: -90, height: 1e300}),
  f: [0.1, -0.0, 5e-324, 1.7976931348623157e308], nan: 0.0 / 0.0, inf: 1.0 / 0.0, ninf: -1.0 / 0.0,
  s: ['', 'ünï', '\\u0000', '\\u001f\\u007f', 'tab\\there "q" back\\\\slash', '☃ 𝄞'],
  i: [-9223372036854775807 - 1, 9223372036854775807, -17, -129, 128, 32768, -32769, 2147483648],
  b: [true, false], empty: []
})
"""
ONLY_SERVER = ("CREATE (:Far {far: datetime('+12345-01-01T00:00+01:00[Europe/Berlin]'), other: date('2024-01-01')}), "
               "(:Lmt {at: datetime('1800-01-01T00:00[Europe/Berlin]'), d: date('1800-01-01')})")
REL = ("MATCH (a:Edge), (b:Far) CREATE (a)-[:AT {when: datetime('2024-10-27T02:30+01:00[Europe/Berlin]'), "
       "far: datetime({year: -100, month: 1, day: 1, timezone: 'Europe/Amsterdam'})}]->(b), "
       "(b)-[:AT {t: [localtime('01:02:03.4')]}]->(a), (a)-[:BARE]->(a)")


def _doubles(n: int = 3000) -> list[float]:
    """Doubles of every magnitude: random bit patterns, powers and the neighbours of the format's thresholds."""
    rng = random.Random(23)
    out = [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(n)]
    out += [float(f"{m}e{e}") for m in (1, 1.5, 9.99, 1.2345, 5) for e in range(-9, 24)]
    out += [2.0 ** k for k in range(-1074, 1024, 37)] + [5e-324, 2.2250738585072014e-308, 9007199254740993.0,
                                                         123456789012345.6, 1234567890123456.7, 1e15, 1e16]
    return [x for x in out if x == x and abs(x) != float("inf")]


@pytest.fixture(scope="module")
def exporter_jar():
    """The JVM reader, built here when it is missing or older than its source (Maven, as `make maven` would)."""
    root = jvm.JAR.parents[1]
    newest = max(p.stat().st_mtime for p in [root / "pom.xml", *root.joinpath("src").rglob("*.java")])
    if not jvm.JAR.is_file() or jvm.JAR.stat().st_mtime < newest:
        assert shutil.which("mvn"), "Maven is needed to build exporter/ (mvn -B -q -f exporter/pom.xml package)"
        subprocess.run(["mvn", "-B", "-q", "-f", str(root / "pom.xml"), "package"], check=True, timeout=600)
    assert jvm.JAR.is_file()
    return jvm.JAR


@pytest.fixture(scope="module")
def server(bed, exporter_jar):
    import neo4j

    s = bed.new_neo4j("jvmexport")
    generate(s.uri, s.user, s.password, nodes=3000, rels=6000, batch=1000)
    with neo4j.GraphDatabase.driver(s.uri, auth=(s.user, s.password)) as drv:
        for q in (EDGE_NODE, ONLY_SERVER, REL):
            drv.execute_query(q)
        drv.execute_query("MATCH (n:Edge) SET n.bytes = $b, n.nobytes = $e, n.doubles = $d, n.long = $long",
                          b=bytes(range(256)), e=b"", d=_doubles(), long="x\u00e9\"\\" * 40_000)
        drv.execute_query("CREATE (), (:OnlyLabel), ({only: 'props'})")
    yield s
    s.stop()


def _export(server, **kw) -> tuple[bytes, object]:
    out: list[bytes] = []
    stats = nb.export_logical(server.uri, server.user, server.password, out.append, **kw)
    return b"".join(out), stats


def test_jvm_reader_writes_the_python_readers_bytes(server, monkeypatch):
    monkeypatch.setattr(nb, "PART_IDS", 700)  # several parts of each kind, the last ones partly empty
    oracle, py = _export(server, workers=0)  # the Python reader, in this process
    typed_lines = [line for line in oracle.splitlines() if b'"far"' in line or b'"Lmt"' in line]
    assert len(typed_lines) == 3  # the :Far node, the relationship holding a far datetime, the :Lmt node
    for workers in (1, 2, 3):
        got, st = _export(server, workers=workers, reader="jvm")
        assert st.reader == "jvm"
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(oracle).hexdigest(), f"{workers} workers"
        assert (st.nodes, st.relationships, st.labels, st.relationship_types) == \
            (py.nodes, py.relationships, py.labels, py.relationship_types)
    assert py.nodes == 3000 + 3 + 3 and py.relationships == 6000 + 3


def test_auto_uses_the_jvm_reader_and_falls_back_to_python(server, monkeypatch, tmp_path):
    oracle, _ = _export(server, workers=0)
    got, st = _export(server)
    assert st.reader == "jvm" and got == oracle
    monkeypatch.setenv("HELIX_EXPORTER", "python")
    got, st = _export(server)
    assert st.reader == "python" and got == oracle
    with pytest.raises(DriverError, match="JVM export reader cannot serve"):
        _export(server, reader="jvm")
    monkeypatch.delenv("HELIX_EXPORTER")
    monkeypatch.setattr(jvm, "JAR", tmp_path / "missing.jar")  # not built
    got, st = _export(server)
    assert st.reader == "python" and got == oracle


def test_a_server_the_jvm_reader_cannot_log_in_to_goes_the_python_way(server, monkeypatch):
    """The reader says so before any part (here: a wrong user name given to it only) and Python reads instead."""
    real = jvm.JvmExport.__init__

    def wrong_user(self, connect, *a, **kw):
        real(self, (connect[0], "nobody", *connect[2:]), *a, **kw)

    monkeypatch.setattr(jvm.JvmExport, "__init__", wrong_user)
    before = children()
    got, st = _export(server)
    assert st.reader == "python" and got == _export(server, workers=0)[0]
    assert children() == before


def test_a_killed_jvm_reader_fails_the_export_and_leaves_no_process(server, monkeypatch):
    monkeypatch.setattr(nb, "PART_IDS", 50)
    before = children()
    killed: list[int] = []

    def write(data: bytes) -> None:
        if b'"format"' not in data and not killed:
            for pid in children() - before:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    with pytest.raises(DriverError, match="JVM export reader"):
        nb.export_logical(server.uri, server.user, server.password, write, reader="jvm")
    assert len(killed) == 1
    assert children() == before
