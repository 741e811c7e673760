"""`make down` (``python -m testbed down``) removes the quickstart's Helix environment whole (issue 24, part 3),
on the real container engine: the containers the quickstart's deploy created (with the bed's labels), those a
flow started by hand created (``prefect deployment run upgrade-helix/local``: no bed label), their networks and
volumes, and it says what it removed. It spares a live pytest session's bed (its objects of the same project
included) and other projects, and works when the quickstart's Podman service is gone (its containers outlive
it).

The quickstart's run is the one ``testbed.quickstart`` makes (``Bed.create(owner_pid=1)``, the project recorded
with ``Bed.record_project``, the engine in ``state.json``), in a test-bed home of its own
(``HELIX_TESTBED_HOME``), so ``down`` sees no other run of this machine; the objects are created through the
driver the flows use (``drivers.engine.EngineDriver``), with a project name of this test's own.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.engine import EngineDriver, container_plans
from testbed.engine import TESTBED_LABEL

pytestmark = pytest.mark.bed

REPO = Path(__file__).resolve().parents[2]


def _make_run(home: Path, run_id: str, owner: int, engine: dict | None, projects: list[dict] | None) -> Path:
    run = home / "runs" / run_id
    run.mkdir(parents=True, mode=0o700)
    (run / "owner.json").write_text(json.dumps({"pid": owner}))
    if engine is not None:
        (run / "state.json").write_text(json.dumps({"run_id": run_id, "engine": engine}))
    if projects is not None:
        (run / "projects.json").write_text(json.dumps(projects))
    return run


def _service(driver: EngineDriver, name: str, image: str, replicas: int = 1) -> list[str]:
    """One service of the project, the way deploy-helix / upgrade-helix create it: its network and volume,
    then its replicas (running)."""
    h = secrets.token_hex(8)
    driver.ensure_network("default", {}, h)
    driver.ensure_volume(f"{name}-data", h)
    spec = {"image": image, "environment": {"PORT": "3000"}, "deploy": {"replicas": replicas},
            "volumes": [f"{name}-data:/data"]}
    return [driver.create_container(p, {}).name
            for p in container_plans(driver.project, driver.environment, name, spec, h, {}, None,
                                     driver.extra_labels)]


def _down(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    env["HELIX_TESTBED_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "testbed", "down", *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=180)


def _names(client, label: str) -> dict[str, list[str]]:
    f = {"label": label}
    return {"containers": sorted(c.name for c in client.containers.list(all=True, filters=f)),
            "networks": sorted(n.name for n in client.networks.list(filters=f)),
            "volumes": sorted(v.name for v in client.volumes.list(filters=f))}


@pytest.mark.parametrize("engine_alive", [True, False], ids=["engine-up", "podman-service-gone"])
def test_down_removes_the_quickstarts_project_whoever_started_it_and_spares_live_sessions(
        engine, images, tmp_path, engine_alive):
    if not engine_alive and engine.kind != "podman":
        pytest.skip("a Docker engine does not go away with the quickstart")
    home = tmp_path / "testbed-home"
    project = "qs" + secrets.token_hex(4)
    other = "qo" + secrets.token_hex(4)
    quick_id = f"20250101-000000-{os.getpid() + 1}"  # its creator (the quickstart command) has exited
    live_id = f"20250101-000001-{os.getpid()}"  # a pytest session that still runs: this one
    recorded_engine = ({"kind": engine.kind, "base_url": engine.base_url} if engine_alive
                       else {"kind": "podman", "base_url": f"unix://{tmp_path}/gone/podman.sock"})
    quick = _make_run(home, quick_id, 1, recorded_engine, [{"project": project, "environment": "local"}])
    _make_run(home, live_id, os.getpid(), None, None)
    image = images["probe-v1"]
    bed_labels = {TESTBED_LABEL: "1", f"{TESTBED_LABEL}.owner": quick_id}

    client = engine.client()
    made: list[str] = []
    try:
        # the quickstart's deploy (with the bed's labels), an upgrade started by hand (none), a live pytest
        # session's objects of the same project, and another project nobody recorded
        deployed = _service(EngineDriver.connect(engine.base_url, project, "local", bed_labels), "dashboard", image)
        by_hand = _service(EngineDriver.connect(engine.base_url, project, "local"), "mcp-graph", image, replicas=2)
        live_driver = EngineDriver.connect(engine.base_url, project, "local",
                                           {TESTBED_LABEL: "1", f"{TESTBED_LABEL}.owner": live_id})
        h = secrets.token_hex(8)
        live_driver.client.volumes.create(f"{project}_live-data", labels=live_driver._labels(h, "volume"))
        spared = [live_driver.create_container(p, {}).name for p in container_plans(
            project, "local", "live", {"image": image, "environment": {"PORT": "3000"}}, h, {}, None,
            live_driver.extra_labels)]
        untouched = _service(EngineDriver.connect(engine.base_url, other, "local"), "dashboard", image)
        made = deployed + by_hand + spared + untouched
        before = _names(client, f"helix-ops.project={project}")
        assert len(before["containers"]) == 4 and before["networks"] == [f"{project}_default"]
        assert sorted(before["volumes"]) == sorted([f"{project}_dashboard-data", f"{project}_mcp-graph-data",
                                                    f"{project}_live-data"])
        assert all(client.containers.get(n).status == "running" for n in deployed + by_hand)

        out = _down(home)
        print(out.stdout, out.stderr)
        assert out.returncode == 0, out.stderr

        after = _names(client, f"helix-ops.project={project}")
        # the network stays while the live session's container uses it
        assert after == {"containers": spared, "networks": [f"{project}_default"],
                         "volumes": [f"{project}_live-data"]}, after
        assert _names(client, f"helix-ops.project={other}")["containers"] == untouched
        # it says what it removed
        said = [line for line in out.stdout.splitlines() if line.startswith(f"removed project {project}")]
        assert len(said) == 1, out.stdout
        for name in deployed + by_hand + [f"{project}_dashboard-data"]:
            assert name in said[0]
        assert "3 containers" in said[0] and "0 networks" in said[0] and "2 volumes" in said[0]
        assert f"left run {live_id} alone" in out.stdout
        assert not quick.exists() and (home / "runs" / live_id).exists()

        # `down --all` takes the live session's too
        _make_run(home, quick_id, 1, recorded_engine, [{"project": project, "environment": "local"}])
        out = _down(home, "--all")
        assert out.returncode == 0, out.stderr
        assert _names(client, f"helix-ops.project={project}") == {"containers": [], "networks": [], "volumes": []}
        assert _names(client, f"helix-ops.project={other}")["containers"] == untouched
    finally:
        for name in made:
            try:
                client.containers.get(name).remove(force=True, v=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        for p in (project, other):
            for net in client.networks.list(filters={"label": f"helix-ops.project={p}"}):
                net.remove()
            for vol in client.volumes.list(filters={"label": f"helix-ops.project={p}"}):
                vol.remove(force=True)
        client.close()
