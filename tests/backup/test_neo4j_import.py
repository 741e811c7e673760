"""The CSV side of the importer restore (``drivers/neo4j_csv.py``): field text for every exported value, the
values it refuses (so the caller loads them transactionally), grouping by property signature. The importer
itself runs in tests/backup/test_backup_roundtrip.py (real neo4j-admin) and tests/backup/test_backup_flow.py
(restore-helix on the engine)."""

from __future__ import annotations

import csv
import json

import pytest

from drivers.logical_format import FORMAT, read_records
from drivers.neo4j_csv import ARRAY_DELIMITER as US
from drivers.neo4j_csv import ImportUnsupported, csv_value, duration_text, point_text, to_csv
from helix_ops.errors import BackupIntegrityError
from testbed.procs import children


@pytest.mark.parametrize("value, expected", [
    (True, ("boolean", "true")), (-9223372036854775808, ("long", "-9223372036854775808")),
    (0.1, ("double", "0.1")), (-0.0, ("double", "-0.0")), (5e-324, ("double", "5e-324")),
    ({"$f": "nan"}, ("double", "NaN")), ({"$f": "-inf"}, ("double", "-Infinity")), ("", ("string", "")),
    ("a\x00b\n", ("string", "a\x00b\n")), ({"$b": "AP9/gA=="}, ("byte[]", f"0{US}-1{US}127{US}-128")),
    ({"$date": "+10000-01-01"}, ("date", "+10000-01-01")),
    ({"$dt": "2024-10-27T02:30+01:00[Europe/Berlin]"}, ("datetime", "2024-10-27T02:30+01:00[Europe/Berlin]")),
    ({"$time": "12:00Z"}, ("time", "12:00Z")), ({"$ltime": "08:00:00.000000001"}, ("localtime", "08:00:00.000000001")),
    ({"$ldt": "2024-02-29T23:59:59.999999999"}, ("localdatetime", "2024-02-29T23:59:59.999999999")),
    ({"$dur": [14, 3, 7, 9]}, ("duration", "P14M3DT7.000000009S")),
    ({"$dur": [0, 0, -6, 500000000]}, ("duration", "P0M0DT-5.500000000S")),
    ({"$pt": 4979, "c": [13.4, 52.5, 1.0]}, ("point", "{longitude:13.4, latitude:52.5, height:1.0, crs:'wgs-84-3d'}")),
    (["a, b", " c "], ("string[]", f"a, b{US} c ")), ([1.5, 2.0], ("double[]", f"1.5{US}2.0")),
    ([{"$date": "2020-01-01"}, {"$date": "2021-12-31"}], ("date[]", f"2020-01-01{US}2021-12-31")),
    ([{"$pt": 7203, "c": [1.0, 2.0]}], ("point[]", "{x:1.0, y:2.0, crs:'cartesian'}")),
])
def test_field_text_of_every_value(value, expected):
    assert csv_value(value) == expected


@pytest.mark.parametrize("value, why", [
    ([], "empty list"), ({"$b": ""}, "empty byte array"), (["a", ""], "empty string"),
    ([f"a{US}b"], "U\\+001F"), ([1, "x"], "mixed types"), ({"$dt": "2024-01-01T00:00", "z": "Europe/Berlin"},
                                                           "version 1"), ({"$new": 1}, "does not know"),
])
def test_values_csv_cannot_carry_are_refused(value, why):
    with pytest.raises(ImportUnsupported, match=why):
        csv_value(value)


def test_duration_and_point_text():
    assert duration_text(-3, 2, 0, 0) == "P-3M2DT0.000000000S"
    assert duration_text(0, 0, -86401, 999999999) == "P0M0DT-86400.000000001S"
    with pytest.raises(BackupIntegrityError, match="srid"):
        point_text(1234, [1.0, 2.0])


def _export(*records):
    lines = [{"format": FORMAT, "version": 2}, *records]
    return read_records([json.dumps(r).encode() for r in lines])


def test_groups_by_signature_labels_in_a_column_and_counts_checked(tmp_path):
    out = to_csv(_export(
        {"n": 0, "l": ["A", "Odd Label"], "p": {"x": 1, "s": "a"}},
        {"n": 1, "l": [], "p": {"x": 2, "s": "b"}},
        {"n": 2, "l": ["A"], "p": {"x": "text"}},
        {"r": "R T", "s": 0, "e": 1, "p": {}},
        {"schema": "index", "name": "i", "statement": "CREATE INDEX i FOR (n:A) ON (n.x)"},
        {"end": True, "nodes": 3, "relationships": 1}), tmp_path / "csv")
    assert len(out.nodes) == 2 and len(out.relationships) == 1 and not out.multiline
    assert out.schema == [("index", "i", "CREATE INDEX i FOR (n:A) ON (n.x)")]
    assert (out.stats.nodes, out.stats.relationships, out.stats.labels) == (3, 1, {"A": 2, "Odd Label": 1})
    header, data = out.nodes[0]
    rows = list(csv.reader(open(out.folder / header, newline="")))
    assert rows == [[":ID", ":LABEL", "s:string", "x:long"]]
    rows = list(csv.reader(open(out.folder / data, newline="")))
    assert rows == [["0", f"A{US}Odd Label", "a", "1"], ["1", "", "b", "2"]]
    assert open(out.folder / data).read().startswith('"0",')  # every field quoted: "" is an empty string
    rel = list(csv.reader(open(out.folder / out.relationships[0][1], newline="")))
    assert rel == [["0", "1", "R T"]]

    with pytest.raises(BackupIntegrityError, match="counts disagree"):
        to_csv(_export({"n": 0, "l": [], "p": {}}, {"end": True, "nodes": 2, "relationships": 0}), tmp_path / "c2")
    with pytest.raises(ImportUnsupported, match="key"):
        to_csv(_export({"n": 0, "l": [], "p": {"a:b": 1}}, {"end": True, "nodes": 1, "relationships": 0}),
               tmp_path / "c3")
    multi = to_csv(_export({"n": 0, "l": [], "p": {"s": "x\r\ny"}}, {"end": True, "nodes": 1, "relationships": 0}),
                   tmp_path / "c4")
    assert multi.multiline


def test_many_signatures_stay_within_the_open_file_limit(tmp_path, monkeypatch):
    import drivers.neo4j_csv as ni

    monkeypatch.setattr(ni, "MAX_OPEN_FILES", 3)
    records = [{"n": i, "l": [], "p": {f"k{i % 7}": i}} for i in range(70)]
    out = to_csv(_export(*records, {"end": True, "nodes": 70, "relationships": 0}), tmp_path / "csv")
    assert len(out.nodes) == 7
    total = sum(len(list(csv.reader(open(out.folder / d, newline="")))) for _, d in out.nodes)
    assert total == 70


def _lines(*records):
    import orjson

    return [orjson.dumps(r) + b"\n" for r in ({"format": FORMAT, "version": 2}, *records)]


def _content(out) -> dict:
    """Header text → sorted data rows, over all of a CSV set's files (workers write a file each per signature)."""
    acc: dict = {}
    for kind, pairs in (("nodes", out.nodes), ("relationships", out.relationships)):
        for header, data in pairs:
            rows = list(csv.reader(open(out.folder / data, newline="")))
            acc.setdefault((kind, open(out.folder / header).read()), []).extend(map(tuple, rows))
    return {k: sorted(v) for k, v in acc.items()}


def test_worker_processes_convert_what_one_process_converts(tmp_path, monkeypatch):
    """Small batches, so both workers get lines of every kind; the files differ, their rows do not. A line
    written with another key order goes through the parsing process and still arrives."""
    import drivers.neo4j_csv as ni

    monkeypatch.setattr(ni, "_BATCH_BYTES", 64)
    records = [{"n": i, "l": ["A"] if i % 2 else ["B", "C"], "p": {"x": i, **({"s": f"t{i}"} if i % 3 else {})}}
               for i in range(40)]
    records += [{"r": "R" if i % 2 else "S", "s": i, "e": (i * 7) % 40, "p": {"w": i * 0.5} if i % 4 else {}}
                for i in range(60)]
    lines = _lines(*records, {"schema": "index", "name": "i", "statement": "CREATE INDEX i FOR (n:A) ON (n.x)"},
                   {"end": True, "nodes": 41, "relationships": 60})
    lines.insert(5, b'{"l":["A"],"p":{"x":1000},"n":1000}\n')  # another key order
    before = children()
    one = ni.to_csv_parallel(lines, tmp_path / "one", workers=0)
    two = ni.to_csv_parallel(lines, tmp_path / "two", workers=2)
    assert children() == before
    assert _content(two) == _content(one)
    assert len(two.nodes) == 2 * len(one.nodes)  # each worker saw each signature
    assert (two.stats.nodes, two.stats.relationships) == (one.stats.nodes, one.stats.relationships) == (41, 60)
    assert two.stats.labels == one.stats.labels == {"A": 21, "B": 20, "C": 20}
    assert two.stats.relationship_types == one.stats.relationship_types == {"R": 30, "S": 30}
    assert two.schema == one.schema and len(two.schema) == 1 and not two.multiline
    reordered = [b'{"l":["A"],"p":{"x":%d},"n":%d}\n' % (i, i) for i in range(100)]  # all off the fast path
    lines = _lines({"end": True, "nodes": 100, "relationships": 0})
    lines[1:1] = reordered
    spread = ni.to_csv_parallel(lines, tmp_path / "spread", workers=2)
    assert len(spread.nodes) == 2 and spread.stats.nodes == 100  # handed out in batches too, not all to one
    broken = ni.to_csv_parallel(_lines(*records[:40], {"n": 99, "l": [], "p": {"s": "a\nb"}},
                                       {"end": True, "nodes": 41, "relationships": 0}), tmp_path / "m", workers=2)
    assert broken.multiline  # seen by one worker, known to the whole set


@pytest.mark.parametrize("tail, error, match", [
    ([{"n": 7, "l": [], "p": {"a:b": 1}}, {"end": True, "nodes": 41, "relationships": 0}], ImportUnsupported, "key"),
    ([{"n": 7, "l": [], "p": {"e": []}}, {"end": True, "nodes": 41, "relationships": 0}], ImportUnsupported, "empty"),
    ([{"end": True, "nodes": 39, "relationships": 0}], BackupIntegrityError, "counts disagree"),
    ([], BackupIntegrityError, "truncated"),
    ([{"end": True, "nodes": 40, "relationships": 0}, {"n": 50, "l": [], "p": {}}], BackupIntegrityError, "after its end"),
    ([{"n": 7, "p": {}}, {"end": True, "nodes": 41, "relationships": 0}], BackupIntegrityError, "malformed record"),
])
def test_worker_conversion_refuses_what_one_process_refuses_and_leaves_no_worker(tmp_path, monkeypatch, tail, error,
                                                                                  match):
    import drivers.neo4j_csv as ni

    monkeypatch.setattr(ni, "_BATCH_BYTES", 64)
    lines = _lines(*({"n": i, "l": ["A"], "p": {"x": i}} for i in range(40)), *tail)
    before = children()
    for workers in (0, 2):
        with pytest.raises(error, match=match):
            ni.to_csv_parallel(lines, tmp_path / f"w{workers}", workers=workers)
    assert children() == before
    with pytest.raises(BackupIntegrityError, match="not a helix-neo4j-logical export"):
        ni.to_csv_parallel(lines[1:], tmp_path / "headless", workers=2)


def test_a_killed_conversion_worker_fails_with_one_error_and_leaves_no_process(tmp_path, monkeypatch):
    import os
    import signal

    import drivers.neo4j_csv as ni
    from helix_ops.errors import DriverError

    monkeypatch.setattr(ni, "_BATCH_BYTES", 64)
    before = children()
    killed: list[int] = []

    def stream():
        for i, line in enumerate(_lines(*({"n": i, "l": ["A"], "p": {"x": i}} for i in range(400)),
                                        {"end": True, "nodes": 400, "relationships": 0})):
            if i == 200:
                for pid in children() - before:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            yield line

    with pytest.raises(DriverError, match="conversion worker exited"):
        ni.to_csv_parallel(stream(), tmp_path / "csv", workers=2)
    assert len(killed) == 2
    assert children() == before


def test_a_damaged_export_is_refused_even_when_another_worker_found_an_unsupported_value(tmp_path, monkeypatch):
    """An unsupported value sends the restore to the transactional load, which wipes first: a damaged record
    elsewhere must win, so nothing is wiped. Each line is bigger than the batch, so lines alternate workers:
    the unsupported value goes to the first, the record without labels to the second."""
    import drivers.neo4j_csv as ni

    monkeypatch.setattr(ni, "_BATCH_BYTES", 16)
    lines = _lines({"n": 0, "l": [], "p": {"e": []}}, {"n": 1, "p": {"x": 1}},
                   {"end": True, "nodes": 2, "relationships": 0})
    with pytest.raises(BackupIntegrityError, match="malformed record"):
        ni.to_csv_parallel(lines, tmp_path / "csv", workers=2)
