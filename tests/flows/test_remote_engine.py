"""An engine reached over ``tcp://`` is not this machine's loopback: the bed's Podman also serves its API on
``tcp://127.0.0.2:<port>`` (the same containers and images), and a deploy and a backup through that address
publish the probe ports on 127.0.0.2 and reach every service there (the target's endpoints come from the
engine's address, never a hard-coded 127.0.0.1)."""

from __future__ import annotations

import shutil
import socket

import pytest

from testbed import procs

pytestmark = [pytest.mark.bed, pytest.mark.timeout(900)]

REMOTE = "127.0.0.2"


def _free_port_on(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tcp_engine(bed, engine, tmp_path_factory):
    from testbed.engine import _answers

    if engine.kind != "podman":
        pytest.fail("this test serves the bed's Podman on tcp://; the bed found a Docker engine instead")
    url = f"tcp://{REMOTE}:{_free_port_on(REMOTE)}"
    home = tmp_path_factory.mktemp("tcp-engine")
    proc = procs.start("podman-tcp", [shutil.which("podman"), "system", "service", "--time=0", url], home,
                       env=engine.env())
    try:
        procs.wait_until(f"podman API on {url}", lambda: _answers(url), 60)
        yield url
    finally:
        proc.stop()


def test_deploy_and_backup_through_a_tcp_engine_use_its_address(bed, images, tcp_engine, prefect_harness,
                                                                 tmp_path):
    from blocks.bootstrap import main as bootstrap
    from drivers.engine import EngineDriver
    from drivers.storage import LocalStore
    from flows.backup import backup_helix
    from flows.deploy import deploy_helix
    from testbed.helix import local_descriptor

    project = f"tcp{bed.run_id.split('-')[-1]}"
    path = local_descriptor(tmp_path / "local.yaml", project)
    assert bootstrap(["--descriptor", str(path)]) == 0
    try:
        result = deploy_helix(env="local", descriptor=str(path), engine_url=tcp_engine,
                              container_labels=bed.container_labels())
        assert result["unhealthy"] == []
        # every probe endpoint the flow used and reports is on the engine's address
        assert {r["endpoint"].rsplit(":", 1)[0] for r in result["status"]} == {REMOTE}
        driver = EngineDriver.connect(tcp_engine, project, "local")
        published = {b["HostIp"] for c in driver.containers() for k, bs in
                     (c.attrs["NetworkSettings"].get("Ports") or {}).items() for b in bs or []
                     if int(b["HostPort"]) != result_nginx_port(path)}
        assert published == {REMOTE}, published
        backup = backup_helix(env="local", descriptor=str(path), engine_url=tcp_engine,
                              storage_path=str(tmp_path / "backups"))
        manifest = LocalStore(tmp_path / "backups").read_manifest(backup["backup_id"])
        assert manifest.verified and manifest.neo4j.writer_paused and manifest.redis is not None
    finally:
        EngineDriver.connect(tcp_engine, project, "local").remove_project()


def result_nginx_port(path) -> int:
    import yaml

    return int(yaml.safe_load(path.read_text())["services"]["nginx"]["host_port"])


def test_a_docker_host_block_names_the_engine(prefect_harness):
    """``docker_host_block`` (a prefect-docker DockerHost block, as the UI creates it) gives the engine's
    address; a block that does not exist is one error naming it, before anything is touched."""
    import secrets

    from prefect_docker.host import DockerHost

    from drivers.target import Connection
    from helix_ops.descriptor import load_descriptor
    from helix_ops.errors import ConfigError
    from tasks.target import target_for
    from testbed.paths import REPO

    name = f"engine-{secrets.token_hex(3)}"
    DockerHost(base_url=f"tcp://{REMOTE}:2375").save(name)
    desc = load_descriptor(REPO / "deployments" / "local.yaml")
    target = target_for(desc, Connection(engine_url="unix:///ignored.sock", docker_host_block=name))
    assert target.base_url == f"tcp://{REMOTE}:2375" and target.kind == "engine"
    with pytest.raises(ConfigError, match=r"docker_host_block: no DockerHost block named 'missing-engine'"):
        target_for(desc, Connection(docker_host_block="missing-engine"))
