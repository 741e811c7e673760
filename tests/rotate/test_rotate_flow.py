"""rotate-helix-secrets on the deployed local stack: while a direct client loop (credentials re-read from the
blocks) and a loop over the probe services (whose /api/health logs in to Neo4j and Redis) run, every
credential rotates with zero authentication failures; then the old credentials are refused, a Redis
restart keeps the new password, and deploy-helix finds nothing to change."""

from __future__ import annotations

import os
import stat
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.bed

AUTH_WORDS = ("WRONGPASS", "NOAUTH", "unauthorized", "Unauthorized", "authentication failure", "AUTH rejected")


class Loops:
    """Background loops counting logins and authentication failures (other errors counted apart)."""

    def __init__(self, desc, engine_url, project):
        self.desc, self.engine_url, self.project = desc, engine_url, project
        self.stop = threading.Event()
        self.counts = {"direct_ok": 0, "direct_auth_fail": 0, "direct_other": 0,
                       "probe_ok": 0, "probe_auth_fail": 0, "probe_other": 0}
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._direct, daemon=True),
                        threading.Thread(target=self._probes, daemon=True)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def _endpoints(self, driver):
        out = {}
        for c in driver.containers():
            if c.status == "running" and c.labels.get("helix-ops.service") in ("redis", "neo4j"):
                port = 6379 if c.labels["helix-ops.service"] == "redis" else 7687
                out[c.labels["helix-ops.service"]] = driver.probe_address(c, port)
        return out

    def _direct(self):
        from blocks.secrets import load_environment_secrets
        from drivers.engine import EngineDriver
        from drivers.neo4j_users import can_login
        from drivers.redis_acl import RedisAcl

        driver = EngineDriver.connect(self.engine_url, self.project, "local")
        ep = self._endpoints(driver)
        while not self.stop.is_set():
            try:
                s = load_environment_secrets(self.desc)
                ok_r = RedisAcl(*ep["redis"]).can_login(s.redis_password)
                ok_n = can_login(f"bolt://{ep['neo4j'][0]}:{ep['neo4j'][1]}", s.neo4j_user, s.neo4j_password)
                if ok_r and ok_n:
                    self.counts["direct_ok"] += 1
                else:
                    self.counts["direct_auth_fail"] += 1
                    self.failures.append(f"direct: redis {ok_r} neo4j {ok_n} as {s.neo4j_user}")
            except Exception as exc:  # noqa: BLE001
                self.counts["direct_other"] += 1
                self.failures.append(f"direct other: {type(exc).__name__}")
            time.sleep(0.05)

    def _probes(self):
        from drivers.engine import EngineDriver

        driver = EngineDriver.connect(self.engine_url, self.project, "local")
        apps = ("dashboard", "mcp-graph", "mcp-discovery", "mcp-derivation", "mcp-cascade", "mcp-verification")
        while not self.stop.is_set():
            try:
                targets = []
                for c in driver.containers():
                    service = c.labels.get("helix-ops.service")
                    if c.status == "running" and service in apps:
                        port = int(c.attrs["Config"]["Env"] and next(
                            e.split("=", 1)[1] for e in c.attrs["Config"]["Env"] if e.startswith("PORT=")))
                        targets.append((c.name, driver.probe_address(c, port)))
            except Exception:  # noqa: BLE001 - a container vanished while listed
                continue
            for name, (host, port) in targets:
                try:
                    r = httpx.get(f"http://{host}:{port}/api/health", timeout=3)
                except httpx.HTTPError:
                    self.counts["probe_other"] += 1
                    continue
                if r.status_code == 200:
                    self.counts["probe_ok"] += 1
                elif any(w in r.text for w in AUTH_WORDS):
                    self.counts["probe_auth_fail"] += 1
                    self.failures.append(f"{name}: {r.text[:200]}")
                else:
                    self.counts["probe_other"] += 1
            time.sleep(0.1)


def test_rotation_under_load_has_no_auth_failures_and_sticks(helix_env, engine, bed, docker_client, capfd):
    from blocks.secrets import compose_env, load_environment_secrets, read_env_file
    from drivers.engine import EngineDriver
    from drivers.neo4j_users import can_login
    from drivers.redis_acl import RedisAcl
    from flows.deploy import deploy_helix
    from flows.rotate import rotate_helix_secrets
    from helix_ops.descriptor import load_descriptor

    desc = load_descriptor(helix_env["path"])
    before = load_environment_secrets(desc)
    with Loops(desc, engine.base_url, helix_env["project"]) as loops:
        time.sleep(1)
        result = rotate_helix_secrets(env="local", descriptor=str(helix_env["path"]), engine_url=engine.base_url,
                                      env_file=str(helix_env["env_file"]), container_labels=bed.container_labels())
        time.sleep(1)
    c = loops.counts
    assert c["direct_auth_fail"] == 0 and c["probe_auth_fail"] == 0, loops.failures[:5]
    assert c["direct_ok"] > 50 and c["probe_ok"] > 100, c
    assert result["rotated"] == ["redis", "nextauth", "neo4j"] and len(result["rolls"]) == 2
    assert result["resumed"] == [] and [r["completes"] for r in result["rolls"]] == [
        {"redis": "current", "neo4j": "bridge-current", "nextauth": "current"}, {"neo4j": "primary-current"}]

    after = load_environment_secrets(desc)
    driver = EngineDriver.connect(engine.base_url, helix_env["project"], "local")
    [redis_c] = [x for x in driver.containers("redis") if x.status == "running"]
    [neo_c] = [x for x in driver.containers("neo4j") if x.status == "running"]
    acl = RedisAcl(*driver.probe_address(redis_c, 6379))
    bolt = "bolt://%s:%d" % driver.probe_address(neo_c, 7687)
    assert acl.can_login(after.redis_password) and not acl.can_login(before.redis_password)
    assert after.neo4j_user == "neo4j" and can_login(bolt, "neo4j", after.neo4j_password)
    assert not can_login(bolt, "neo4j", before.neo4j_password)
    assert not can_login(bolt, "helix_rotation", "x")
    assert after.nextauth_secret.get_secret_value() != before.nextauth_secret.get_secret_value()
    assert stat.S_IMODE(os.stat(helix_env["env_file"]).st_mode) == 0o600
    assert dict(read_env_file(helix_env["env_file"])) == dict(compose_env(after))

    # a restart of Redis keeps the rotated password (the ACL file on the data volume)
    redis_c.restart(timeout=10)
    deadline = time.monotonic() + 60
    acl = None
    while time.monotonic() < deadline:
        try:
            acl = RedisAcl(*driver.probe_address(redis_c, 6379))
            if acl.can_login(after.redis_password):
                break
        except Exception:  # noqa: BLE001 - restarting
            pass
        time.sleep(0.5)
    assert acl is not None and acl.can_login(after.redis_password) and not acl.can_login(before.redis_password)

    # deploy-helix after the rotation: nothing to change, everything healthy with the new credentials
    again = deploy_helix(env="local", descriptor=str(helix_env["path"]), engine_url=engine.base_url,
                         container_labels=bed.container_labels())
    assert again["changed"] == [] and again["unhealthy"] == []

    out = capfd.readouterr()
    for secret in (before.redis_password, after.redis_password, after.neo4j_password, after.nextauth_secret,
                   before.neo4j_password):
        assert secret.get_secret_value() not in out.out + out.err + repr(result)
