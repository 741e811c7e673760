"""Randomized crash tests of rotate-helix-secrets (issue 24, part 4), on the session's deployed local stack
(``helix_env``: its own credential blocks, real engine rolls); the machinery is ``tests/crash_points.py``'s.

The chosen crash points (an exception after, or before recording, every step of the protocol) are
``test_rotate_crash_resume.py``'s. Here the point is drawn and the process dies for real: an ordinary rotation of
:data:`CREDENTIALS` records the boundaries it goes through (``fine``: every task run, the protocol's steps and
the consumers' submitted rolls included, and every engine step of a roll: a replica created, health-gated,
removed, the load balancer updated); for each seed, ``random.Random(seed)`` picks one (from the sorted list: the
consumers roll in parallel, so the recorded order varies), and a rotation runs in a flow process that SIGKILLs
itself exactly there. Then the invariants:

* right after the kill, every credential that should work works: Redis and Neo4j accept the blocks' current
  values, and every consumer replica that runs is (or becomes, within :data:`SETTLE_S`) healthy, i.e. logs in
  with what it holds (a consumer the killed roll had stopped, mcp-graph stops first, is started by the next run);
* the next run of the same flow completes on its own (the killed run's lease is recovered; the rotation it left
  is resumed);
* then every consumer runs and is healthy, the blocks' new values work, the values from before the seed and the
  bridge login are refused, the ``.env`` (0600) matches the blocks, the rotation state is cleared, and no
  lease-holder record, no writer-pause record and no held lease slot are left.

Each seed prints ``seed N: rotate-helix-secrets killed at <point>``; a failing seed is named in the test id
(``test_rotation_killed_at_a_random_boundary[seed=N]``) and replays with ``HELIX_CRASH_SEEDS=N`` (or
``HELIX_CRASH_POINT=<point>``). Which replica a point inside the parallel roll falls on (``engine.remove#1``:
the first removal to start) depends on timing.
Default: seed 1 of a Redis rotation, within CI's budget (the stack is the session's; the recording rotation and
one seed), and the point seed 1 of an earlier roll found (the single writer stopped, its new replica not created).
"""

from __future__ import annotations

import os
import signal

import pytest

from helix_ops import rotation
from tests.crash_points import (POINT_ENV, SEEDS_ENV, Boundaries, lease_free, no_records_left, pick, run_killed,
                                seeds, settled_health)
from tests.rotate.test_rotate_crash_resume import APPS, assert_working, current, endpoints

pytestmark = pytest.mark.bed

CREDENTIALS = [c for c in os.environ.get("HELIX_CRASH_ROTATE_CREDENTIALS", "redis").split(",") if c]
"""What each run rotates: Redis's password by default (one consumer roll, within CI's budget);
``HELIX_CRASH_ROTATE_CREDENTIALS=redis,neo4j,nextauth`` draws the points of a full rotation (two rolls)."""
SETTLE_S = 90
"""How long a consumer replica the killed run had just created may take to answer its probe."""


@pytest.fixture(scope="module")
def rig(helix_env, engine, bed):
    from drivers.engine import EngineDriver
    from helix_ops.descriptor import load_descriptor
    from tasks.engine import EngineTarget

    desc = load_descriptor(helix_env["path"])
    rig = {"desc": desc, "path": helix_env["path"], "env_file": helix_env["env_file"], "engine": engine,
           "target": EngineTarget(engine.base_url, desc.project, desc.environment, bed.container_labels()),
           "driver": EngineDriver.connect(engine.base_url, desc.project, desc.environment),
           "args": {"env": "local", "descriptor": str(helix_env["path"]), "engine_url": engine.base_url,
                    "env_file": str(helix_env["env_file"]), "container_labels": bed.container_labels(),
                    "credentials": CREDENTIALS, "health_timeout_s": 120, "roll_parallelism": len(APPS)}}
    repaired(rig, "before the module")  # another module's failure: finished, unrecorded
    yield rig
    repaired(rig, "after the module")


def repaired(rig, why: str) -> None:
    """A rotation left in progress is finished and every consumer runs again (deploy-helix creates the missing
    ones), so a failed seed does not become the next seed's starting state (nor the later modules')."""
    from blocks.rotation_state import load_rotation_state
    from flows.deploy import deploy_helix

    if load_rotation_state(rig["desc"]).in_progress():
        print(f"{why}: a rotation is in progress; a rotation (not a seed) finishes it")
        rotate(rig)
    running = {c.labels.get("helix-ops.service") for c in rig["driver"].containers() if c.status == "running"}
    if set(APPS) <= running:
        return
    print(f"{why}: {sorted(set(APPS) - running)} not running; deploy-helix brings them back")
    a = rig["args"]
    deploy_helix(env="local", descriptor=a["descriptor"], engine_url=a["engine_url"],
                 container_labels=a["container_labels"])


def rotate(rig) -> dict:
    from flows.rotate import rotate_helix_secrets

    return rotate_helix_secrets(**rig["args"])


def values(rig) -> dict:
    s = current(rig)
    return {"redis": s.redis_password, "neo4j": s.neo4j_password, "nextauth": s.nextauth_secret}


def running_consumers_settle(rig) -> list[str]:
    """The blocks' current logins are accepted; every running consumer replica is healthy (waiting up to
    :data:`SETTLE_S` for one just created); returns the consumers that run no replica."""
    from drivers.neo4j_users import can_login
    from drivers.redis_acl import RedisAcl

    s = current(rig)
    redis, bolt = endpoints(rig)
    for host, port in redis:
        assert RedisAcl(host, port).can_login(s.redis_password), f"redis {port} refuses the block's password"
    assert can_login(bolt, s.neo4j_user, s.neo4j_password), f"neo4j refuses the block's login ({s.neo4j_user})"
    rows = settled_health(rig["target"], rig["desc"], APPS, SETTLE_S)
    return [r["service"] for r in rows if not r["replicas"]]


@pytest.fixture(scope="module")
def rotation_points(rig):
    """An ordinary rotation of :data:`CREDENTIALS`, recording its boundaries."""
    before = values(rig)
    with pytest.MonkeyPatch.context() as mp:
        rec = Boundaries(mp, fine=True)
        result = rotate(rig)
    assert result["resumed"] == [] and sorted(result["rotated"]) == sorted(CREDENTIALS), result
    assert_working(rig)
    assert all(v.get_secret_value() != before[c].get_secret_value() for c, v in values(rig).items()
               if c in CREDENTIALS)
    print(f"rotate-helix-secrets goes through {len(rec.points)} boundaries: {' '.join(rec.points)}")
    assert len(rec.points) >= 20
    return rec.points


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", seeds([1]), ids=lambda s: f"seed={s}")
def test_rotation_killed_at_a_random_boundary(rig, rotation_points, seed, tmp_path):
    point = pick(seed, rotation_points, canonical=True)
    print(f"seed {seed}: rotate-helix-secrets killed at {point} (replay: {SEEDS_ENV}={seed} or {POINT_ENV}={point})")
    killed_then_resumed(rig, point, f"seed {seed}", tmp_path)


@pytest.mark.timeout(900)
def test_rotation_killed_while_the_single_writer_is_stopped(rig, rotation_points, tmp_path):
    """The point a seed found: mcp-graph (stop-first) stopped, its new replica not yet created. Before the fix the
    writer stayed stopped even after the next run completed (the roll restarted only running services)."""
    point = "after:engine.stop#1"
    assert point in rotation_points, "the consumer roll no longer stops mcp-graph first: update this test"
    killed_then_resumed(rig, point, "the stopped writer", tmp_path)


def killed_then_resumed(rig, point: str, seed: str, tmp_path) -> None:
    """Kill a rotation at ``point``, then check the invariants of the module doc (``seed`` names the case)."""
    from blocks.rotation_state import load_rotation_state
    from drivers.neo4j_users import can_login
    from drivers.redis_acl import RedisAcl

    repaired(rig, f"before {seed} (an earlier case failed)")
    before = values(rig)

    rc, out = run_killed("rotate-helix-secrets", point, rig["args"], tmp_path / "killed.log", fine=True)
    assert rc == -signal.SIGKILL and f"killed at {point}" in out, f"{seed} ({point}): rc {rc}\n{out[-3000:]}"
    state = load_rotation_state(rig["desc"])
    absent = running_consumers_settle(rig)
    print(f"{seed}: after the kill, rotation in progress: {state.in_progress()} "
          f"({', '.join(f'{c}:{state.step(c)}' for c in state.in_progress())}); consumers not running: {absent}")

    result = rotate(rig)  # the next run completes on its own
    assert sorted(result["rotated"]) == sorted(CREDENTIALS) or result["resumed"], (seed, point, result)
    s = assert_working(rig)  # every consumer runs and is healthy, the .env matches the blocks
    redis, bolt = endpoints(rig)
    for credential, value in values(rig).items():  # the state after: rotated, and only what was asked
        changed = value.get_secret_value() != before[credential].get_secret_value()
        assert changed == (credential in CREDENTIALS), (seed, point, credential, changed)
    if "redis" in CREDENTIALS:
        for host, port in redis:
            assert not RedisAcl(host, port).can_login(before["redis"]), (seed, point, "the old redis password works")
    assert s.neo4j_user == "neo4j" and s.neo4j_alternate_user is None, (seed, point, s.neo4j_user)
    if "neo4j" in CREDENTIALS:
        assert not can_login(bolt, "neo4j", before["neo4j"]), (seed, point, "the old neo4j password works")
    assert not can_login(bolt, rotation.DEFAULT_BRIDGE_USER, "x")
    state = load_rotation_state(rig["desc"])
    assert state.in_progress() == [] and state.rotation_id is None and state.roll_id is None, (seed, point)
    no_records_left()
    lease_free()
