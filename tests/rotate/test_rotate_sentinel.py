"""rotate-helix-secrets on Redis in Sentinel mode, on the real engine: three Redis servers (``redis`` the
initial primary, ``redis-2``, ``redis-3`` replicas) and three Sentinels (quorum 2), deployed from a
``services.redis.mode: sentinel`` descriptor with the same task deploy-helix uses (``tasks.engine.apply_service``).

The Sentinels' Compose spec names their network as a mapping with the shared alias ``redis-sentinel``; the
engine driver takes that form (``drivers.engine.container_plans``; it read ``networks[0]`` and failed with
``KeyError: 0`` until this test showed it).

Only the data tier is deployed: the test bed's app image (``testbed/probe``) checks Redis with a raw
``AUTH <REDIS_PASSWORD>`` + ``PING`` against ``REDIS_HOST``, which in Sentinel mode is ``redis-sentinel``; the
Sentinels require no password, so they answer ``-ERR AUTH <password> called without any password
configured`` and every app replica would be unhealthy. The rotation's consumer roll skips services that do
not run, so the roll here is exactly the Sentinel-mode part: the replicas and the Sentinels re-created.

After the rotation: every Sentinel sees the master usable (no ``s_down``/``o_down``), the two other
Sentinels and two replicas whose link is ``ok``; every replica says ``master_link_status:up``; the old
password is refused and the new one accepted everywhere; a replica and a Sentinel *restarted* afterwards
(their config is rebuilt from the container's environment at start) still sync / still see the master.
"""

from __future__ import annotations

import time

import pytest
import yaml

from tests.rotate.conftest import own_blocks

pytestmark = pytest.mark.bed

REDIS_MEMBERS = ("redis", "redis-2", "redis-3")
SENTINELS = ("redis-sentinel", "redis-sentinel-2", "redis-sentinel-3")


@pytest.fixture(scope="module")
def sentinel_env(bed, engine, images, prefect_harness, tmp_path_factory):
    from blocks.provision import bootstrap
    from drivers.engine import EngineDriver
    from helix_ops.descriptor import load_descriptor
    from helix_ops.plan import compose_objects, template_hash
    from helix_ops.render.compose import render_compose
    from helix_ops.stack import build_stack
    from tasks.engine import EngineTarget, ProbeSpec, apply_network, apply_service, apply_volume
    from testbed.helix import local_descriptor

    run = bed.run_id.split("-")[-1]
    project = f"rs{run}"
    folder = tmp_path_factory.mktemp("sentinel-env")
    path = local_descriptor(folder / "local.yaml", project)
    data = yaml.safe_load(path.read_text())
    data["services"]["redis"]["mode"] = "sentinel"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    own_blocks(path, f"rs{run}")
    desc = load_descriptor(path)
    bootstrap(desc, {})
    stack = build_stack(desc)
    target = EngineTarget(engine.base_url, desc.project, desc.environment, bed.container_labels())
    objs = {o.identity: o for o in compose_objects(render_compose(stack))}
    try:
        for identity, obj in objs.items():
            kind, name = identity.split("/", 1)
            if kind == "network":
                apply_network(target, name, obj.spec, obj.spec_hash)
            elif kind == "volume" and name.split("_")[0] in REDIS_MEMBERS:
                apply_volume(target, name, obj.spec_hash)
        t0 = time.monotonic()
        for name in (*REDIS_MEMBERS, *SENTINELS):
            svc = stack.service("redis" if name in REDIS_MEMBERS else "redis-sentinel")
            spec = objs[f"service/{name}"].spec
            apply_service(target, name, spec, template_hash(spec), ProbeSpec(svc.probe.kind, svc.probe.port),
                          desc, health_deadline_s=120)
        print(f"sentinel data tier deployed in {time.monotonic() - t0:.1f}s")
        driver = EngineDriver.connect(engine.base_url, project, "local")
        yield {"path": path, "desc": desc, "project": project, "driver": driver, "target": target,
               "env_file": folder / ".env", "master": desc.services.redis.sentinel.master_name}
    finally:
        EngineDriver.connect(engine.base_url, project, "local").remove_project()


def running(driver, service):
    return [c for c in driver.containers(service) if c.status == "running"]


def address(driver, service, port):
    [c] = running(driver, service)
    return driver.probe_address(c, port)


def sentinel_views(env):
    from drivers.redis_acl import SentinelAuth

    out = {}
    for name in SENTINELS:
        s = SentinelAuth(*address(env["driver"], name, 26379), env["master"])
        out[name] = (s.master_state(), s.replicas_state(), s.problems())
    return out


def replication(env, name, password):
    import redis

    host, port = address(env["driver"], name, 6379)
    with redis.Redis(host=host, port=port, password=password.get_secret_value(), socket_timeout=3) as r:
        return r.info("replication")


def wait_for(what, check, deadline_s=60):
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        try:
            last = check()
            if last is True:
                return
        except Exception as exc:  # noqa: BLE001 - reported at the deadline
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(1)
    pytest.fail(f"{what} within {deadline_s}s; last seen: {last}")


def healthy_tier(env, password):
    """Every Sentinel sees the master usable, 2 other Sentinels, 2 replicas with link ok; every replica's link
    is up."""
    def check():
        for name, (master, replicas, problems) in sentinel_views(env).items():
            if problems or master["num-other-sentinels"] != "2" or master["num-slaves"] != "2":
                return f"{name}: {problems} others={master['num-other-sentinels']} slaves={master['num-slaves']}"
            if len([r for r in replicas if r.get("master-link-status") == "ok"]) != 2:
                return f"{name}: replicas {replicas}"
        links = {}
        for name in REDIS_MEMBERS:
            info = replication(env, name, password)
            if info["role"] == "slave":
                links[name] = info["master_link_status"]
        if sorted(links.values()) != ["up", "up"]:
            return f"replica links {links}"
        return True
    return check


def test_sentinel_mode_rotation_switches_auth_pass_and_masterauth(sentinel_env, engine, bed, capfd):
    from blocks.secrets import load_environment_secrets
    from drivers.redis_acl import RedisAcl
    from flows.rotate import rotate_helix_secrets

    env = sentinel_env
    driver = env["driver"]
    old = load_environment_secrets(env["desc"]).redis_password
    wait_for("the Sentinel-mode tier to be healthy before the rotation", healthy_tier(env, old), 90)
    before = {c.name for c in driver.containers()}

    t0 = time.monotonic()
    result = rotate_helix_secrets(env="local", descriptor=str(env["path"]), engine_url=engine.base_url,
                                  credentials=["redis"], env_file=str(env["env_file"]),
                                  container_labels=bed.container_labels())
    took = time.monotonic() - t0
    with capfd.disabled():
        print(f"\nsentinel-mode redis rotation (flow run, 5 containers re-created) took {took:.1f}s")
    assert result["rotated"] == ["redis"]
    assert "redis:auth-set" in result["steps"] and "redis:retired" in result["steps"]
    [roll] = result["rolls"]
    new = load_environment_secrets(env["desc"]).redis_password
    assert new.get_secret_value() != old.get_secret_value()

    # the roll re-created the replicas of the moment and every Sentinel, not the primary
    apps = ("dashboard", "mcp-graph", "mcp-discovery", "mcp-derivation", "mcp-cascade", "mcp-verification")
    tier = [s for s in roll["services"] if s not in apps]  # the apps are not deployed here: skipped by the roll
    replicas = tier[:2]
    assert tier == [*replicas, *SENTINELS] and set(replicas) == {"redis-2", "redis-3"}, roll
    after = {c.name for c in driver.containers()}
    for name in (*replicas, *SENTINELS):
        [c] = running(driver, name)
        assert c.name not in before and c.name in after, name
    [primary] = running(driver, "redis")
    assert primary.name in before

    for name in REDIS_MEMBERS:
        acl = RedisAcl(*address(driver, name, 6379))
        assert acl.can_login(new) and not acl.can_login(old), name
    # past down-after-milliseconds (5 s): a Sentinel still logging in with the old password would mark it down
    time.sleep(7)
    wait_for("every Sentinel to see the master and the replicas usable after the rotation",
             healthy_tier(env, new), 60)

    # a replica and a Sentinel restarted later rebuild their config from their environment: it holds the new
    # password (re-created by the roll), so the replica syncs and the Sentinel still sees the master usable
    [replica] = running(driver, replicas[0])
    [sentinel] = running(driver, SENTINELS[0])
    client = engine.client()
    try:
        client.containers.get(replica.id).restart(timeout=5)
        client.containers.get(sentinel.id).restart(timeout=5)
    finally:
        client.close()
    wait_for(f"{replicas[0]} to sync again after a restart",
             lambda: replication(env, replicas[0], new)["master_link_status"] == "up" or "down", 60)
    time.sleep(7)
    wait_for("the tier to be healthy after the restarts", healthy_tier(env, new), 60)

    out = capfd.readouterr()
    text = out.out + out.err + repr(result)
    assert new.get_secret_value() not in text and old.get_secret_value() not in text
