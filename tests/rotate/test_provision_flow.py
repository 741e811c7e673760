"""provision-helix: pre-flight on a fresh project then deploy-helix gives a healthy stack (the shared
``helix_env``); each failing check stops the flow before it changes anything and names its fix."""

from __future__ import annotations

import os
import socket
import stat

import pytest
import yaml

from helix_ops import preflight
from helix_ops.descriptor import load_descriptor
from testbed.helix import local_descriptor
from testbed.paths import REPO

# --- pure ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine,version,api,status", [
    ("Docker Engine - Community", "24.0.7", "1.43", "pass"),
    ("Docker Engine - Community", "23.0.6", "1.42", "fail"),
    ("Podman Engine", "4.3.1", "1.41", "pass"),
    ("Podman Engine", "4.2.0", "1.41", "fail"),
    ("Podman Engine", "5.0.0", "1.41", "pass"),
])
def test_engine_versions(engine, version, api, status):
    check = preflight.check_engine(engine, version, api)
    assert check.status == status
    if status == "fail":
        assert "upgrade" in check.fix
    if engine.startswith("Podman") and status == "pass":
        assert "API 1.41" in check.detail and "accepted" in check.detail


def test_versions_compare_numerically():
    assert preflight.at_least(preflight.version_tuple("v1.28.0+k3s1"), (1, 28))
    assert not preflight.at_least(preflight.version_tuple("1.9.11"), (1, 28))
    assert preflight.check_compose("2.19.1").status == "fail" and preflight.check_compose("v2.24.6").status == "pass"
    d = load_descriptor(REPO / "deployments" / "prod.yaml")
    assert preflight.check_kubernetes("v1.27.3", d).status == "fail"
    assert preflight.check_kubernetes(None, d).status == "pass"


def test_volumes_of_another_owner_fail():
    checks = preflight.check_volumes("p", ["neo4j_data", "redis_data"],
                                     [preflight.VolumeFact("p_neo4j_data", "other"), preflight.VolumeFact("p_redis_data", "p")])
    assert [c.status for c in checks] == ["fail", "pass"] and "choose another `project`" in checks[0].fix


# --- on the engine --------------------------------------------------------------------------------------------



@pytest.mark.bed
def test_provision_then_deploy_is_healthy(helix_env, docker_client):
    provisioned, deployed = helix_env["provisioned"], helix_env["deployed"]
    assert provisioned["failed"] == []
    names = {c["name"] for c in provisioned["checks"]}
    assert {"engine reachable", "engine version", "memory"} <= names
    assert any(a.startswith("network") and a.endswith("created") for a in provisioned["actions"])
    assert any(a.startswith("volume") and a.endswith("created") for a in provisioned["actions"])
    assert sum("created" in a and "generated" in a for a in provisioned["actions"]) >= 3  # secrets generated
    assert stat.S_IMODE(os.stat(helix_env["env_file"]).st_mode) == 0o600
    assert deployed["unhealthy"] == [] and len(deployed["status"]) == 9
    # deploy-helix found the provisioned networks and volumes as they should be: no-ops
    plan = {c["identity"]: c["action"] for c in deployed["plan"]["changes"]}
    assert all(a == "noop" for i, a in plan.items() if i.startswith(("network/", "volume/")))


def _fresh(tmp_path, bed, **edit):
    path = local_descriptor(tmp_path / "local.yaml", f"pf{bed.run_id.split('-')[-1]}")
    data = yaml.safe_load(path.read_text())
    for key, value in edit.items():
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, data


@pytest.mark.bed
def test_a_taken_host_port_fails_with_its_fix(bed, engine, prefect_harness, tmp_path, docker_client):
    from flows.provision import PreflightFailed, provision_helix

    path, data = _fresh(tmp_path, bed)
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", data["services"]["nginx"]["host_port"]))
        holder.listen()
        with pytest.raises(PreflightFailed) as err:
            provision_helix(env="local", descriptor=str(path), engine_url=engine.base_url)
    [check] = err.value.checks
    assert check.name == f"host port {data['services']['nginx']['host_port']}"
    assert "a process on this machine" in check.detail and "services.nginx.host_port" in check.fix
    assert not docker_client.networks.list(filters={"label": f"helix-ops.project={data['project']}"})


@pytest.mark.bed
def test_an_absurd_memory_requirement_fails_with_its_fix(bed, engine, prefect_harness, tmp_path):
    from flows.provision import PreflightFailed, provision_helix

    huge = {"requests": {"memory": "4000Gi", "cpu": "2"}, "limits": {"memory": "4000Gi", "cpu": "2"}}
    path, _ = _fresh(tmp_path, bed, **{"services.neo4j.resources": huge})
    with pytest.raises(PreflightFailed) as err:
        provision_helix(env="local", descriptor=str(path), engine_url=engine.base_url)
    [check] = err.value.checks
    assert check.name == "memory" and "neo4j 4000.0Gi" in check.detail
    assert "lower services.<name>.resources.requests" in check.fix


@pytest.mark.bed
def test_an_unreachable_engine_fails_with_its_fix(bed, prefect_harness, tmp_path):
    from flows.provision import PreflightFailed, provision_helix

    path, _ = _fresh(tmp_path, bed)
    with pytest.raises(PreflightFailed) as err:
        provision_helix(env="local", descriptor=str(path), engine_url=f"unix://{tmp_path}/no-engine.sock")
    [check] = err.value.checks
    assert check.name == "engine reachable" and "not reachable" in check.detail
    assert "podman system service" in check.fix and "engine_url" in check.fix
