"""The rendered Compose file comes up under a real Compose implementation: podman-compose against the bed's
Podman, with the local images. The probes' health proves the wiring: each logs in to Neo4j and Redis with the
credentials Compose passed from the 0600 `.env` file."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from testbed import procs
from testbed.helix import local_descriptor

pytestmark = pytest.mark.bed


def test_rendered_compose_file_comes_up_under_podman_compose(bed, engine, images, tmp_path):
    if engine.kind != "podman":
        pytest.skip("podman-compose needs the Podman engine (a Docker engine is in use)")
    from blocks.secrets import write_env_file
    from helix_ops.descriptor import load_descriptor
    from helix_ops.render.compose import env_file_keys, render_compose, validate_compose
    from helix_ops.render.nginx import render_nginx_conf
    from helix_ops.stack import build_stack

    project = f"pc{bed.run_id.split('-')[-1]}"
    path = local_descriptor(tmp_path / "local.yaml", project)
    stack = build_stack(load_descriptor(path))
    doc = render_compose(stack)
    validate_compose(doc)
    workdir = tmp_path / "compose"
    workdir.mkdir()
    (workdir / "docker-compose.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (workdir / "nginx.conf").write_text(render_nginx_conf(stack))
    env_file = write_env_file(workdir / ".env", {k: secrets.token_urlsafe(32) for k in env_file_keys(stack)})
    assert env_file.stat().st_mode & 0o777 == 0o600

    compose = [str(Path(sys.executable).parent / "podman-compose"), "-p", project, "-f",
               str(workdir / "docker-compose.yaml")]
    env = {**os.environ, **engine.env()}
    port = yaml.safe_load(path.read_text())["services"]["nginx"]["host_port"]
    try:
        up = subprocess.run([*compose, "up", "-d"], cwd=workdir, env=env, capture_output=True, text=True,
                            timeout=600)
        assert up.returncode == 0, up.stderr[-3000:]

        def healthy():
            r = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=3)
            return r.json() if r.status_code == 200 else None

        health = procs.wait_until("the dashboard through the load balancer", healthy, 240, interval_s=2)
        assert health["service"] == "dashboard"
        assert health["checks"]["neo4j"]["ok"] and health["checks"]["redis"]["ok"]
        ps = subprocess.run(["podman", "ps", "--filter", f"label=io.podman.compose.project={project}",
                             "--format", "{{.Names}}"], env=env, capture_output=True, text=True, timeout=60)
        names = ps.stdout.split()
        assert len([n for n in names if "dashboard" in n]) == 2  # two replicas, no container_name clash
        assert len(names) == 10
    finally:
        subprocess.run([*compose, "down", "-v", "-t", "5"], cwd=workdir, env=env, capture_output=True, timeout=300)
        shutil.rmtree(workdir, ignore_errors=True)
