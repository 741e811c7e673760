"""init-helix-db through a real local Prefect API against real Neo4j 5.26 Community.

Tests that need a database no migration has touched ("first run", "two first runs racing") use a Neo4j of
their own (started once for this module, emptied before each of those tests). The others use the session's
shared Neo4j, whose schema they leave in place; their data nodes carry a label unique to the test and are
deleted afterwards.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import SecretStr

from flows.init_db import init_helix_db, run_init_db
from helix_ops import migrations as mig
from helix_ops.errors import ConfigError, DriverError, PlanError

VERSIONS = [m.version for m in mig.MIGRATIONS]
CONSTRAINTS = {"helix_migration_version", "helix_schema_key", "entity_uid", "gate_uid"}
INDEXES = {"entity_type", "entity_updated_at", "gate_status_opened_at", "entity_name_text"}

try:
    from blocks import Neo4jCredentials
except ImportError:  # blocks/ not there yet: a stand-in with the same type slug and fields
    from prefect.blocks.core import Block

    class Neo4jCredentials(Block):  # type: ignore[no-redef]
        _block_type_slug = "helix-neo4j-credentials"
        user: str = "neo4j"
        password: SecretStr


@pytest.fixture(scope="module")
def own_neo4j(bed):
    """A Neo4j server for this module only (its schema may be wiped)."""
    server = bed.new_neo4j("neo4j-init-db")
    yield server
    server.stop()


@pytest.fixture
def fresh_db(own_neo4j):
    """``own_neo4j`` with no constraints, no indexes (but the built-in lookup ones) and no nodes."""
    for row in own_neo4j.query("SHOW CONSTRAINTS YIELD name"):
        own_neo4j.query(f"DROP CONSTRAINT {row['name']}")
    for row in own_neo4j.query("SHOW INDEXES YIELD name, type WHERE type <> 'LOOKUP' RETURN name"):
        own_neo4j.query(f"DROP INDEX {row['name']}")
    own_neo4j.query("MATCH (n) DETACH DELETE n")
    return own_neo4j


def _block(prefect_harness, server, password: str | None = None) -> str:
    name = "test-neo4j-" + uuid.uuid4().hex[:8]
    Neo4jCredentials(user=server.user, password=SecretStr(password or server.password)).save(name, overwrite=True)
    return name


def _run(server, block: str, **params):
    state = init_helix_db(neo4j_uri=server.uri, credentials_block=block, return_state=True, **params)
    return state


def _prefect_records(flow_run_id) -> str:
    """Everything Prefect's API holds about a flow run (run, task runs, logs, artifacts) as one JSON text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        parts = [client.read_flow_run(flow_run_id).model_dump(mode="json")]
        parts += [t.model_dump(mode="json") for t in client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))]
        parts += [lg.model_dump(mode="json") for lg in client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]
        parts += [a.model_dump(mode="json") for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))]
    return json.dumps(parts)


def _artifact(flow_run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert [a.key for a in artifacts] == ["init-helix-db"]
    return artifacts[0].data


def _ledger(server) -> list[dict]:
    return server.query("MATCH (m:HelixMigration) RETURN m.version AS version, m.checksum AS checksum, "
                        "count(*) AS n ORDER BY version")


def test_first_run_applies_everything_and_a_second_run_nothing(prefect_harness, fresh_db):
    block = _block(prefect_harness, fresh_db)

    first = _run(fresh_db, block)
    assert first.is_completed(), first.message
    summary = first.result()
    assert summary["applied"] == VERSIONS and summary["already_applied"] == []
    assert [(m["version"], m["outcome"], m["reason"]) for m in summary["migrations"]] == [
        (v, "applied", "applied and recorded by this run") for v in VERSIONS]
    assert summary["server"]["edition"] == "community" and summary["server"]["version"].startswith("5.26")
    assert summary["uid_prefix"] == {
        "requested": "cpe", "recorded": "cpe", "offenders": 0,
        "enforcement": "counted by a query and reported; Neo4j Community has no property pattern constraints"}

    assert {r["name"] for r in fresh_db.query("SHOW CONSTRAINTS YIELD name")} == CONSTRAINTS
    indexes = {r["name"]: r["state"] for r in fresh_db.query("SHOW INDEXES YIELD name, type, state "
                                                            "WHERE type <> 'LOOKUP' RETURN name, state")}
    assert indexes == {**{c: "ONLINE" for c in CONSTRAINTS}, **{i: "ONLINE" for i in INDEXES}}
    assert _ledger(fresh_db) == [{"version": m.version, "checksum": m.checksum, "n": 1} for m in mig.MIGRATIONS]
    run_id = str(first.state_details.flow_run_id)
    assert fresh_db.query("MATCH (m:HelixMigration) RETURN DISTINCT m.applied_by AS by") == [
        {"by": f"flow-run {run_id}"}]
    assert fresh_db.query("MATCH (s:HelixSchema) RETURN s.key AS key, s.uid_prefix AS p") == [
        {"key": "helix", "p": "cpe"}]
    report = _artifact(first.state_details.flow_run_id)
    for m in mig.MIGRATIONS:
        assert f"| {m.version} | {m.name} | applied | applied and recorded by this run |" in report

    second = _run(fresh_db, block)
    assert second.is_completed(), second.message
    again = second.result()
    assert again["applied"] == [] and again["already_applied"] == VERSIONS
    for m, row in zip(mig.MIGRATIONS, again["migrations"]):
        assert row["outcome"] == "already-applied"
        assert row["reason"] == f"already applied (ledger checksum {m.checksum[:12]}… matches)"
    assert _ledger(fresh_db) == [{"version": m.version, "checksum": m.checksum, "n": 1} for m in mig.MIGRATIONS]
    assert "| 3 | lookup-indexes | already-applied | already applied" in _artifact(second.state_details.flow_run_id)


def test_two_racing_first_runs_both_succeed_and_record_each_migration_once(prefect_harness, fresh_db):
    block = _block(prefect_harness, fresh_db)
    with ThreadPoolExecutor(max_workers=2) as pool:
        states = list(pool.map(lambda _: _run(fresh_db, block), range(2)))
    assert all(s.is_completed() for s in states), [s.message for s in states]
    summaries = [s.result() for s in states]
    assert _ledger(fresh_db) == [{"version": m.version, "checksum": m.checksum, "n": 1} for m in mig.MIGRATIONS]
    # Exactly one run recorded each migration; the other saw it applied (before or while it ran).
    for v in VERSIONS:
        outcomes = sorted(next(m["outcome"] for m in s["migrations"] if m["version"] == v) for s in summaries)
        assert outcomes == ["already-applied", "applied"], (v, summaries)
    assert {r["name"] for r in fresh_db.query("SHOW CONSTRAINTS YIELD name")} == CONSTRAINTS
    assert fresh_db.query("MATCH (s:HelixSchema) RETURN count(s) AS c") == [{"c": 1}]


def test_run_twice_on_the_shared_database_is_idempotent(prefect_harness, neo4j_server):
    run_init_db(neo4j_server.uri, neo4j_server.user, neo4j_server.password)
    summary = run_init_db(neo4j_server.uri, neo4j_server.user, SecretStr(neo4j_server.password))
    assert summary["applied"] == [] and summary["already_applied"] == VERSIONS
    assert _ledger(neo4j_server) == [{"version": m.version, "checksum": m.checksum, "n": 1} for m in mig.MIGRATIONS]


def test_an_edited_migration_is_refused_before_anything_changes(prefect_harness, neo4j_server):
    run_init_db(neo4j_server.uri, neo4j_server.user, neo4j_server.password)
    m3 = mig.MIGRATIONS[2]
    edited = (*mig.MIGRATIONS[:2], m3.model_copy(update={
        "statements": (*m3.statements, "CREATE INDEX should_never_exist IF NOT EXISTS FOR (n:Entity) ON (n.x)")}))
    with pytest.raises(PlanError) as err:
        run_init_db(neo4j_server.uri, neo4j_server.user, neo4j_server.password, migrations=edited)
    assert str(err.value).startswith(
        f"migration 3 (lookup-indexes) was edited after it was applied: the database recorded checksum "
        f"{m3.checksum[:12]}…")
    assert neo4j_server.query("SHOW INDEXES YIELD name WHERE name = 'should_never_exist' RETURN name") == []


def test_a_different_uid_prefix_is_refused(prefect_harness, neo4j_server):
    block = _block(prefect_harness, neo4j_server)
    assert _run(neo4j_server, block).is_completed()
    state = _run(neo4j_server, block, uid_prefix="other")
    assert state.is_failed()
    with pytest.raises(PlanError, match="records uid_prefix 'cpe' but this run asked for 'other'"):
        state.result()


def test_an_invalid_uid_prefix_is_refused_before_connecting(prefect_harness):
    with pytest.raises(ConfigError, match="server.uid_prefix: 'CPE-'"):
        run_init_db("bolt://127.0.0.1:1", "neo4j", "pw", uid_prefix="CPE-")


def test_uid_prefix_offenders_are_reported(prefect_harness, neo4j_server):
    label = "T_" + uuid.uuid4().hex[:12]
    try:
        for uid in ["cpe-a", "abc-b", "xyz-c"]:
            neo4j_server.query(f"CREATE (:Entity:{label} {{uid: $uid}})", uid=f"{uid}-{label}")
        block = _block(prefect_harness, neo4j_server)
        state = _run(neo4j_server, block)
        assert state.is_completed(), state.message
        summary = state.result()
        assert summary["uid_prefix"]["offenders"] >= 2
        assert f"**{summary['uid_prefix']['offenders']}**" in _artifact(state.state_details.flow_run_id)
    finally:
        neo4j_server.query(f"MATCH (n:{label}) DETACH DELETE n")


def test_a_wrong_password_fails_clearly_and_leaks_nothing(prefect_harness, neo4j_server):
    wrong = "wrong-" + uuid.uuid4().hex
    block = _block(prefect_harness, neo4j_server, password=wrong)
    state = _run(neo4j_server, block)
    assert state.is_failed()
    with pytest.raises(DriverError, match=r"rejected the credentials of user 'neo4j'") as err:
        state.result()
    assert wrong not in str(err.value)
    records = _prefect_records(state.state_details.flow_run_id)
    assert "rejected the credentials" in records  # the failure is in the API...
    assert wrong not in records and neo4j_server.password not in records  # ...the password is not
    neo4j_server.query("RETURN 1")  # a success resets Neo4j's failed-attempt counter


def test_no_secret_reaches_prefect(prefect_harness, neo4j_server):
    block = _block(prefect_harness, neo4j_server)
    state = _run(neo4j_server, block)
    assert state.is_completed(), state.message
    records = _prefect_records(state.state_details.flow_run_id)
    assert "apply-migration" in records or "read-applied-migrations" in records
    assert neo4j_server.password not in records
    assert neo4j_server.password not in json.dumps(state.result())
