"""Randomized crash tests of backup-helix and restore-helix (issue 24, part 4), on the session's deployed local
stack (``helix_stack``: real engine, Neo4j, Redis, Prefect's test harness); the machinery (seeds, the
boundaries, the killable flow process) is ``tests/crash_points.py``'s, shared with upgrade-helix's and
rotate-helix-secrets' randomized crash tests.

The chosen crash points are tested elsewhere (mid-export, mid-swap, each rotation step). Here the point is
drawn: an ordinary run of the flow records the task boundaries it goes through (``before:<task>#n`` and
``after:<task>#n``, in order); for each seed, ``random.Random(seed)`` picks one, and a flow process (a
subprocess, as a worker runs it) SIGKILLs itself exactly there. Then the invariants:

* no backup without a manifest is listed, and every listed backup (a safety backup of the killed run
  included) verifies deeply;
* the next run of the same flow completes, on its own (the killed run's lease and writer pause are recovered);
* the writers the killed run stopped run again (and answer their health probe), no writer-pause record and no
  lease-holder record are left;
* the data equals the state before (backup) or the backup's state (the restore, after the next run);
* everything the runs wrote into the local store is owner-only (files 0600, folders 0700: part 2's mode
  check on what real backup-helix / restore-helix runs write, orphans of killed runs included).

Each seed prints ``seed N: killed at <point>``; a failing seed is named in the test id
(``test_backup_killed_at_a_random_task_boundary[seed=N]``) and replays with ``HELIX_CRASH_SEEDS=N``.
Default: seeds 1 and 2 for backup-helix, 1 for restore-helix, whose restores load Neo4j transactionally
(:data:`NEO4J_LOAD`), within CI's budget for them (about 2 min on the bed, with the ordinary runs that record
the boundaries).
``HELIX_CRASH_SEEDS=20`` runs seeds 1..20 per flow; ``HELIX_CRASH_SEEDS=3,17`` runs those seeds.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import stat
import time
from pathlib import Path

import pytest

from drivers.storage import LocalStore
from tests.crash_points import SEEDS_ENV, Boundaries, run_killed, seeds

pytestmark = pytest.mark.bed

WRITER = "mcp-graph"
# The restores load Neo4j transactionally: the import path (Neo4j stopped for a swap) takes about a minute a
# run on the bed, over CI's budget for these tests; its window has its own chosen-point crash tests (mid-swap).
# HELIX_CRASH_NEO4J_LOAD=import draws the points of that path instead.
NEO4J_LOAD = os.environ.get("HELIX_CRASH_NEO4J_LOAD", "transactional")


# --- the stack's data, writers and records ------------------------------------------------------------------


def _endpoint(deployed, service: str) -> tuple[str, int]:
    row = [r for r in deployed["result"]["status"] if r["service"] == service][0]
    host, port = row["endpoint"].rsplit(":", 1)
    return host, int(port)


def _clients(deployed):
    import neo4j
    import redis

    from blocks.secrets import load_environment_secrets
    from helix_ops.descriptor import load_descriptor

    s = load_environment_secrets(load_descriptor(deployed["path"]))
    nhost, nport = _endpoint(deployed, "neo4j")
    drv = neo4j.GraphDatabase.driver(f"bolt://{nhost}:{nport}",
                                     auth=(s.neo4j_user, s.neo4j_password.get_secret_value()))
    rhost, rport = _endpoint(deployed, "redis")
    user = s.redis_username if s.redis_username not in ("", "default") else None
    r = redis.Redis(host=rhost, port=rport, username=user, password=s.redis_password.get_secret_value())
    return drv, r


def _canon(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def fingerprint(deployed) -> dict[str, object]:
    """What the stack holds: Neo4j's nodes (labels, properties) and relationships (type, properties, the
    endpoints' labels and properties), Redis's keys with their values and whether they expire; as counts and a
    digest (element ids change in a restore, so they are left out)."""
    drv, r = _clients(deployed)
    with drv, r:
        nodes = sorted(_canon([sorted(rec["l"]), rec["p"]]) for rec in drv.execute_query(
            "MATCH (n) RETURN labels(n) AS l, properties(n) AS p").records)
        rels = sorted(_canon([rec["t"], rec["p"], sorted(rec["al"]), rec["ap"], sorted(rec["bl"]), rec["bp"]])
                      for rec in drv.execute_query(
                          "MATCH (a)-[x]->(b) RETURN type(x) AS t, properties(x) AS p, labels(a) AS al, "
                          "properties(a) AS ap, labels(b) AS bl, properties(b) AS bp").records)
        keys = []
        for key in sorted(r.scan_iter(count=1000)):
            kind = r.type(key).decode()
            value = {"string": lambda k: r.get(k), "hash": lambda k: sorted(r.hgetall(k).items()),
                     "list": lambda k: r.lrange(k, 0, -1), "set": lambda k: sorted(r.smembers(k)),
                     "zset": lambda k: r.zrange(k, 0, -1, withscores=True)}.get(kind, lambda k: "?")(key)
            keys.append(_canon([key, kind, value, r.ttl(key) > 0]))
    digest = hashlib.sha256("\n".join(nodes + ["--"] + rels + ["--"] + keys).encode()).hexdigest()
    return {"nodes": len(nodes), "relationships": len(rels), "keys": len(keys), "digest": digest[:16]}


def change_data(deployed, tag: str) -> None:
    """Changes a restore must undo: a node and a relationship more, a key changed, a key more."""
    drv, r = _clients(deployed)
    with drv, r:
        drv.execute_query("CREATE (:CrashChange {tag: $t})-[:CHANGED]->(:CrashChange {tag: $t + '-b'})", t=tag)
        r.set("crash-probe:0", f"changed-{tag}")
        r.set(f"crash-change:{tag}", "goes away")


def writers(engine, deployed) -> dict[str, str]:
    from drivers.engine import EngineDriver

    d = EngineDriver.connect(engine.base_url, deployed["project"], "local")
    out = {}
    for c in d.containers(WRITER):
        c.reload()
        out[c.name] = c.status
    return out


def writers_healthy(engine, deployed) -> None:
    from drivers.engine import EngineDriver
    from drivers.engine_health import http_check
    from helix_ops.descriptor import load_descriptor
    from helix_ops.stack import build_stack

    probe = build_stack(load_descriptor(deployed["path"])).service(WRITER).probe
    d = EngineDriver.connect(engine.base_url, deployed["project"], "local")
    replicas = d.containers(WRITER)
    assert replicas, "no mcp-graph container"
    for c in replicas:
        assert c.status == "running", f"{c.name} is {c.status}"
        host, port = d.probe_address(c, probe.port)
        assert http_check(host, port, probe.path or "/")().startswith("HTTP 200")


def no_records_left() -> None:
    from prefect.variables import Variable

    from flows.lease import holder_variable
    from tasks.writer_pause import read_pause

    assert read_pause("local") is None, "the writer-pause record was left"
    assert Variable.get(holder_variable("local"), default=None) is None, "the lease-holder record was left"


def not_owner_only(root: Path) -> list[str]:
    bad = []
    for p in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        want = 0o700 if p.is_dir() else 0o600
        if mode != want:
            bad.append(f"{p.relative_to(root.parent)}: {mode:04o}")
    return bad


def listed_backups_hold(store: LocalStore) -> list[str]:
    """Every listed backup verifies deeply (no manifest, no listing); returns their ids."""
    ids = [m.backup_id for m in store.list()]
    for bid in ids:
        store.verify(bid, deep=True)
    assert not set(store.orphans()) & set(ids)
    return ids


# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rig(helix_stack, engine, tmp_path_factory):
    """The stack, a store root the store creates itself (so its modes are the store's), the flows' arguments."""
    root = tmp_path_factory.mktemp("random-crash") / "var" / "backups"
    args = {"env": "local", "descriptor": str(helix_stack["path"]), "engine_url": engine.base_url,
            "storage_path": str(root)}
    return {"deployed": dict(helix_stack), "root": root, "store": LocalStore(root), "args": args,
            "restore_args": {**args, "neo4j_load": NEO4J_LOAD}, "engine": engine}


@pytest.fixture(scope="module")
def backup_points(rig):
    """An ordinary backup-helix run (the backup the restores go back to), recording its task boundaries."""
    from flows.backup import backup_helix

    with pytest.MonkeyPatch.context() as mp:
        rec = Boundaries(mp)
        result = backup_helix(**rig["args"])
    rig["backup_id"] = result["backup_id"]
    rig["backup_state"] = fingerprint(rig["deployed"])
    print(f"backup-helix goes through {len(rec.points)} task boundaries: {' '.join(rec.points)}")
    assert len(rec.points) >= 8
    return rec.points


@pytest.fixture(scope="module")
def restore_points(rig, backup_points):
    """An ordinary restore-helix run of the module's backup (after a change), recording its task boundaries."""
    from flows.restore import restore_helix

    change_data(rig["deployed"], "recorded")
    assert fingerprint(rig["deployed"]) != rig["backup_state"]
    with pytest.MonkeyPatch.context() as mp:
        rec = Boundaries(mp)
        result = restore_helix(**rig["restore_args"], backup_id=rig["backup_id"])
    assert result["problems"] == []
    assert fingerprint(rig["deployed"]) == rig["backup_state"]
    print(f"restore-helix goes through {len(rec.points)} task boundaries: {' '.join(rec.points)}")
    return rec.points


# --- the tests ---------------------------------------------------------------------------------------------


def test_everything_a_backup_writes_is_owner_only(rig, backup_points):
    """Part 2's mode check on a real backup-helix run (caller's umask 022): the store root (created by the
    store), the backup's folder, its objects and its manifest."""
    root = rig["root"]
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert f"{rig['backup_id']}/manifest.json" in names and f"{rig['backup_id']}/neo4j.jsonl.zst" in names \
        and f"{rig['backup_id']}/redis.rdb.zst" in names, names
    assert not_owner_only(root) == []


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", seeds([1, 2]), ids=lambda s: f"seed={s}")
def test_backup_killed_at_a_random_task_boundary(rig, backup_points, seed, tmp_path):
    from flows.backup import backup_helix

    deployed, store, engine = rig["deployed"], rig["store"], rig["engine"]
    point = random.Random(seed).choice(backup_points)
    print(f"seed {seed}: backup-helix killed at {point} (replay: {SEEDS_ENV}={seed})")
    before = fingerprint(deployed)
    listed = listed_backups_hold(store)
    time.sleep(1.1)  # a distinct second in the next backup id

    rc, out = run_killed("backup-helix", point, rig["args"], tmp_path / "killed.log")
    assert rc == -signal.SIGKILL and f"killed at {point}" in out, f"seed {seed} ({point}): rc {rc}\n{out[-3000:]}"
    after_kill = listed_backups_hold(store)
    assert after_kill[:len(listed)] == listed and len(after_kill) <= len(listed) + 1, (seed, point, after_kill)

    time.sleep(1.1)
    result = backup_helix(**rig["args"])  # the next run completes on its own
    now = listed_backups_hold(store)
    assert now[-1] == result["backup_id"] and len(now) == len(after_kill) + 1
    assert result["writer_window"]["paused"]
    assert set(writers(engine, deployed).values()) == {"running"}
    writers_healthy(engine, deployed)
    no_records_left()
    assert fingerprint(deployed) == before, f"seed {seed} ({point}): a backup changed the data"
    assert not_owner_only(rig["root"]) == []


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", seeds([1]), ids=lambda s: f"seed={s}")
def test_restore_killed_at_a_random_task_boundary(rig, restore_points, seed, tmp_path):
    from flows.restore import restore_helix

    deployed, store, engine = rig["deployed"], rig["store"], rig["engine"]
    point = random.Random(seed).choice(restore_points)
    print(f"seed {seed}: restore-helix killed at {point} (replay: {SEEDS_ENV}={seed})")
    change_data(deployed, f"seed-{seed}")
    changed = fingerprint(deployed)
    assert changed != rig["backup_state"]
    args = {**rig["restore_args"], "backup_id": rig["backup_id"]}

    rc, out = run_killed("restore-helix", point, args, tmp_path / "killed.log")
    assert rc == -signal.SIGKILL and f"killed at {point}" in out, f"seed {seed} ({point}): rc {rc}\n{out[-3000:]}"
    listed_backups_hold(store)  # a safety backup the killed run finished is listed only complete

    result = restore_helix(**args)  # the next run completes on its own
    assert result["problems"] == [] and result["backup_id"] == rig["backup_id"]
    listed_backups_hold(store)
    assert set(writers(engine, deployed).values()) == {"running"}
    writers_healthy(engine, deployed)
    no_records_left()
    assert fingerprint(deployed) == rig["backup_state"], f"seed {seed} ({point}): not the backup's data"
    safety = store.read_manifest(result["safety_backup_id"])
    assert safety.safety_for == rig["backup_id"] and safety.verified
    assert not_owner_only(rig["root"]) == []
