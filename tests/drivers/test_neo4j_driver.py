"""drivers.neo4j against the session's real Neo4j 5.26 Community (shared with other tests).

Schema objects created by the migrations stay (they are idempotent); data nodes each test creates carry a
label unique to the test and are deleted afterwards.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid

import neo4j.exceptions
import pytest
from pydantic import SecretStr

from drivers.neo4j import Neo4jClient, Neo4jUnavailable
from helix_ops import migrations as mig
from helix_ops.errors import ConfigError, DriverError, PlanError, WaitTimeout


@pytest.fixture
def db(neo4j_server):
    with Neo4jClient(neo4j_server.uri, neo4j_server.user, SecretStr(neo4j_server.password)) as client:
        yield client


@pytest.fixture
def migrated(db):
    """The shared database with every migration applied (by this test or an earlier one)."""
    for m in mig.pending(db.applied_migrations()):
        db.apply_migration(m, applied_by="test_neo4j_driver")
    return db


@pytest.fixture
def label(neo4j_server):
    """A label unique to the test; its nodes are deleted afterwards."""
    name = "T_" + uuid.uuid4().hex[:12]
    yield name
    neo4j_server.query(f"MATCH (n:{name}) DETACH DELETE n")


@pytest.fixture
def captured_logs():
    """Every log record (DEBUG and up) from the root, neo4j and prefect loggers, as text."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep(level=logging.DEBUG)
    loggers = [logging.getLogger(), logging.getLogger("neo4j"), logging.getLogger("drivers")]
    saved = [(lg, lg.level) for lg in loggers]
    # Earlier tests of the session may have run a logging dictConfig that disabled existing loggers:
    # re-enable the driver's, so this test sees what the driver really logs.
    children = [lg for name, lg in logging.root.manager.loggerDict.items()
                if isinstance(lg, logging.Logger) and (name == "neo4j" or name.startswith("neo4j."))]
    disabled = [(lg, lg.disabled) for lg in children]
    for lg in children:
        lg.disabled = False
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield records
    for lg, was in disabled:
        lg.disabled = was
    for lg, level in saved:
        lg.removeHandler(handler)
        lg.setLevel(level)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wait_ready_and_server_info(db):
    db.wait_ready(deadline_s=30)
    version, edition = db.server_info()
    assert version.startswith("5.26")
    assert edition == "community"


def test_plain_string_password_is_accepted(neo4j_server):
    with Neo4jClient(neo4j_server.uri, neo4j_server.user, neo4j_server.password) as client:
        assert client.server_info()[1] == "community"
        assert neo4j_server.password not in repr(client)


def test_wait_ready_on_a_closed_port_times_out_within_its_deadline(neo4j_server):
    with Neo4jClient(f"bolt://127.0.0.1:{_closed_port()}", "neo4j", "not-used") as client:
        started = time.monotonic()
        with pytest.raises(WaitTimeout) as err:
            client.wait_ready(deadline_s=2, interval_s=0.2)
        elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 4, elapsed
    assert err.value.what.startswith("Neo4j Bolt at bolt://127.0.0.1:")
    assert "ServiceUnavailable" in str(err.value.last_seen)


def test_a_closed_port_outside_wait_is_a_transient_driver_error():
    with Neo4jClient(f"bolt://127.0.0.1:{_closed_port()}", "neo4j", "not-used", connection_timeout_s=2) as client:
        with pytest.raises(Neo4jUnavailable, match="is unavailable while reading the migration ledger") as err:
            client.applied_migrations()
    assert isinstance(err.value, DriverError)
    assert err.value.hint


def test_a_wrong_password_is_a_clear_driver_error_without_the_password(neo4j_server, captured_logs):
    wrong = "wrong-" + uuid.uuid4().hex
    with Neo4jClient(neo4j_server.uri, neo4j_server.user, SecretStr(wrong)) as client:
        started = time.monotonic()
        with pytest.raises(DriverError) as err:
            client.wait_ready(deadline_s=30)
        assert time.monotonic() - started < 10, "rejected credentials must not be waited on"
    assert not isinstance(err.value, (WaitTimeout, Neo4jUnavailable))
    assert str(err.value).startswith(f"Neo4j at {neo4j_server.uri} rejected the credentials of user 'neo4j'")
    assert "credentials block" in err.value.hint
    assert isinstance(err.value.__cause__, neo4j.exceptions.AuthError)
    for text in (str(err.value), repr(err.value), err.value.hint, str(err.value.__cause__), *captured_logs):
        assert wrong not in text
        assert neo4j_server.password not in text
    # One success after the failure keeps Neo4j's failed-attempt counter away from its lockout.
    neo4j_server.query("RETURN 1")


@pytest.mark.parametrize("uri", ["http://x:1", "x:7687", "bolt//x"])
def test_a_uri_that_is_not_bolt_is_a_config_error(uri):
    with pytest.raises(ConfigError, match="expected bolt://host:port") as err:
        Neo4jClient(uri, "neo4j", "pw")
    assert err.value.path == "neo4j_uri"


def test_migrations_are_recorded_once_with_their_checksums(migrated, neo4j_server):
    assert migrated.applied_migrations() == {m.version: m.checksum for m in mig.MIGRATIONS}
    rows = neo4j_server.query("MATCH (m:HelixMigration) RETURN m.version AS v, count(*) AS c ORDER BY v")
    assert rows == [{"v": m.version, "c": 1} for m in mig.MIGRATIONS]
    rows = neo4j_server.query("MATCH (m:HelixMigration) RETURN m.name AS name, m.applied_at IS NOT NULL AS at "
                              "ORDER BY m.version")
    assert rows == [{"name": m.name, "at": True} for m in mig.MIGRATIONS]


def test_schema_has_every_constraint_and_index_online(migrated, neo4j_server):
    constraints = {r["name"]: r for r in neo4j_server.query(
        "SHOW CONSTRAINTS YIELD name, type, labelsOrTypes, properties")}
    expected = {
        "helix_migration_version": ("HelixMigration", "version"),
        "helix_schema_key": ("HelixSchema", "key"),
        "entity_uid": ("Entity", "uid"),
        "gate_uid": ("Gate", "uid"),
    }
    for name, (lbl, prop) in expected.items():
        assert constraints[name]["type"] == "UNIQUENESS"
        assert constraints[name]["labelsOrTypes"] == [lbl]
        assert constraints[name]["properties"] == [prop]
    indexes = {r["name"]: r for r in neo4j_server.query("SHOW INDEXES YIELD name, type, state, properties")}
    for name, kind, props in [("entity_type", "RANGE", ["type"]), ("entity_updated_at", "RANGE", ["updated_at"]),
                              ("gate_status_opened_at", "RANGE", ["status", "opened_at"]),
                              ("entity_name_text", "TEXT", ["name"])]:
        assert indexes[name]["type"] == kind
        assert indexes[name]["properties"] == props
        assert indexes[name]["state"] == "ONLINE"


def test_applying_an_applied_migration_again_records_nothing(migrated, neo4j_server):
    outcome = migrated.apply_migration(mig.MIGRATIONS[1], applied_by="again")
    assert outcome.outcome == "already-applied"
    assert outcome.reason.startswith("recorded concurrently by ")
    assert outcome.applied_by != "again"
    assert neo4j_server.query("MATCH (m:HelixMigration {version: 2}) RETURN count(m) AS c") == [{"c": 1}]


def test_an_edited_migration_is_refused_at_record_time(migrated):
    # Same statements reordered: harmless to run, but a different checksum from the ledger's.
    m3 = mig.MIGRATIONS[2]
    edited = m3.model_copy(update={"statements": tuple(reversed(m3.statements))})
    with pytest.raises(PlanError, match=r"migration 3 \(lookup-indexes\) is recorded with checksum .* an applied "
                                        r"migration was edited"):
        migrated.apply_migration(edited)
    assert migrated.applied_migrations()[3] == m3.checksum


@pytest.mark.parametrize("base", ["Entity", "Gate"])
def test_a_duplicate_uid_is_rejected_by_the_constraint(migrated, neo4j_server, label, base):
    uid = f"cpe-{uuid.uuid4().hex}"
    neo4j_server.query(f"CREATE (:{base}:{label} {{uid: $uid}})", uid=uid)
    with pytest.raises(neo4j.exceptions.ConstraintError, match="already exists"):
        neo4j_server.query(f"CREATE (:{base}:{label} {{uid: $uid}})", uid=uid)
    assert neo4j_server.query(f"MATCH (n:{label}) RETURN count(n) AS c") == [{"c": 1}]


def test_uid_prefix_offenders_are_counted(migrated, neo4j_server, label):
    for uid in ["cpe-1", "cpe-2", "xyz-1", "CPE-3", "pe-4"]:
        neo4j_server.query(f"CREATE (:Entity:{label} {{uid: $uid + $tag}})", uid=uid, tag=label)
    neo4j_server.query(f"CREATE (:{label} {{name: 'no uid'}})")
    assert migrated.count_uid_prefix_offenders("cpe", label) == 3
    assert migrated.count_uid_prefix_offenders("cpe") >= 3
    assert migrated.count_uid_prefix_offenders("", label) == 0


def test_uid_prefix_is_recorded_once(migrated):
    assert migrated.record_uid_prefix("cpe") == "cpe"
    # A different prefix does not overwrite the recorded one: the caller compares and refuses.
    assert migrated.record_uid_prefix("other") == "cpe"


def test_no_secret_in_driver_logs(neo4j_server, captured_logs):
    with Neo4jClient(neo4j_server.uri, neo4j_server.user, SecretStr(neo4j_server.password)) as client:
        client.wait_ready(deadline_s=30)
        client.applied_migrations()
    assert captured_logs, "the neo4j driver logs at DEBUG: the check must see something"
    assert not [line for line in captured_logs if neo4j_server.password in line]
