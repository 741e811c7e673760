"""The pure backup core: ids, manifest (helix_ops.backup), GFS retention, strategy choice (helix_ops.backup_plan),
neo4j-admin / redis argv, parsing (helix_ops.backup_tools)."""

from __future__ import annotations

import datetime as dt

import pytest

from helix_ops import backup as b
from helix_ops import backup_plan as bp
from helix_ops import backup_tools as bt
from helix_ops.errors import ConfigError, PlanError

T0 = dt.datetime(2025, 3, 10, 2, 0, 0, tzinfo=dt.UTC)
SHA = "a" * 64


def test_new_backup_id_is_env_utc_time_and_random_suffix():
    berlin = dt.datetime(2025, 3, 10, 3, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert b.new_backup_id("prod", berlin, rand="a1b2c3") == "prod-20250310T020000Z-a1b2c3"
    one, two = b.new_backup_id("prod", T0), b.new_backup_id("prod", T0)
    assert one != two and one.startswith("prod-20250310T020000Z-")
    assert b.backup_time(one) == T0 and b.backup_environment(one) == "prod"


@pytest.mark.parametrize("bad", [
    "../etc/passwd", "prod-20250310T020000Z-a1b2c3/..", "prod/../x-20250310T020000Z-a1b2c3",
    "prod-20250310T020000Z-A1B2C3", "Prod-20250310T020000Z-a1b2c3", "prod-20250310T020000Z-a1b2c",
    "prod-20251310T020000Z-a1b2c3", "prod-20250230T020000Z-a1b2c3", " prod-20250310T020000Z-a1b2c3",
    "prod-20250310T020000Z-a1b2c3\n", "prod-20250310T020000Z-a1b2c3\0", "prød-20250310T020000Z-a1b2c3",
    "-20250310T020000Z-a1b2c3", "prod-2025031T020000Z-a1b2c3", "", "prod_x-20250310T020000Z-a1b2c3", 42, None,
])
def test_bad_backup_ids_are_refused(bad):
    with pytest.raises(ConfigError) as err:
        b.validate_backup_id(bad)
    assert err.value.path == "backup_id"


def test_new_backup_id_needs_aware_time_and_valid_env():
    with pytest.raises(ConfigError):
        b.new_backup_id("prod", dt.datetime(2025, 1, 1))
    with pytest.raises(ConfigError):
        b.new_backup_id("../x", T0)


@pytest.mark.parametrize("bad", ["../x", "a/b", ".hidden", "UPPER", "x..y", "", "a" * 101])
def test_bad_object_names(bad):
    with pytest.raises(ConfigError):
        b.validate_object_name(bad)


def entry(name="neo4j.jsonl.zst", component="neo4j"):
    return b.ObjectEntry(name=name, component=component, kind="logical", size=10, sha256=SHA, raw_size=20,
                         raw_sha256="b" * 64)


def manifest(**over):
    base = dict(backup_id="prod-20250310T020000Z-a1b2c3", environment="prod", project="helix", created_at=T0,
                finished_at=T0 + dt.timedelta(seconds=5), duration_s=5.0, tool="helix-ops 0.1",
                components=("neo4j",), objects=(entry(),),
                neo4j=b.Neo4jInfo(strategy="logical", server_version="5.26.0", edition="community", nodes=3,
                                  relationships=2, format_version=1, writer_paused=True))
    base.update(over)
    return b.Manifest(**base)


def test_manifest_round_trips_and_is_strict():
    m = manifest()
    again = b.Manifest.from_json(m.to_json())
    assert again == m and again.manifest_version == 1 and not again.verified
    data = m.model_dump(mode="json")
    assert data["objects"][0] == {"name": "neo4j.jsonl.zst", "component": "neo4j", "kind": "logical", "size": 10,
                                  "sha256": SHA, "raw_size": 20, "raw_sha256": "b" * 64, "compression": "zstd",
                                  "encryption": "none"}
    with pytest.raises(ConfigError):
        b.Manifest.from_json(m.to_json().replace(b'"manifest_version": 1', b'"manifest_version": 2'))
    with pytest.raises(ConfigError):
        b.Manifest.from_json(m.to_json().replace(b'"tool"', b'"surprise": 1, "tool"'))
    with pytest.raises(ValueError):
        manifest(backup_id="../../x")
    with pytest.raises(ValueError):
        manifest(objects=(entry(), entry()))
    with pytest.raises(ValueError):
        b.ObjectEntry(name="x", component="neo4j", kind="k", size=1, sha256="zz", raw_size=1, raw_sha256=SHA)
    v = m.with_verification(b.Verification(at=T0, by="verify-helix-backup", ok=True, checks=("counts",)))
    assert v.verified and "verified: 2025-03-10" in b.manifest_markdown(v)


def summaries(times, verified=(), comps=("neo4j",)):
    return [bp.BackupSummary(f"prod-{t:%Y%m%dT%H%M%SZ}-00000{i % 10}", t, comps, i in verified)
            for i, t in enumerate(times)]


def test_retention_gfs_keeps_dailies_weeklies_monthlies():
    # one backup a day for 120 days, two on the newest day
    times = [T0 - dt.timedelta(days=d) for d in range(120)] + [T0 + dt.timedelta(hours=3)]
    items = summaries(times)
    plan = bp.plan_retention(items, daily=3, weekly=2, monthly=3)
    kept = {b.backup_time(i).date().isoformat() + ("+3h" if b.backup_time(i).hour == 5 else "") for i in plan.keep}
    # daily: the newest of 03-10 (the 05:00 one), 03-09, 03-08; weekly: ISO week 11 (03-10 newest) and
    # week 10 (Sunday 03-09); monthly: March (03-10 newest), February (02-28), January (01-31).
    assert kept == {"2025-03-10+3h", "2025-03-09", "2025-03-08", "2025-02-28", "2025-01-31"}
    assert len(plan.keep) + len(plan.delete) == len(items)
    assert "daily 2025-03-10" in plan.reasons[plan.keep[0]] and "newest" in plan.reasons[plan.keep[0]]
    assert list(plan.delete) == sorted(plan.delete, reverse=True)
    assert all(line.startswith(("keep ", "delete ")) for line in plan.lines())


def test_retention_never_deletes_the_newest_verified_backup():
    times = [T0 - dt.timedelta(days=d) for d in range(10)]
    items = summaries(times, verified={7})
    plan = bp.plan_retention(items, daily=2, weekly=0, monthly=0)
    assert items[7].backup_id in plan.keep and "newest verified" in plan.reasons[items[7].backup_id]
    assert set(plan.keep) == {items[0].backup_id, items[1].backup_id, items[7].backup_id}
    # zero retention still keeps the newest and the newest verified
    plan0 = bp.plan_retention(items, daily=0, weekly=0, monthly=0)
    assert set(plan0.keep) == {items[0].backup_id, items[7].backup_id}


def test_retention_groups_by_components_and_uses_the_timezone():
    late = dt.datetime(2025, 3, 9, 23, 30, tzinfo=dt.UTC)  # 00:30 on 03-10 in Berlin
    early = dt.datetime(2025, 3, 9, 22, 0, tzinfo=dt.UTC)  # 23:00 on 03-09 in Berlin
    items = summaries([late, early])
    assert len(bp.plan_retention(items, 1, 0, 0, tz="UTC").keep) == 1
    assert len(bp.plan_retention(items, 2, 0, 0, tz="UTC").keep) == 1  # both on 03-09 UTC
    assert len(bp.plan_retention(items, 2, 0, 0, tz="Europe/Berlin").keep) == 2
    redis = summaries([T0 - dt.timedelta(days=1)], comps=("redis",))
    plan = bp.plan_retention(items + redis, 1, 0, 0)
    assert redis[0].backup_id in plan.keep  # the newest redis backup, not shadowed by neo4j ones


def test_choose_restore_candidate():
    old = manifest(backup_id="prod-20250301T020000Z-000001", created_at=T0 - dt.timedelta(days=9))
    old = old.with_verification(b.Verification(at=T0, by="t", ok=True))
    new = manifest(backup_id="prod-20250310T020000Z-000002")
    assert bp.choose_restore_candidate([old, new], None) is old
    assert bp.choose_restore_candidate([old, new], None, require_verified=False) is new
    assert bp.choose_restore_candidate([old, new], "prod-20250310T020000Z-000002") is new
    with pytest.raises(PlanError, match="not listed"):
        bp.choose_restore_candidate([old], "prod-20250310T020000Z-000009")
    with pytest.raises(PlanError, match="no verified backup holding redis"):
        bp.choose_restore_candidate([old, new], None, component="redis")
    with pytest.raises(ConfigError):
        bp.choose_restore_candidate([old], "../x")


@pytest.mark.parametrize("edition,requested,expected", [
    ("community", "auto", "logical"), ("enterprise", "auto", "online-backup"), ("Community", "dump", "dump"),
    ("enterprise", "logical", "logical"), ("enterprise", "dump", "dump"),
])
def test_strategy_choice(edition, requested, expected):
    assert bp.choose_neo4j_strategy(edition, requested) == expected


def test_strategy_refusals():
    with pytest.raises(ConfigError, match="needs Neo4j Enterprise"):
        bp.choose_neo4j_strategy("community", "online-backup")
    with pytest.raises(ConfigError):
        bp.choose_neo4j_strategy("community", "rsync")
    with pytest.raises(ConfigError):
        bp.choose_neo4j_strategy("aura", "auto")


def test_backup_flow_strategy_by_detected_edition():
    assert bp.backup_strategy_for("community", "community", "auto") == (
        "logical", "logical on Neo4j community (picked by edition)")
    strategy, why = bp.backup_strategy_for("enterprise", "community", "auto")
    assert strategy == "logical" and "not wired" in why and "descriptor says community" in why
    assert bp.backup_strategy_for("Community", "community", "dump")[0] == "dump"
    assert bp.backup_strategy_for("enterprise", "enterprise", "dump")[0] == "dump"
    with pytest.raises(ConfigError, match="needs Neo4j Enterprise"):
        bp.backup_strategy_for("community", "enterprise", "online-backup")
    with pytest.raises(ConfigError, match="cannot run in backup-helix"):
        bp.backup_strategy_for("enterprise", "enterprise", "online-backup")


def test_neo4j_admin_argv_is_neo4j_5_syntax():
    assert bt.neo4j_dump_argv("neo4j", "/backups") == [
        "neo4j-admin", "database", "dump", "neo4j", "--to-path=/backups", "--overwrite-destination=true"]
    assert bt.neo4j_load_argv("neo4j", "/backups", admin="/x/neo4j-admin") == [
        "/x/neo4j-admin", "database", "load", "neo4j", "--from-path=/backups", "--overwrite-destination=true"]
    assert bt.neo4j_check_argv("neo4j", "/backups") == ["neo4j-admin", "database", "check", "neo4j",
                                                       "--from-path=/backups"]
    assert bt.neo4j_backup_argv("neo4j", "neo4j-0.neo4j:6362", "/backups") == [
        "neo4j-admin", "database", "backup", "--from=neo4j-0.neo4j:6362", "--to-path=/backups", "--type=AUTO",
        "--compress=true", "neo4j"]
    assert bt.neo4j_restore_argv("neo4j", "/backups/neo4j-2025-03-10T02-00-00.backup",
                                restore_until="2025-03-10 01:00:00") == [
        "neo4j-admin", "database", "restore", "--from-path=/backups/neo4j-2025-03-10T02-00-00.backup",
        "--restore-until=2025-03-10 01:00:00", "--overwrite-destination=true", "neo4j"]
    assert bt.neo4j_import_argv("neo4j", "/backups/import/", [("nodes-0000.header.csv", "nodes-0000.csv")],
                               [("relationships-0000.header.csv", "relationships-0000.csv")], multiline=True) == [
        "neo4j-admin", "database", "import", "full", "neo4j", "--overwrite-destination=true", "--id-type=integer",
        "--array-delimiter=U+001F", "--bad-tolerance=0", "--skip-bad-relationships=false",
        "--skip-duplicate-nodes=false", "--multiline-fields=true", "--report-file=/backups/import/import.report",
        "--nodes=/backups/import/nodes-0000.header.csv,/backups/import/nodes-0000.csv",
        "--relationships=/backups/import/relationships-0000.header.csv,/backups/import/relationships-0000.csv"]


@pytest.mark.parametrize("call", [
    lambda: bt.neo4j_dump_argv("neo4j; rm -rf /", "/b"), lambda: bt.neo4j_dump_argv("neo4j", "relative"),
    lambda: bt.neo4j_load_argv("neo4j", "/b\n--x"), lambda: bt.neo4j_backup_argv("neo4j", "host", "/b"),
    lambda: bt.neo4j_backup_argv("neo4j", "h:1", "/b", backup_type="INCR"),
    lambda: bt.neo4j_restore_argv("neo4j", "/b", restore_until="$(id)"),
    lambda: bt.redis_cli_rdb_argv("h;x", 1, "/f"), lambda: bt.redis_cli_rdb_argv("h", 0, "/f"),
    lambda: bt.neo4j_import_argv("neo4j", "/b", [("../x.csv", "y.csv")], []),
    lambda: bt.neo4j_import_argv("neo4j", "/b", [("x.csv", "y.csv,/etc/passwd")], []),
    lambda: bt.neo4j_import_argv("neo4j", "rel", [], []),
])
def test_argv_builders_refuse_odd_values(call):
    with pytest.raises(ConfigError):
        call()


def test_redis_argv_never_holds_the_password():
    argv = bt.redis_cli_rdb_argv("127.0.0.1", 6379, "/tmp/x.rdb")
    assert argv == ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "--no-auth-warning", "--rdb", "/tmp/x.rdb"]
    assert "-a" not in argv
    assert bt.redis_cli_rdb_argv("h", 1, "/f", user="backup")[6:8] == ["--user", "backup"]
    assert bt.redis_check_rdb_argv("/tmp/x.rdb") == ["redis-check-rdb", "/tmp/x.rdb"]


TABLE = """\
2025-03-10 02:00:01.123+0000 INFO  [c.n.b.BackupOutputMonitor] Starting backup of neo4j
+------------------------------------------------------------------------------------------------+
| DATABASE | LAST BACKUP                                          | STATUS       | DETAILS       |
+------------------------------------------------------------------------------------------------+
| "neo4j"  | "file:///backups/neo4j-2025-03-10T02-00-01.backup"   | "successful" | ""            |
{extra}+------------------------------------------------------------------------------------------------+
"""


@pytest.mark.parametrize("rc,extra,status", [
    (0, "", "ok"),
    (1, "", "with-problems"),
    (1, '| "system" | ""  | "failed" | "Unable to connect" |\n', "failed"),
    (0, '| "system" | ""  | "failed" | "Unable to connect" |\n', "failed"),
    (2, "", "failed"),
])
def test_enterprise_backup_output(rc, extra, status):
    result = bt.parse_enterprise_backup_output(rc, TABLE.format(extra=extra))
    assert result.status == status
    assert result.rows[0]["DATABASE"] == "neo4j" and result.rows[0]["STATUS"] == "successful"
    assert result.succeeded == (status != "failed")
    if status == "with-problems":
        assert result.problems == ("neo4j-admin exited 1 although every database reports a successful backup",)
    if extra:
        assert "system: failed Unable to connect" in result.problems


def test_enterprise_backup_output_warnings_and_garbage():
    out = TABLE.format(extra="") + "WARN  Consistency check found problems, see report\n"
    r = bt.parse_enterprise_backup_output(1, out)
    assert r.status == "with-problems" and any("Consistency" in p for p in r.problems)
    r = bt.parse_enterprise_backup_output(1, "Exception in thread main java.lang.OutOfMemoryError")
    assert r.status == "failed" and r.rows == () and "no backup summary table" in r.problems[-1]


def test_redis_check_parsing_and_keyspace():
    assert bt.parse_redis_check_rdb(0, "[offset 0] Checking RDB file x\n[info] 12 keys read\n[info] 0 expires\n"
                                      "[offset 300] \\o/ RDB looks OK! \\o/") == "RDB looks OK (12 keys read)"
    with pytest.raises(PlanError, match="refused"):
        bt.parse_redis_check_rdb(1, "--- RDB ERROR DETECTED ---\n[additional info] Reading type 0 (string)")
    assert bt.redis_keyspace_counts({"db0": {"keys": 3, "expires": 1, "avg_ttl": 5}, "db2": {"keys": 2}}) == (
        5, 1, {"db0": 3, "db2": 2})


def test_redis_backup_counts_come_from_the_rdb_not_a_live_moment():
    still = {"keys": 12, "expires": 2, "keys_by_db": {"db0": 10, "db1": 2}}
    verdict = "RDB looks OK (12 keys read)"
    assert bt.redis_backup_counts(still, still, verdict) == {"keys": 12, "keys_by_db": {"db0": 10, "db1": 2},
                                                            "expires": 2}
    # written to during the snapshot: the RDB's count stands, per-database counts are unknown (not wrong)
    grown = {"keys": 15, "expires": 2, "keys_by_db": {"db0": 13, "db1": 2}}
    assert bt.redis_backup_counts(still, grown, "RDB looks OK (13 keys read)") == {"keys": 13, "keys_by_db": {},
                                                                                "expires": 2}
    # same INFO before and after, but the RDB holds another count (a write and a delete): per-db dropped too
    assert bt.redis_backup_counts(still, still, "RDB looks OK (11 keys read)")["keys_by_db"] == {}
    # no count in the verdict: INFO's, as before
    assert bt.redis_backup_counts(still, still, "RDB looks OK")["keys"] == 12
