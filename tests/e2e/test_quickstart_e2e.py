"""The quickstart, end to end, the way a new operator uses it (issue 24, part 3): ``make quickstart``'s command
(``python -m testbed.quickstart``) deploys Helix and serves the Prefect UI; an upgrade is then started by hand
from the command line (``prefect deployment run upgrade-helix/local``: its replicas carry no test-bed label);
``make down``'s command (``python -m testbed down``) removes the quickstart's environment whole, and nothing of
its project is left on the engine, nor anything listening on its ports.

The quickstart runs in a test-bed home of its own (``HELIX_TESTBED_HOME``), so ``down`` sees only its run (and
not this pytest session's bed), with the UI on a free port (``HELIX_UI_PORT``). Helix itself answers on the
port ``deployments/local.yaml`` names (8080), as the README promises: the test needs that port free.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import httpx
import pytest
import yaml

from testbed import procs
from testbed.paths import REPO

pytestmark = pytest.mark.bed

LOCAL = yaml.safe_load((REPO / "deployments" / "local.yaml").read_text())
PROJECT, HOST_PORT = LOCAL["project"], LOCAL["services"]["nginx"]["host_port"]
BIN = REPO / ".venv" / "bin"


def _leftovers(client) -> dict[str, list[str]]:
    f = {"label": f"helix-ops.project={PROJECT}"}
    return {"containers": sorted(c.name for c in client.containers.list(all=True, filters=f)),
            "networks": sorted(n.name for n in client.networks.list(filters=f)),
            "volumes": sorted(v.name for v in client.volumes.list(filters=f))}


def _dashboard_version(port: int) -> str:
    """What the load balancer's dashboard replica says at / (the probe's ``<service> <version>``)."""
    r = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
    r.raise_for_status()
    return r.text.strip()


@pytest.fixture
def home():
    """A short test-bed home: the Podman socket's path under it must fit a unix socket's 107 bytes (pytest's
    tmp_path is too deep)."""
    path = tempfile.mkdtemp(prefix="helix-qs-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_quickstart_upgrade_by_hand_then_down_leaves_nothing(engine, images, home):
    if procs.port_open(HOST_PORT):
        pytest.fail(f"port {HOST_PORT} (services.nginx.host_port of deployments/local.yaml) is taken: the "
                    "quickstart needs it; `make down` stops an earlier quickstart", pytrace=False)
    ui_port = procs.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DOCKER_HOST"))}
    env.update(HELIX_TESTBED_HOME=home, HELIX_UI_PORT=str(ui_port))
    client = engine.client()
    try:
        quick = subprocess.run([sys.executable, "-m", "testbed.quickstart"], cwd=REPO, env=env, text=True,
                               capture_output=True, timeout=1500)
        print(quick.stdout[-4000:], quick.stderr[-4000:])
        assert quick.returncode == 0, quick.stderr[-2000:]
        api = re.search(r"Prefect API: (\S+)", quick.stdout).group(1)
        assert f"Prefect UI: http://127.0.0.1:{ui_port}" in quick.stdout
        assert httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=10).status_code == 200  # the UI's page
        before = _dashboard_version(HOST_PORT)

        # an upgrade started by hand, as the README shows it (no test-bed labels on what it creates)
        run_env = {**env, "PREFECT_API_URL": api}
        params = json.dumps({"images": {"dashboard": "localhost/helix-probe:v2"}, "backup_first": False})
        up = subprocess.run([str(BIN / "prefect"), "deployment", "run", "upgrade-helix/local", "--params", params,
                             "--watch", "--watch-timeout", "900"], cwd=REPO, env=run_env, text=True,
                            capture_output=True, timeout=1000)
        print(up.stdout[-3000:], up.stderr[-3000:])
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        assert "Completed" in up.stdout
        after = _dashboard_version(HOST_PORT)
        assert before.startswith("dashboard ") and after == "dashboard v2" != before, (before, after)
        unlabelled = [c.name for c in client.containers.list(filters={"label": f"helix-ops.project={PROJECT}"})
                      if "dev.helix-ops.testbed" not in (c.labels or {})]
        assert unlabelled, "the upgrade by hand created replicas without the bed's labels"
        assert _leftovers(client)["containers"]

        down = subprocess.run([sys.executable, "-m", "testbed", "down"], cwd=REPO, env=env, text=True,
                              capture_output=True, timeout=300)
        print(down.stdout, down.stderr)
        assert down.returncode == 0, down.stderr
        assert f"removed project {PROJECT}" in down.stdout
        assert _leftovers(client) == {"containers": [], "networks": [], "volumes": []}
        assert not procs.port_open(HOST_PORT) and not procs.port_open(ui_port)
    finally:
        subprocess.run([sys.executable, "-m", "testbed", "down"], cwd=REPO, env=env, capture_output=True,
                       timeout=300)
        client.close()
