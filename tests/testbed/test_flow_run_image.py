"""The flow-run image of the Kubernetes work pool (``deployments/k8s-work-pool.json``'s image), built offline by
the test bed (``testbed/images.py``: ``FlowRunImageSpec``, ``assemble_flow_run``) and run on the bed's engine
the way the pool's pod runs it: its own non-root user, a read-only root filesystem with /tmp writable, every
capability dropped, no privilege escalation.

The image is on demand (a few hundred MB, ~1 min to build): only this module's fixture asks for it, and it is
rebuilt only when its inputs' hash changes."""

from __future__ import annotations

import json

import pytest

from testbed.images import FLOW_RUN_HOME, FLOW_RUN_UID, HASH_LABEL, TAGS, ensure_images, specs
from testbed.paths import REPO

pytestmark = pytest.mark.bed


@pytest.fixture(scope="module")
def flow_run_image(bed, engine) -> str:
    client = engine.client(timeout=900)
    try:
        return ensure_images(client, only=["flow-run"], log=bed.log)["flow-run"]
    finally:
        client.close()


def run(docker_client, image: str, command: list[str], bed, **kw) -> str:
    """Output of a container like the pool's pod: read-only root, tmpfs /tmp, no capabilities."""
    out = docker_client.containers.run(
        image, command, remove=True, stdout=True, stderr=True, labels=bed.container_labels(),
        read_only=True, tmpfs={"/tmp": "rw,mode=1777"}, cap_drop=["ALL"], security_opt=["no-new-privileges"], **kw)
    return out.decode()


def test_the_work_pool_template_names_the_image_the_bed_builds():
    template = json.loads((REPO / "deployments" / "k8s-work-pool.json").read_text())
    props = template["variables"]["properties"]
    assert props["image"]["default"] == TAGS["flow-run"]
    assert props["env"]["default"]["HELIX_OPS_HOME"] == FLOW_RUN_HOME
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsUser"] == pod["runAsGroup"] == FLOW_RUN_UID


def test_the_image_runs_the_flows_imports_as_its_non_root_user(flow_run_image, docker_client, bed):
    import prefect

    config = docker_client.images.get(flow_run_image).attrs["Config"]
    assert config["User"] == f"{FLOW_RUN_UID}:{FLOW_RUN_UID}"
    assert config["WorkingDir"] == FLOW_RUN_HOME
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["HELIX_OPS_HOME"] == FLOW_RUN_HOME
    assert not [k for k in env if any(w in k.upper() for w in ("PASSWORD", "SECRET", "TOKEN", "KEY", "API_URL"))]

    script = ("import os, flows.backup, flows.deploy, tasks.kube, drivers.kube; import prefect; "
              "print(os.getuid(), os.getgid(), os.getcwd(), os.environ['HELIX_OPS_HOME'], prefect.__version__, "
              "flows.deploy.__file__)")
    out = run(docker_client, flow_run_image, ["python", "-c", script], bed).split()
    assert out == [str(FLOW_RUN_UID), str(FLOW_RUN_UID), FLOW_RUN_HOME, FLOW_RUN_HOME, prefect.__version__,
                   f"{FLOW_RUN_HOME}/flows/deploy.py"]
    assert run(docker_client, flow_run_image, ["prefect", "--version"], bed).strip() == prefect.__version__


def test_the_pull_step_of_prefect_yaml_finds_the_project_at_helix_ops_home(flow_run_image, docker_client, bed,
                                                                          prefect_server):
    """What a flow run does first: prefect.yaml's pull step, ``set_working_directory`` to $HELIX_OPS_HOME,
    resolved from the image's environment (the steps runner asks the Prefect API for block references, so the
    container reaches the bed's server, as a pod reaches PREFECT_API_URL), then the entrypoint's flow loaded."""
    script = """
import os, yaml
from prefect.deployments.steps.core import run_steps
from prefect.flows import load_flow_from_entrypoint
os.chdir("/")
steps = yaml.safe_load(open(os.environ["HELIX_OPS_HOME"] + "/prefect.yaml"))["pull"]
import asyncio
asyncio.run(run_steps(steps))
print(os.getcwd(), load_flow_from_entrypoint("flows/deploy.py:deploy_helix").name)
"""
    out = run(docker_client, flow_run_image, ["python", "-c", script], bed, network_mode="host",
              environment={"PREFECT_API_URL": prefect_server.api_url}).split()
    assert out[-2:] == [FLOW_RUN_HOME, "deploy-helix"]


def test_helix_ops_validate_runs_in_the_image(flow_run_image, docker_client, bed):
    out = run(docker_client, flow_run_image, ["helix-ops", "validate", "--env", "staging"], bed)
    assert "staging" in out, out


def test_the_image_is_cached_by_its_inputs(flow_run_image, docker_client, bed):
    said: list[str] = []
    assert ensure_images(docker_client, only=["flow-run"], log=said.append) == {"flow-run": flow_run_image}
    assert said == []
    spec = next(s for s in specs() if s.key == "flow-run")
    assert docker_client.images.get(flow_run_image).labels[HASH_LABEL] == spec.input_hash()
    assert spec.on_demand and "flow-run" not in [s.key for s in specs() if not s.on_demand]
