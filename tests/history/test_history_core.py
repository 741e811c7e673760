"""The durable change history and the live verbs' command line, without servers: the change log in a local
store (names, modes, newest first, unreadable records skipped), the best-effort copy of a record (a store that
cannot be written or does not answer: a warning, never a failed change), ``history``/``backups`` over a local
store, ``diff``'s exit codes (0 / 2 / 1, invalid input included) over an in-memory target, the tables."""

from __future__ import annotations

import datetime as dt
import json
import stat
import threading
import time

import pytest
import yaml

from drivers.change_log import PREFIX, ChangeLog, record_name
from drivers.storage import LocalStore
from helix_ops import history as h
from helix_ops.changes import AuditRecord
from helix_ops.cli import build_parser, main
from helix_ops.errors import ConfigError, DriverError
from helix_ops.plan import Change, FieldChange, Plan
from tests.fakes import FakeTarget
from testbed.helix import REPO

PROJECT = yaml.safe_load((REPO / "deployments" / "local.yaml").read_text())["project"]
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def record(action="deploy", result="succeeded", **over) -> AuditRecord:
    base = dict(environment="local", action=action, triggered_by="user/ops", change={"plan": {"update": 1}},
                before={"dashboard": "1.0"}, after={"dashboard": "1.1"}, result=result, detail="1 object(s) changed")
    return AuditRecord.now(**{**base, **over})


def descriptor_with_store(tmp_path, store) -> str:
    data = yaml.safe_load((REPO / "deployments" / "local.yaml").read_text())
    data["backup"]["storage"]["path"] = str(store)
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_records_are_one_object_each_owner_only_newest_first(tmp_path):
    log = ChangeLog(LocalStore(tmp_path / "store"))
    first = log.append("local", {"action": "deploy", "n": 1}, at=T0)
    second = log.append("local", {"action": "scale", "n": 2}, at=T0 + dt.timedelta(seconds=1))
    same_time = log.append("local", {"action": "scale", "n": 3}, at=T0 + dt.timedelta(seconds=1))
    assert len({first, second, same_time}) == 3  # two writers at the same microsecond never collide
    folder = tmp_path / "store" / PREFIX / "local"
    for d in (tmp_path / "store", tmp_path / "store" / PREFIX, folder):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.iterdir())
    records, skipped = log.list("local")
    assert [r["n"] for r in records][0] in (2, 3) and records[-1]["n"] == 1 and skipped == []
    assert [r["n"] for r in log.list("local", limit=1)[0]] in ([2], [3])
    assert log.list("other") == ([], [])
    # the records are not backups: listing, retention's orphan sweep never see them
    assert LocalStore(tmp_path / "store").list() == [] and LocalStore(tmp_path / "store").orphans() == []


def test_an_unreadable_record_is_skipped_and_said(tmp_path):
    log = ChangeLog(LocalStore(tmp_path))
    log.append("local", {"n": 1}, at=T0)
    bad = tmp_path / PREFIX / "local" / record_name(T0 + dt.timedelta(seconds=5))
    bad.write_bytes(b"\xff not json")
    (tmp_path / PREFIX / "local" / "notes.txt").write_text("ignored: not a record's name")
    records, skipped = log.list("local")
    assert [r["n"] for r in records] == [1] and len(skipped) == 1 and bad.name in skipped[0]


@pytest.mark.parametrize("env", ["../x", "a/b", "", "UPPER", "x" * 70])
def test_environment_names_cannot_leave_the_folder(tmp_path, env):
    with pytest.raises(ConfigError):
        ChangeLog(LocalStore(tmp_path)).append(env, {})


def test_a_shared_store_folder_is_refused(tmp_path):
    tmp_path.chmod(0o777)
    with pytest.raises(ConfigError, match="chmod go-w"):
        ChangeLog(LocalStore(tmp_path)).append("local", {})


def test_copy_to_store_writes_the_record_with_its_run(tmp_path):
    from helix_ops.descriptor import load_descriptor
    from tasks.records import copy_to_store, stored_record

    desc = load_descriptor(descriptor_with_store(tmp_path, tmp_path / "store"))
    doc = stored_record(record())
    assert set(doc["run"]) == {"flow_run_id", "flow_run_name", "flow_name", "deployment_id", "run_elapsed_s"}
    where = copy_to_store(doc, "local", desc)
    assert where.startswith(str(tmp_path / "store" / PREFIX / "local"))
    assert json.loads(open(where).read())["action"] == "deploy"


def test_a_store_that_does_not_answer_is_given_up_after_the_deadline(tmp_path, monkeypatch):
    import tasks.history
    from tasks.records import copy_to_store

    release = threading.Event()
    monkeypatch.setattr(tasks.history, "open_history_store", lambda *a: release.wait(30))
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="did not answer within 1 s"):
        copy_to_store({}, "local", object(), deadline_s=1)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5
    release.set()


def test_record_change_warns_but_never_fails_when_the_store_cannot_be_written(tmp_path, monkeypatch):
    import logging

    import tasks.records as records
    from helix_ops.descriptor import load_descriptor

    store = tmp_path / "store"
    store.mkdir()
    store.chmod(0o777)  # refused: others can write to it
    desc = load_descriptor(descriptor_with_store(tmp_path, store))
    logger = logging.getLogger("test-record-change")
    warnings: list[str] = []
    monkeypatch.setattr(logger, "warning", lambda msg, *a: warnings.append(msg % a))
    monkeypatch.setattr(records, "get_run_logger", lambda: logger)
    monkeypatch.setattr(records, "create_markdown_artifact", lambda *a, **k: None)
    monkeypatch.setenv("HELIX_OPS_AUDIT_DIR", str(tmp_path / "audit"))
    path = records.record_change.fn(record(), descriptor=desc)
    assert json.loads(open(path).read())["action"] == "deploy"  # the local log has it
    assert len(warnings) == 1 and "NOT copied to the backup store" in warnings[0] and "chmod go-w" in warnings[0]


def test_history_cli_lists_newest_first_as_table_and_json(tmp_path, capsys):
    from tasks.records import stored_record

    path = descriptor_with_store(tmp_path, tmp_path / "store")
    log = ChangeLog(LocalStore(tmp_path / "store"))
    log.append("local", stored_record(record("deploy")), at=T0)
    log.append("local", stored_record(record("scale", "rolled-back", approval={
        "approved": True, "approver": "ann", "reason": "CHG-1", "key": "k"})), at=T0 + dt.timedelta(minutes=1))
    assert main(["history", "--descriptor", path, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["action"] for r in rows] == ["scale", "deploy"] and rows[0]["approval"]["approver"] == "ann"
    assert main(["history", "--descriptor", path, "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "scale" in out and "rolled-back" in out and "approved by ann: CHG-1" in out and "deploy " not in out
    assert main(["history", "--descriptor", path, "--limit", "-1"]) == 2


def test_backups_list_and_show_read_the_manifests(tmp_path, capsys):
    from helix_ops.backup import Verification
    from tests.backup.test_backup_core import manifest

    store = LocalStore(tmp_path / "store")
    path = descriptor_with_store(tmp_path, tmp_path / "store")
    for i, bid in enumerate(("local-20260102T020000Z-a1b2c3", "local-20260103T020000Z-d4e5f6")):
        with store.begin(bid) as w:
            with w.object("neo4j.jsonl.zst", component="neo4j", kind="logical") as obj:
                obj.write(b"{}\n")
            w.commit(manifest(backup_id=bid, environment="local", project=PROJECT,
                              created_at=T0 + dt.timedelta(days=i)))
    store.write_manifest(store.read_manifest("local-20260102T020000Z-a1b2c3").model_copy(update={
        "verification": Verification(at=T0, by="verify-helix-backup", ok=True, checks=("neo4j ok",))}))
    assert main(["backups", "list", "--descriptor", path, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["backup_id"][-6:], r["verified"]) for r in rows] == [("d4e5f6", False), ("a1b2c3", True)]
    assert main(["backups", "list", "--descriptor", path]) == 0
    assert "not verified" in capsys.readouterr().out
    assert main(["backups", "show", "local-20260102T020000Z-a1b2c3", "--descriptor", path]) == 0
    out = capsys.readouterr().out
    assert "verified 2026-01-02T03:04:05+00:00 by verify-helix-backup" in out and "neo4j.jsonl.zst" in out
    assert main(["backups", "show", "local-20260109T020000Z-aaaaaa", "--descriptor", path]) == 2  # no such
    assert "does not exist" in capsys.readouterr().err
    assert main(["backups", "show", "../x", "--descriptor", path]) == 2


def _plan(*changes: Change) -> Plan:
    return Plan(tuple(changes))


@pytest.fixture
def fake_target(monkeypatch):
    import tasks.history

    target = FakeTarget(environment="local", replicas={"dashboard": ["d1"]})
    plans = {"plan": _plan(Change("noop", "service/dashboard", "unchanged", "h", ()))}
    monkeypatch.setattr(tasks.history, "open_target", lambda desc, conn: target)
    monkeypatch.setitem(tasks.history.PLANNERS, "fake", lambda t, d, c: plans["plan"])
    return plans


def test_diff_exit_codes_are_terraforms(fake_target, capsys, tmp_path):
    path = descriptor_with_store(tmp_path, tmp_path / "store")
    assert main(["diff", "--descriptor", path]) == 0
    assert "no changes" in capsys.readouterr().out
    fake_target["plan"] = _plan(Change("update", "service/dashboard", "spec changed", "h2",
                                       (FieldChange("replicas", 2, 3),)))
    assert main(["diff", "--descriptor", path]) == 2
    out = capsys.readouterr().out
    assert "service/dashboard" in out and "replicas" in out and "1 update" in out
    assert main(["diff", "--descriptor", path, "--json"]) == 2
    data = json.loads(capsys.readouterr().out)
    assert data["changes"] and data["plan"]["changes"][0]["diff"] == [{"path": "replicas", "old": 2, "new": 3}]
    # invalid input is 1 for diff (2 means changes), 2 for the other commands
    assert main(["diff", "--descriptor", str(tmp_path / "missing.yaml")]) == 1
    assert main(["diff", "--bogus"]) == 1
    assert main(["status", "--descriptor", str(tmp_path / "missing.yaml")]) == 2


def test_diff_of_an_unreachable_target_is_exit_1(monkeypatch, tmp_path, capsys):
    import tasks.history

    def unreachable(desc, conn):
        raise DriverError("cannot reach the engine", hint="is it running?")

    monkeypatch.setattr(tasks.history, "open_target", unreachable)
    assert main(["diff", "--descriptor", descriptor_with_store(tmp_path, tmp_path / "s")]) == 1
    assert "cannot reach the engine" in capsys.readouterr().err


def test_help_documents_the_exit_codes():
    text = build_parser()._subparsers._group_actions[0].choices["diff"].format_help()  # type: ignore[union-attr]
    assert "2 deploy-helix would change something" in " ".join(text.split())
    assert "exit 1 here" in " ".join(text.split())


def test_tables():
    headers, rows = h.history_table([{"at": "2026-01-02T03:04:05+00:00", "action": "deploy", "result": "failed",
                                      "triggered_by": "flow-run/x", "change": {"plan": {"create": 2, "update": 0}},
                                      "run": {"flow_run_name": "deploy-local-1", "run_elapsed_s": 12.4},
                                      "detail": "boom"}])
    assert rows[0][5] == "plan: 2 create" and rows[0][6] == "deploy-local-1 (12 s)" and rows[0][4] == "-"
    assert h.change_summary({"images": {"dashboard": "1.2"}}) == "images: dashboard=1.2"
    headers, rows = h.diff_table(_plan(Change("create", "service/x", "absent", "h", ()),
                                       Change("noop", "service/y", "same", "h", ())).to_dict())
    assert rows == [("create", "service/x", "absent", "", "", "")]
    _, rows = h.services_table([{"service": "redis", "image": "r:7", "replicas": 1, "health": "unhealthy: x",
                                 "endpoint": "", "healthy": False}])
    assert rows[0][3].startswith("NOT HEALTHY")
