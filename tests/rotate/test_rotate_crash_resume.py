"""rotate-helix-secrets' protocol on real servers: a crash injected after (and, for some steps, inside)
every step, then a new run, ends consistent: the blocks' credentials log in, the retired ones are refused,
the state block is cleared, the .env (0600) matches the blocks.

Servers: a redis-server of this module (its password changes) and the session's Neo4j with a primary user
of this module. The consumer "roll" re-reads the blocks and logs in with them, as a restarted service would.
"""

from __future__ import annotations

import os
import stat
from datetime import datetime, timezone

import pytest

from helix_ops import rotation
from helix_ops.rotation import CRASH_ENV

pytestmark = pytest.mark.bed


@pytest.fixture(scope="module")
def rig(bed, neo4j_server, prefect_harness, tmp_path_factory):
    import neo4j
    import yaml

    from blocks.credentials import AnthropicCredentials, HelixAppSecrets, Neo4jCredentials, RedisCredentials
    from blocks.provision import register_block_types
    from helix_ops.descriptor import load_descriptor
    from tasks.rotate import RotationTarget
    from testbed import procs
    from testbed.bed import new_password
    from testbed.helix import local_descriptor
    from testbed.redis_server import RedisServer

    run = bed.run_id.split("-")[-1]
    folder = tmp_path_factory.mktemp("crash")
    redis = RedisServer(folder / "redis", procs.free_port(), new_password())
    redis.start()
    primary, primary_pw = f"rc_{run}", new_password()
    with neo4j.GraphDatabase.driver(neo4j_server.uri, auth=(neo4j_server.user, neo4j_server.password)) as drv:
        drv.execute_query(f"CREATE USER `{primary}` SET PASSWORD $p CHANGE NOT REQUIRED", {"p": primary_pw},
                          database_="system")
    path = local_descriptor(folder / "local.yaml", f"rc{run}")
    data = yaml.safe_load(path.read_text())
    data["credentials"] = {k: f"rc{run}-{k}" for k in ("neo4j", "redis", "dashboard", "anthropic")}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    register_block_types()
    Neo4jCredentials(user=primary, password=primary_pw).save(f"rc{run}-neo4j", overwrite=True)
    RedisCredentials(password=redis.password).save(f"rc{run}-redis", overwrite=True)
    HelixAppSecrets(nextauth_secret=new_password() * 2).save(f"rc{run}-dashboard", overwrite=True)
    AnthropicCredentials(api_key="k" * 40, placeholder=True).save(f"rc{run}-anthropic", overwrite=True)
    desc = load_descriptor(path)
    env_file = folder / ".env"
    rolls: list[tuple] = []
    target = RotationTarget(desc, (("127.0.0.1", redis.port),), neo4j_server.uri, str(env_file), log=lambda m: None)
    yield {"desc": desc, "target": target, "redis": redis, "neo4j": neo4j_server, "env_file": env_file,
           "rolls": rolls, "primary": primary}
    redis.stop()
    with neo4j.GraphDatabase.driver(neo4j_server.uri, auth=(neo4j_server.user, neo4j_server.password)) as drv:
        for user in (primary, rotation.DEFAULT_BRIDGE_USER):
            drv.execute_query(f"DROP USER `{user}` IF EXISTS", database_="system")


def current(rig):
    from blocks.secrets import load_environment_secrets

    return load_environment_secrets(rig["desc"])


def consumer_roll(rig):
    """A consumer restarted by the roll: it reads the blocks and must log in with what it finds."""
    from drivers.neo4j_users import can_login
    from drivers.redis_acl import RedisAcl

    def roll(services, roll_id):
        s = current(rig)
        assert RedisAcl("127.0.0.1", rig["redis"].port).can_login(s.redis_password)
        assert can_login(rig["neo4j"].uri, s.neo4j_user, s.neo4j_password)
        rig["rolls"].append((tuple(services), roll_id))
    return roll


def assert_consistent(rig, before, credential):
    from blocks.rotation_state import load_rotation_state
    from blocks.secrets import compose_env, read_env_file
    from drivers.neo4j_users import can_login
    from drivers.redis_acl import RedisAcl

    s = current(rig)
    acl = RedisAcl("127.0.0.1", rig["redis"].port)
    assert acl.can_login(s.redis_password)
    assert can_login(rig["neo4j"].uri, s.neo4j_user, s.neo4j_password)
    assert s.neo4j_user == rig["primary"] and s.neo4j_alternate_user is None
    assert not can_login(rig["neo4j"].uri, rotation.DEFAULT_BRIDGE_USER, "anything")
    changed = {"redis": s.redis_password, "neo4j": s.neo4j_password, "nextauth": s.nextauth_secret}[credential]
    old = before[credential]
    assert changed.get_secret_value() != old.get_secret_value()
    if credential == "redis":
        assert not acl.can_login(old)
        with acl.login([s.redis_password]) as conn:
            assert len(acl.password_hashes(conn)) == 1
    if credential == "neo4j":
        assert not can_login(rig["neo4j"].uri, rig["primary"], old)
    assert load_rotation_state(rig["desc"]).in_progress() == []
    assert stat.S_IMODE(os.stat(rig["env_file"]).st_mode) == 0o600
    assert dict(read_env_file(rig["env_file"])) == dict(compose_env(s))
    rotated_at = {"redis": "redis", "neo4j": "neo4j", "nextauth": "dashboard"}[credential]
    from blocks.credentials import HelixAppSecrets, Neo4jCredentials, RedisCredentials
    cls = {"redis": RedisCredentials, "neo4j": Neo4jCredentials, "dashboard": HelixAppSecrets}[rotated_at]
    block = cls.load(getattr(rig["desc"].credentials, rotated_at))
    assert (datetime.now(timezone.utc) - block.rotated_at).total_seconds() < 120


def snapshot(rig):
    s = current(rig)
    return {"redis": s.redis_password, "neo4j": s.neo4j_password, "nextauth": s.nextauth_secret}


POINTS = rotation.all_crash_points() + ["redis:set!", "redis:current!", "neo4j:bridge-current!",
                                        "neo4j:primary-set!", "nextauth:current!"]


@pytest.mark.parametrize("point", POINTS)
def test_a_crash_at_each_step_resumes_to_working_credentials(rig, point, monkeypatch):
    from tasks.rotate import InjectedCrash, drive_rotation

    credential = point.split(":")[0]
    before = snapshot(rig)
    monkeypatch.setenv(CRASH_ENV, point)
    with pytest.raises(InjectedCrash):
        drive_rotation(rig["target"], [credential], consumer_roll(rig))
    monkeypatch.delenv(CRASH_ENV)
    result = drive_rotation(rig["target"], [credential], consumer_roll(rig))
    assert result["resumed"] == [credential] and result["rotated"] == [credential]
    assert_consistent(rig, before, credential)


def test_a_full_rotation_takes_two_rolls_and_a_rerun_starts_a_new_one(rig):
    from tasks.rotate import drive_rotation

    before = snapshot(rig)
    rig["rolls"].clear()
    result = drive_rotation(rig["target"], None, consumer_roll(rig))
    assert result["rotated"] == ["redis", "nextauth", "neo4j"] and len(result["rolls"]) == 2
    assert [r["completes"] for r in result["rolls"]] == [
        {"redis": "current", "neo4j": "bridge-current", "nextauth": "current"}, {"neo4j": "primary-current"}]
    assert len(rig["rolls"]) == 2 and rig["rolls"][1][0] == ("dashboard", "mcp-graph", "mcp-discovery",
                                                               "mcp-derivation", "mcp-cascade", "mcp-verification")
    for credential in ("redis", "neo4j", "nextauth"):
        assert_consistent(rig, before, credential)


def test_no_secret_reaches_the_result_or_the_log(rig, capsys):
    from tasks.rotate import drive_rotation

    lines = []
    target = rig["target"].__class__(**{**rig["target"].__dict__, "log": lines.append})
    result = drive_rotation(target, None, consumer_roll(rig))
    s = current(rig)
    text = repr(result) + "\n".join(lines) + capsys.readouterr().out
    for secret in (s.redis_password, s.neo4j_password, s.nextauth_secret):
        assert secret.get_secret_value() not in text
    assert any("new password added" in line for line in lines)
