"""upgrade-helix and scale-helix on the real engine, under a constant load through the load balancer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from flows.deploy import deploy_helix
from flows.upgrade import UpgradeRolledBack, scale_helix, upgrade_helix
from helix_ops.errors import ConfigError
from testbed.helix import HealthSampler, LoadLoop, container_ids, local_descriptor
from testbed.paths import REPO

pytestmark = pytest.mark.bed
STATELESS_MCP = {"mcp-discovery": 3102, "mcp-derivation": 3103, "mcp-cascade": 3104, "mcp-verification": 3105}
APP = ["dashboard", "mcp-graph", *STATELESS_MCP]


@pytest.fixture(scope="module")
def env(bed, engine, images, prefect_harness, tmp_path_factory):
    from blocks.bootstrap import main as bootstrap
    from drivers.engine import EngineDriver

    project = f"up{bed.run_id.split('-')[-1]}"
    workdir = tmp_path_factory.mktemp("upgrade")
    path = local_descriptor(workdir / "local.yaml", project, rate_limit_rps=1000)  # one client sends 50 rps
    data = yaml.safe_load(path.read_text())
    data["backup"]["storage"]["path"] = str(workdir / "backups")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert bootstrap(["--descriptor", str(path)]) == 0
    os.environ["HELIX_OPS_AUDIT_DIR"] = str(workdir / "audit")
    common = dict(env="local", descriptor=str(path), engine_url=engine.base_url, container_labels=bed.container_labels())
    result = deploy_helix(**common)
    assert result["unhealthy"] == []
    port = yaml.safe_load(path.read_text())["services"]["nginx"]["host_port"]
    yield {"common": common, "project": project, "url": f"http://127.0.0.1:{port}/", "workdir": workdir,
           "path": path}
    EngineDriver.connect(engine.base_url, project, "local").remove_project()


def images_now(docker_client, project):
    out = {}
    for c in docker_client.containers.list(filters={"label": f"helix-ops.project={project}"}):
        out.setdefault(c.labels["helix-ops.service"], set()).add(c.labels["helix-ops.image"].rsplit(":", 1)[1])
    return out


def test_rolling_upgrade_under_load_fails_no_request(env, docker_client):
    load = LoadLoop(env["url"], env["workdir"])
    sampler = HealthSampler(docker_client, env["project"], STATELESS_MCP)
    try:
        time.sleep(2)
        result = upgrade_helix(images={s: "v2" for s in APP}, backup_first=False, **env["common"])
    finally:
        health = sampler.stop()
        traffic = load.stop()
    assert result["result"] == "succeeded" and sorted(result["changed"]) == sorted(APP)
    assert traffic["sent"] > 100 and traffic["failed"] == 0, traffic
    assert health["samples"] > 20 and health["gaps"] == {s: 0 for s in STATELESS_MCP}, health
    now = images_now(docker_client, env["project"])
    assert all(now[s] == {"v2"} for s in APP), now
    graph = [r for r in result["reports"] if r["service"] == "mcp-graph"][0]
    assert graph["strategy"] == "stop-first" and graph["downtime_s"] > 0
    audit = (env["workdir"] / "audit" / "local.jsonl").read_text().splitlines()
    assert '"result": "succeeded"' in audit[-1] and '"action": "upgrade"' in audit[-1]


def test_a_failed_pre_upgrade_backup_upgrades_nothing(env, docker_client, tmp_path):
    before = container_ids(docker_client, env["project"])
    data = yaml.safe_load(env["path"].read_text())
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the backup folder should be")
    data["backup"]["storage"]["path"] = str(blocker / "backups")
    broken = tmp_path / "local.yaml"
    broken.write_text(yaml.safe_dump(data, sort_keys=False))
    common = {**env["common"], "descriptor": str(broken)}
    with pytest.raises(Exception) as failed:  # noqa: B017 - any failure, as long as it names the folder
        upgrade_helix(images={"dashboard": "v1"}, backup_first=True, **common)
    assert "not-a-folder" in str(failed.value) or "backups" in str(failed.value), failed.value
    assert container_ids(docker_client, env["project"]) == before


def test_second_upgrade_to_the_same_tags_is_a_noop(env, docker_client):
    before = container_ids(docker_client, env["project"])
    result = upgrade_helix(images={s: "v2" for s in APP}, backup_first=False, **env["common"])
    assert result["result"] == "noop" and result["changed"] == []
    assert container_ids(docker_client, env["project"]) == before


def test_an_image_that_never_gets_healthy_rolls_everything_back(env, docker_client):
    load = LoadLoop(env["url"], env["workdir"])
    try:
        time.sleep(1)
        with pytest.raises(UpgradeRolledBack, match="mcp-cascade"):
            upgrade_helix(images={"dashboard": "v1", "mcp-cascade": "broken"}, backup_first=True,
                          health_timeout_s=10, **env["common"])
    finally:
        traffic = load.stop()
    assert traffic["failed"] == 0, traffic
    now = images_now(docker_client, env["project"])
    assert now["dashboard"] == {"v2"} and now["mcp-cascade"] == {"v2"}, now
    assert '"result": "rolled-back"' in (env["workdir"] / "audit" / "local.jsonl").read_text().splitlines()[-1]
    manifests = list((env["workdir"] / "backups").rglob("manifest.json"))
    assert len(manifests) == 1  # the verified pre-upgrade backup was taken before anything changed


def test_scale_keeps_running_replicas_and_refuses_rule_breaks(env, docker_client):
    before = {n: v for n, v in container_ids(docker_client, env["project"]).items() if "-mcp-cascade-" in n}
    assert len(before) == 1
    result = scale_helix(service="mcp-cascade", replicas=2, **env["common"])
    assert result["result"] == "succeeded"
    after = {n: v for n, v in container_ids(docker_client, env["project"]).items() if "-mcp-cascade-" in n}
    assert len(after) == 2 and all(after[n] == v for n, v in before.items())  # the old replica kept running
    with pytest.raises(ConfigError, match="single writer"):
        scale_helix(service="mcp-graph", replicas=2, **env["common"])
    scale_helix(service="mcp-cascade", replicas=1, **env["common"])
    assert len([n for n in container_ids(docker_client, env["project"]) if "-mcp-cascade-" in n]) == 1


def test_a_killed_upgrade_is_finished_by_the_next_run(env, docker_client):
    from prefect.settings import PREFECT_API_URL

    script = (
        "import sys, json; from flows.upgrade import upgrade_helix;"
        "upgrade_helix(images={'dashboard': 'v1', 'mcp-discovery': 'v1', 'mcp-derivation': 'v1'},"
        " backup_first=False, lease_ttl_s=60, **json.loads(sys.argv[1]))"
    )
    import json

    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(env["common"])], cwd=REPO,
                            env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and "v1" not in images_now(docker_client, env["project"]).get("dashboard", set()):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-upgrade: a v1 dashboard replica exists, the rest is not done
    proc.wait()
    result = upgrade_helix(images={"dashboard": "v1", "mcp-discovery": "v1", "mcp-derivation": "v1"},
                           backup_first=False, break_stale_lease="test: the previous run was killed",
                           lease_wait_s=120, **env["common"])
    assert result["result"] == "succeeded"
    now = images_now(docker_client, env["project"])
    assert now["dashboard"] == {"v1"} and now["mcp-discovery"] == {"v1"} and now["mcp-derivation"] == {"v1"}
    names = container_ids(docker_client, env["project"])
    assert len([n for n in names if "-dashboard-" in n]) == 2  # no leftover replica of the killed run
    assert '"action": "break-lease"' in (env["workdir"] / "audit" / "local.jsonl").read_text()


def test_a_deploy_keeps_what_upgrades_changed_until_reset(env, docker_client):
    """The module's upgrades left mcp-graph, mcp-cascade and mcp-verification on v2 while the descriptor says v1:
    a deploy keeps them (a no-op, the overrides listed in its plan), a deploy with reset_overrides puts the
    descriptor's v1 back and forgets them."""
    from prefect.artifacts import Artifact
    from prefect.variables import Variable

    from helix_ops.descriptor import load_descriptor
    from helix_ops.overrides import variable_name

    before = images_now(docker_client, env["project"])
    assert before["mcp-graph"] == {"v2"} and before["mcp-cascade"] == {"v2"}, before
    name = variable_name(load_descriptor(env["path"]).project, "local")
    assert set(Variable.get(name)["images"]) == {"mcp-graph", "mcp-cascade", "mcp-verification"}

    kept = deploy_helix(**env["common"], run_init_db=False)
    assert kept["applied"] is False and kept["plan"]["counts"].get("update", 0) == 0
    assert images_now(docker_client, env["project"]) == before
    plan = str(Artifact.get("deploy-plan-local").data)
    assert "Overrides kept" in plan and "mcp-graph: image" in plan and "the descriptor says" in plan

    reset = deploy_helix(**env["common"], run_init_db=False, reset_overrides=True)
    assert reset["applied"] is True
    after = images_now(docker_client, env["project"])
    assert all(after[s] == {"v1"} for s in ("mcp-graph", "mcp-cascade", "mcp-verification")), after
    assert Variable.get(name, default=None) is None


def test_a_rerun_replaces_a_replica_of_its_roll_that_runs_but_is_not_healthy(env):
    """A killed roll can leave a replica of the new spec (its name, its hash) created but never health-gated.
    The rerun keeps such a replica only once it passes the gate: this one holds a wrong Redis password, so its
    health fails and the rerun replaces it with one that logs in."""
    import dataclasses

    import httpx

    from drivers.engine import EngineDriver, container_plans
    from helix_ops.descriptor import load_descriptor
    from helix_ops.plan import compose_objects, template_hash
    from helix_ops.render.compose import render_compose
    from helix_ops.stack import build_stack
    from tasks.engine import EngineTarget, ProbeSpec, apply_service, secret_env

    common = env["common"]
    desc = load_descriptor(env["path"])
    driver = EngineDriver.connect(common["engine_url"], env["project"], "local", common["container_labels"])
    stack = build_stack(desc)
    spec = {o.identity: o.spec for o in compose_objects(render_compose(stack))}["service/mcp-cascade"]
    svc, roll_id = stack.service("mcp-cascade"), "rtest0000001"
    secrets = secret_env(desc)
    [first, *_] = container_plans(env["project"], "local", "mcp-cascade", spec, template_hash(spec), {},
                                  svc.probe.port, driver.extra_labels, probe_host=driver.probe_host)
    name = f"{first.name}-{roll_id}"
    left = driver.create_container(dataclasses.replace(first, name=name), {**secrets, "REDIS_PASSWORD": "wrong"})
    left.reload()
    assert left.status == "running"

    report = apply_service(EngineTarget(common["engine_url"], env["project"], "local", common["container_labels"]),
                           "mcp-cascade", spec, template_hash(spec),
                           ProbeSpec(svc.probe.kind, svc.probe.port, svc.probe.path), desc,
                           health_deadline_s=20, roll_id=roll_id)
    assert name in report["started"] and name in report["stopped"] and report["kept"] == [], report
    [now] = [c for c in driver.containers("mcp-cascade") if c.name == name]
    assert now.id != left.id
    env_now = dict(e.split("=", 1) for e in now.attrs["Config"]["Env"])
    assert env_now["REDIS_PASSWORD"] == secrets["REDIS_PASSWORD"]
    r = httpx.get("http://%s:%d/api/health" % driver.probe_address(now, svc.probe.port), timeout=10)
    assert r.status_code == 200 and r.json()["checks"]["redis"]["ok"], r.text[:300]
