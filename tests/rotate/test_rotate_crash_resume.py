"""rotate-helix-secrets' crash safety on the deployed local stack (the session's ``helix_env``), with the real
engine rolls: a crash injected after (and, for some steps, inside) every step of the protocol, then a new run.

The crash points are visited in the order one rotation passes them when every run dies at the next point
(:data:`CHAIN`), so the whole module costs one rotation of all three credentials (two consumer rolls) instead
of one per point. Each test resumes the rotation left by the previous one and dies at its own point, then
checks that the credentials work at that moment: the blocks' logins are accepted by Redis and Neo4j, every
consumer replica is healthy (its probe logs in to both with what its environment holds), the ``.env`` (0600)
matches the blocks and the state block records the step. A test run alone (or after a failure) still works:
if its point is behind the rotation in progress, that rotation is finished first and a new one dies there.
The last test lets the resumed rotation finish and checks the end state: new credentials work, the old and
the bridge login are refused, the state is cleared.

At ``neo4j:bridge-current`` (consumers on the bridge user) a consumer lost and re-created the way deploy-helix
does it (``tasks.engine.apply_service`` on the descriptor's spec) logs in: NEO4J_USER comes from the blocks
with the password.
"""

from __future__ import annotations

import os
import stat
from datetime import datetime, timezone

import pytest

from helix_ops import rotation
from helix_ops.rotation import CRASH_ENV

pytestmark = pytest.mark.bed

EXTRA = ["redis:set!", "redis:current!", "neo4j:bridge-current!", "neo4j:primary-set!", "nextauth:current!"]
"""Crashes after doing a step but before recording it (the steps whose redo is not trivially a no-op)."""

CHAIN = [
    "redis:pending", "redis:set!", "redis:set", "redis:tested", "redis:auth-set",
    "neo4j:pending", "neo4j:bridge-set", "neo4j:bridge-tested", "nextauth:pending",
    "redis:current!",  # first roll (every consumer), then death before recording it
    "redis:current", "redis:retired",
    "neo4j:bridge-current!", "neo4j:bridge-current",  # the first roll served these: its replicas are kept
    "neo4j:primary-set!", "neo4j:primary-set", "neo4j:primary-tested",
    "neo4j:primary-current",  # second roll (neo4j back on its primary user, nextauth's roll with it)
    "neo4j:retired", "nextauth:current!", "nextauth:current", "nextauth:retired",
]
"""Every crash point, in the order a rotation that dies at each one in turn reaches them."""

APPS = ("dashboard", "mcp-graph", "mcp-discovery", "mcp-derivation", "mcp-cascade", "mcp-verification")


def test_the_chain_visits_every_step_once():
    assert sorted(CHAIN) == sorted(rotation.all_crash_points() + EXTRA) and len(set(CHAIN)) == len(CHAIN)


@pytest.fixture(scope="module")
def rig(helix_env, engine, bed):
    from drivers.engine import EngineDriver
    from helix_ops.descriptor import load_descriptor
    from tasks.engine import EngineTarget

    desc = load_descriptor(helix_env["path"])
    target = EngineTarget(engine.base_url, desc.project, desc.environment, bed.container_labels())
    rig = {"desc": desc, "path": helix_env["path"], "env_file": helix_env["env_file"], "engine": engine,
           "labels": bed.container_labels(), "target": target,
           "driver": EngineDriver.connect(engine.base_url, desc.project, desc.environment), "results": [],
           "roll_ids": set()}
    rig["before"] = snapshot(rig)
    return rig


def current(rig):
    from blocks.secrets import load_environment_secrets

    return load_environment_secrets(rig["desc"])


def snapshot(rig):
    s = current(rig)
    return {"redis": s.redis_password, "neo4j": s.neo4j_password, "nextauth": s.nextauth_secret}


def rotate(rig, crash: str | None = None):
    """One run of the flow (real rolls: every consumer service at once), dying at ``crash``."""
    from flows.rotate import rotate_helix_secrets

    if crash:
        os.environ[CRASH_ENV] = crash
    try:
        result = rotate_helix_secrets(env="local", descriptor=str(rig["path"]), engine_url=rig["engine"].base_url,
                                      env_file=str(rig["env_file"]), container_labels=rig["labels"],
                                      health_timeout_s=120, roll_parallelism=len(APPS))
    finally:
        os.environ.pop(CRASH_ENV, None)
    rig["results"].append(result)
    return result


def endpoints(rig):
    driver = rig["driver"]
    redis, bolt = [], None
    for c in driver.containers():
        service = c.labels.get("helix-ops.service", "")
        if c.status == "running" and (service == "redis" or service.startswith("redis-")):
            redis.append(driver.probe_address(c, 6379))
        elif c.status == "running" and service == "neo4j":
            bolt = "bolt://%s:%d" % driver.probe_address(c, 7687)
    assert redis and bolt
    return redis, bolt


def assert_working(rig):
    """The blocks' credentials log in, every replica is healthy with what it holds, the .env matches."""
    from blocks.secrets import compose_env, read_env_file
    from drivers.neo4j_users import can_login
    from drivers.redis_acl import RedisAcl
    from helix_ops.stack import build_stack
    from tasks.engine import ProbeSpec, service_status

    s = current(rig)
    redis, bolt = endpoints(rig)
    for host, port in redis:
        assert RedisAcl(host, port).can_login(s.redis_password), f"redis {port} refuses the block's password"
    assert can_login(bolt, s.neo4j_user, s.neo4j_password), f"neo4j refuses the block's login ({s.neo4j_user})"
    stack = build_stack(rig["desc"])
    probes = {svc.name: ProbeSpec(svc.probe.kind, svc.probe.port, svc.probe.path) for svc in stack.services}
    rows = service_status.fn(rig["target"], probes, rig["desc"])
    bad = [(r["service"], r["health"]) for r in rows if r["replicas"] == 0 or r["health"].startswith("unhealthy")]
    assert bad == [], bad
    assert {r["service"] for r in rows if r["replicas"]} >= set(APPS)
    assert stat.S_IMODE(os.stat(rig["env_file"]).st_mode) == 0o600
    assert dict(read_env_file(rig["env_file"])) == dict(compose_env(s))
    return s


def crash_at(rig, point: str) -> None:
    from flows.rotate import InjectedCrash

    for _ in range(2):
        try:
            rotate(rig, crash=point)
        except InjectedCrash as exc:
            assert point.rstrip("!") in str(exc) and ("before recording" in str(exc)) == point.endswith("!")
            return
        # the rotation in progress was already past `point` and has just finished: a new one passes it
    pytest.fail(f"no crash at {point}")


@pytest.mark.parametrize("point", CHAIN)
def test_a_crash_at_each_step_leaves_working_credentials(rig, point):
    from blocks.rotation_state import load_rotation_state

    credential, step = point.rstrip("!").split(":")
    crash_at(rig, point)
    state = load_rotation_state(rig["desc"])
    order = rotation.STEPS[credential]
    recorded = order[order.index(step) - 1] if point.endswith("!") else step
    assert credential in state.in_progress() and state.step(credential) == recorded
    if state.roll_id:
        rig["roll_ids"].add(state.roll_id)
    s = assert_working(rig)
    if point == "neo4j:bridge-current":
        assert s.neo4j_user == rotation.DEFAULT_BRIDGE_USER and s.neo4j_alternate_user == "neo4j"
        deploy_recreates_a_consumer(rig, "mcp-discovery", s)


def deploy_recreates_a_consumer(rig, name, s):
    """A consumer's replicas are lost while the consumers use the bridge user; deploy-helix's apply of the
    service (the same task, same spec and hash as its plan) re-creates it and its health (a Bolt login with
    its NEO4J_USER / NEO4J_PASSWORD) passes."""
    import httpx

    from helix_ops.plan import compose_objects, template_hash
    from helix_ops.render.compose import render_compose
    from helix_ops.stack import build_stack
    from tasks.engine import ProbeSpec, apply_service

    driver = rig["driver"]
    driver.remove(driver.containers(name), grace_s=2)
    stack = build_stack(rig["desc"])
    spec = {o.identity: o.spec for o in compose_objects(render_compose(stack))}[f"service/{name}"]
    assert spec["environment"]["NEO4J_USER"] == "${NEO4J_USER:-neo4j}"
    svc = stack.service(name)
    report = apply_service(rig["target"], name, spec, template_hash(spec),
                           ProbeSpec(svc.probe.kind, svc.probe.port, svc.probe.path), rig["desc"],
                           health_deadline_s=120)
    assert report["started"] and not report["kept"]
    [c] = [c for c in driver.containers(name) if c.status == "running"]
    env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
    assert env["NEO4J_USER"] == s.neo4j_user == rotation.DEFAULT_BRIDGE_USER
    r = httpx.get("http://%s:%d/api/health" % driver.probe_address(c, svc.probe.port), timeout=10)
    assert r.status_code == 200 and r.json()["checks"]["neo4j"]["ok"], r.text[:300]


def test_the_resumed_rotation_finishes_consistent(rig, capfd):
    from blocks.credentials import HelixAppSecrets, Neo4jCredentials, RedisCredentials
    from blocks.rotation_state import load_rotation_state
    from drivers.neo4j_users import can_login
    from drivers.redis_acl import RedisAcl

    result = rotate(rig)
    if not result["resumed"]:  # run alone: the chain left nothing to resume
        pytest.skip("no rotation in progress (run with the chain)")
    assert set(result["resumed"]) <= {"neo4j", "nextauth"} and "nextauth" in result["rotated"]
    s = assert_working(rig)
    before = rig["before"]
    redis, bolt = endpoints(rig)
    for host, port in redis:
        acl = RedisAcl(host, port)
        assert not acl.can_login(before["redis"])
        with acl.login([s.redis_password]) as conn:
            assert len(acl.password_hashes(conn)) == 1
    assert s.neo4j_user == "neo4j" and s.neo4j_alternate_user is None
    assert not can_login(bolt, "neo4j", before["neo4j"]) and not can_login(bolt, rotation.DEFAULT_BRIDGE_USER, "x")
    for credential, value in (("redis", s.redis_password), ("neo4j", s.neo4j_password),
                              ("nextauth", s.nextauth_secret)):
        assert value.get_secret_value() != before[credential].get_secret_value()
    state = load_rotation_state(rig["desc"])
    assert state.in_progress() == [] and state.rotation_id is None and state.roll_id is None
    desc = rig["desc"].credentials
    for cls, name in ((RedisCredentials, desc.redis), (Neo4jCredentials, desc.neo4j), (HelixAppSecrets, desc.dashboard)):
        assert (datetime.now(timezone.utc) - cls.load(name).rotated_at).total_seconds() < 900
    # the chain cost two rolls: every consumer replica was created by one of them (or by the deploy test)
    assert len(rig["roll_ids"]) == 2, rig["roll_ids"]
    names = [c.name for c in rig["driver"].containers() if c.labels.get("helix-ops.service") in APPS]
    assert all(n.rsplit("-", 1)[-1] in rig["roll_ids"] for n in names), names
    out = capfd.readouterr()
    text = out.out + out.err + repr(rig["results"])
    for secret in (s.redis_password, s.neo4j_password, s.nextauth_secret, *before.values()):
        assert secret.get_secret_value() not in text
