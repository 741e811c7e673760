"""helix_ops.migrations: the migration list, checksums, pending, the plan and its refusals (pure)."""

from __future__ import annotations

import re

import pytest

from helix_ops import migrations as mig
from helix_ops.errors import ConfigError, PlanError
from helix_ops.migrations import MIGRATIONS, Migration

ALL = {m.version: m.checksum for m in MIGRATIONS}


def test_versions_run_from_one_and_the_list_is_valid():
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    mig.validate_migrations(MIGRATIONS)


def test_bootstrap_is_the_ledger_constraint():
    assert MIGRATIONS[0].statements[0] == (
        "CREATE CONSTRAINT helix_migration_version IF NOT EXISTS "
        "FOR (m:HelixMigration) REQUIRE m.version IS UNIQUE"
    )


def test_every_uid_label_has_its_uniqueness_constraint():
    statements = {s for m in MIGRATIONS for s in m.statements}
    for label in mig.UID_LABELS:
        assert mig.uid_constraint(label) in statements
    assert mig.uid_constraint("Entity") == (
        "CREATE CONSTRAINT entity_uid IF NOT EXISTS FOR (n:Entity) REQUIRE n.uid IS UNIQUE"
    )


def test_every_statement_is_named_and_idempotent():
    for m in MIGRATIONS:
        for s in m.statements:
            assert re.search(r"\bIF NOT EXISTS\b", s), s


def test_checksums_are_pinned():
    # Applied migrations must never change: if this fails, restore the migration and add a new one.
    assert {m.version: m.checksum[:16] for m in MIGRATIONS} == {
        1: "307edc9be486bd9e",
        2: "93f4ec5dd59c05cb",
        3: "e136f21c5336f79d",
    }


@pytest.mark.parametrize(
    "a, b",
    [
        (("A", "B"), ("B", "A")),  # order matters
        (("A B",), ("A", "B")),  # statement boundaries matter
        (("A",), ("A ",)),  # exact text
    ],
)
def test_checksum_distinguishes(a, b):
    assert mig.checksum(a) != mig.checksum(b)
    assert mig.checksum(a) == mig.checksum(list(a))
    assert re.fullmatch(r"[0-9a-f]{64}", mig.checksum(a))


@pytest.mark.parametrize(
    "applied, expected",
    [
        (set(), [1, 2, 3]),
        ({1}, [2, 3]),
        ({1, 2}, [3]),
        ({1, 2, 3}, []),
        ({2}, [1, 3]),  # pending() only subtracts; plan_migrations refuses the gap
    ],
)
def test_pending(applied, expected):
    assert [m.version for m in mig.pending(applied)] == expected


def test_plan_on_a_fresh_database_applies_everything_in_order():
    steps = mig.plan_migrations({})
    assert [(s.version, s.action, s.reason) for s in steps] == [
        (1, "apply", "not in the ledger"),
        (2, "apply", "not in the ledger"),
        (3, "apply", "not in the ledger"),
    ]


def test_plan_when_everything_is_applied_is_all_no_ops_with_reasons():
    steps = mig.plan_migrations(ALL)
    assert [s.action for s in steps] == ["already-applied"] * 3
    assert all(s.reason.startswith("already applied (ledger checksum ") for s in steps)


def test_plan_partially_applied():
    steps = mig.plan_migrations({1: ALL[1]})
    assert [(s.version, s.action) for s in steps] == [(1, "already-applied"), (2, "apply"), (3, "apply")]


def test_an_edited_applied_migration_is_refused():
    edited = (*MIGRATIONS[:2], MIGRATIONS[2].model_copy(update={"statements": MIGRATIONS[2].statements[:-1]}))
    with pytest.raises(PlanError, match=r"migration 3 \(lookup-indexes\) was edited after it was applied") as err:
        mig.plan_migrations(ALL, edited)
    assert "put the change in a new migration" in str(err.value)


def test_a_ledger_from_a_newer_helix_ops_is_refused():
    with pytest.raises(PlanError, match=r"migration\(s\) \[4, 9\] that this helix-ops does not know"):
        mig.plan_migrations({**ALL, 4: "x", 9: "y"})


def test_a_ledger_with_a_gap_is_refused():
    with pytest.raises(PlanError, match=r"gap: \[2\] not applied but 3 is"):
        mig.plan_migrations({1: ALL[1], 3: ALL[3]})


def _m(version: int, name: str, *statements: str) -> Migration:
    return Migration(version=version, name=name, statements=statements or ("CREATE INDEX a IF NOT EXISTS FOR (n:A) ON (n.a)",))


@pytest.mark.parametrize(
    "migrations, message",
    [
        ((_m(2, "a"),), "has version 2; expected 1"),
        ((_m(1, "a"), _m(3, "b")), "has version 3; expected 2"),
        ((_m(1, "a"), _m(2, "a")), "name 'a' is used twice"),
        ((_m(1, "a", "CREATE INDEX FOR (n:A) ON (n.a)"),), "not an idempotent named schema statement"),
        ((_m(1, "a", "CREATE CONSTRAINT c FOR (n:A) REQUIRE n.a IS UNIQUE"),), "not an idempotent"),
        ((_m(1, "a", "MATCH (n) DETACH DELETE n"),), "not an idempotent"),
        ((_m(1, "a", "DROP INDEX a"),), "not an idempotent"),
    ],
)
def test_invalid_migration_lists_are_refused(migrations, message):
    with pytest.raises(PlanError, match=re.escape(message)):
        mig.validate_migrations(migrations)


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TEXT INDEX t IF NOT EXISTS FOR (n:A) ON (n.a)",
        "create range index r if not exists for (n:A) on (n.a)",
        "DROP INDEX old_one IF EXISTS",
        "DROP CONSTRAINT old_one IF EXISTS",
    ],
)
def test_idempotent_statement_forms_are_accepted(statement):
    mig.validate_migrations((_m(1, "a", statement),))


@pytest.mark.parametrize("bad", [{"version": 0}, {"name": "Has Space"}, {"statements": ()}, {"extra": 1}])
def test_migration_model_rejects(bad):
    data = {"version": 1, "name": "ok", "statements": ("CREATE INDEX a IF NOT EXISTS FOR (n:A) ON (n.a)",), **bad}
    with pytest.raises(ValueError):
        Migration(**data)


def test_migration_is_frozen():
    with pytest.raises(ValueError):
        MIGRATIONS[0].version = 7  # type: ignore[misc]


@pytest.mark.parametrize("prefix, ok", [("cpe", True), ("a1", True), ("", False), ("CPE", False), ("1a", False),
                                        ("cpe-", False)])
def test_validate_uid_prefix(prefix, ok):
    if ok:
        assert mig.validate_uid_prefix(prefix) == prefix
    else:
        with pytest.raises(ConfigError) as err:
            mig.validate_uid_prefix(prefix)
        assert err.value.path == "server.uid_prefix"


def test_a_different_recorded_prefix_is_refused():
    mig.check_recorded_uid_prefix("cpe", "cpe")
    with pytest.raises(PlanError, match="records uid_prefix 'cpe' but this run asked for 'abc'"):
        mig.check_recorded_uid_prefix("cpe", "abc")


def test_uid_prefix_offenders_query():
    assert mig.uid_prefix_offenders_query() == (
        "MATCH (n) WHERE n.uid IS NOT NULL AND NOT n.uid STARTS WITH $prefix RETURN count(n) AS offenders"
    )
    assert mig.uid_prefix_offenders_query("T_1").startswith("MATCH (n:T_1) WHERE")
    with pytest.raises(ConfigError):
        mig.uid_prefix_offenders_query("A) DETACH DELETE (n")


def test_the_ledger_record_is_a_merge_on_version():
    assert mig.RECORD_MIGRATION_QUERY.startswith("MERGE (m:HelixMigration {version: $version}) ON CREATE SET")


def test_report_lists_every_migration():
    summary = {
        "uri": "bolt://db:7687", "server": {"version": "5.26.0", "edition": "community"},
        "migrations": [
            {"version": 1, "name": "bootstrap-ledger", "outcome": "applied", "reason": "applied and recorded by this run"},
            {"version": 2, "name": "node-uid-uniqueness", "outcome": "already-applied", "reason": "a|b"},
        ],
        "applied": [1], "already_applied": [2],
        "uid_prefix": {"recorded": "cpe", "offenders": 4},
    }
    text = mig.render_report(summary)
    assert "| 1 | bootstrap-ledger | applied | applied and recorded by this run |" in text
    assert "| 2 | node-uid-uniqueness | already-applied | a\\|b |" in text
    assert "Applied now: 1; already applied: 1." in text
    assert "**4**" in text


def test_up_to_date_only_when_every_migration_matches_and_the_prefix_is_recorded():
    from helix_ops.migrations import DEFAULT_UID_PREFIX, MIGRATIONS, up_to_date

    ledger = {m.version: m.checksum for m in MIGRATIONS}
    reason = up_to_date(ledger, DEFAULT_UID_PREFIX, DEFAULT_UID_PREFIX)
    assert reason and str(len(MIGRATIONS)) in reason and DEFAULT_UID_PREFIX in reason
    assert up_to_date({}, None, "cpe") is None  # a fresh database
    assert up_to_date(ledger, None, "cpe") is None  # the prefix not recorded yet
    assert up_to_date(ledger, "abc", "cpe") is None  # another prefix: init-helix-db must refuse it, so it runs
    lagging = dict(ledger)
    lagging.pop(MIGRATIONS[-1].version)
    assert up_to_date(lagging, "cpe", "cpe") is None
    edited = {**ledger, MIGRATIONS[0].version: "0" * 64}
    assert up_to_date(edited, "cpe", "cpe") is None  # init-helix-db then refuses the edited migration
    assert up_to_date({**ledger, 999: "x"}, "cpe", "cpe") is None  # a newer helix-ops migrated it
