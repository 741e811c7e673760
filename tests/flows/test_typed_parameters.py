"""The flows' typed parameters (flows/params.py; issue 21 part 3).

No server: each flow's parameter schema (what the Prefect UI renders and the API enforces) carries the choices,
bounds and patterns, taken from the core's one definition; prefect.yaml's parameters validate against it.

With the test bed's Prefect server: deployments of prefect.yaml registered with ``prefect deploy`` refuse a bad
parameter at ``prefect deployment run``, before a flow run exists, and accept a good one; a run created from a
deployment gets its ``flow_run_name`` template.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from typing import get_args

import httpx
import pytest
import yaml
from prefect.utilities.schema_tools import validate

from flows.audit import audit_helix
from flows.backup import backup_helix
from flows.deploy import deploy_helix
from flows.init_db import init_helix_db
from flows.params import (AppService, Component, Credential, Neo4jStrategy, ServiceName, descriptor_environment,
                          format_run_name)
from flows.provision import provision_helix
from flows.restore import restore_helix
from flows.retention import prune_helix_backups
from flows.rotate import rotate_helix_secrets
from flows.upgrade import scale_helix, upgrade_helix
from flows.verify_backup import verify_helix_backup
from helix_ops import guide
from helix_ops.descriptor import IMAGE_REF_PATTERN
from helix_ops.backup import BACKUP_ID_PATTERN, validate_backup_id
from helix_ops.descriptor import ENV_NAME_PATTERN, MAX_APP_REPLICAS
from helix_ops.errors import ConfigError
from helix_ops.rotation import CREDENTIALS
from testbed.paths import REPO

FLOWS = {f.name: f for f in (deploy_helix, upgrade_helix, scale_helix, backup_helix, restore_helix,
                             verify_helix_backup, prune_helix_backups, rotate_helix_secrets, provision_helix,
                             audit_helix, init_helix_db)}
GOOD_ID = "prod-20250102T020000Z-a1b2c3"


def props(flow) -> dict:
    return flow.parameters.model_dump()["properties"]


def one_of(prop: dict) -> dict:
    """The non-null branch of an optional parameter's schema."""
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    assert len(branches) == 1, prop
    return branches[0]


def valid(flow, params: dict) -> bool:
    return not validate(params, flow.parameters.model_dump(), ignore_required=True, allow_none_with_default=True)


# --- no server: the schemas -----------------------------------------------------------------------------------

def test_the_literals_are_the_cores_lists():
    assert get_args(ServiceName) == guide.SERVICE_NAMES
    assert get_args(AppService) == guide.APP_SERVICES
    assert get_args(Credential) == CREDENTIALS
    assert get_args(Component) == ("neo4j", "redis")
    assert get_args(Neo4jStrategy) == ("auto", "logical", "dump")


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_env_carries_the_environment_name_pattern(name):
    env = one_of(props(FLOWS[name])["env"])
    assert env["type"] == "string" and env["pattern"] == ENV_NAME_PATTERN
    assert valid(FLOWS[name], {"env": "local"}) and valid(FLOWS[name], {"env": "t-1a2b"})
    assert not valid(FLOWS[name], {"env": "Prod"}) and not valid(FLOWS[name], {"env": "../x"})


def test_scale_offers_the_app_services_and_bounds_replicas():
    p = props(scale_helix)
    assert p["service"]["enum"] == list(guide.APP_SERVICES)
    assert (p["replicas"]["type"], p["replicas"]["minimum"], p["replicas"]["maximum"]) == ("integer", 1, MAX_APP_REPLICAS)
    assert scale_helix.parameters.required == ["service", "replicas"]
    assert valid(scale_helix, {"service": "mcp-discovery", "replicas": 3})
    for bad in ({"service": "mcp-nope", "replicas": 3}, {"service": "neo4j", "replicas": 1},
                {"service": "dashboard", "replicas": 0}, {"service": "dashboard", "replicas": 10000}):
        assert not valid(scale_helix, bad), bad


def test_upgrade_images_are_keyed_by_service():
    images = one_of(props(upgrade_helix)["images"])
    assert images["type"] == "object" and images["propertyNames"]["enum"] == list(guide.SERVICE_NAMES)
    assert images["additionalProperties"]["pattern"] == IMAGE_REF_PATTERN
    assert valid(upgrade_helix, {"images": {"dashboard": "1.4.2", "mcp-cascade": "registry:5000/cascade:1.5"}})
    assert not valid(upgrade_helix, {"images": {"dashbord": "1.4.2"}})
    assert not valid(upgrade_helix, {"images": {"dashboard": ""}})
    for bad in ("1.4 .2", "latest; rm -rf /", "../x", "x:", ":1", "Ghcr.io/X:1"):  # the descriptor's own patterns
        assert not valid(upgrade_helix, {"images": {"dashboard": bad}}), bad


@pytest.mark.parametrize("flow", [restore_helix, verify_helix_backup], ids=lambda f: f.name)
def test_backup_ids_carry_the_cores_pattern(flow):
    bid = one_of(props(flow)["backup_id"])
    assert bid["pattern"] == BACKUP_ID_PATTERN
    assert valid(flow, {"backup_id": GOOD_ID}) and valid(flow, {"backup_id": None})
    for bad in ("prod-2025-01-02", "../prod-20250102T020000Z-a1b2c3", "Prod-20250102T020000Z-a1b2c3",
                "prod-20250102T020000Z-a1b2c3x", "prod-20250102T020000Z-A1B2C3"):
        assert not valid(flow, {"backup_id": bad}), bad


@pytest.mark.parametrize("bid", [GOOD_ID, "a-20250102T020000Z-000000", "prod-eu-1-20251231T235959Z-ffffff",
                                 "prod-20250102T020000Z", "-20250102T020000Z-a1b2c3", "prod-20250102T020000Z-a1b2c",
                                 "prod-20251302T020000Z-a1b2c3", "prod-20250102T020000Z-a1b2c3\n", "x" * 41 + "-a"])
def test_the_pattern_agrees_with_validate_backup_id(bid):
    """The pattern is the shape; validate_backup_id (still run by the flows) also checks the time and the newline."""
    try:
        validate_backup_id(bid)
    except ConfigError:
        checked = False
    else:
        checked = True
    shaped = re.fullmatch(BACKUP_ID_PATTERN, bid) is not None
    assert shaped >= checked  # the pattern never refuses an id the core accepts
    if bid in ("prod-20251302T020000Z-a1b2c3",):
        assert shaped and not checked  # an impossible month: the flow's own check refuses it


def test_choices_of_backup_restore_and_rotation():
    assert one_of(props(backup_helix)["neo4j_strategy"])["enum"] == ["auto", "logical", "dump"]
    for flow in (backup_helix, restore_helix):
        assert one_of(props(flow)["components"])["items"]["enum"] == ["neo4j", "redis"]
    assert props(restore_helix)["neo4j_load"]["enum"] == ["import", "transactional"]
    assert one_of(props(rotate_helix_secrets)["credentials"])["items"]["enum"] == list(CREDENTIALS)
    assert props(rotate_helix_secrets)["roll_parallelism"]["minimum"] == 1
    for field in ("daily", "weekly", "monthly"):
        assert one_of(props(prune_helix_backups)[field])["minimum"] == 0
    assert not valid(backup_helix, {"neo4j_strategy": "rsync"})
    assert not valid(backup_helix, {"components": ["neo4j", "postgres"]})
    assert not valid(rotate_helix_secrets, {"credentials": ["anthropic"]})
    assert valid(rotate_helix_secrets, {"credentials": ["redis", "neo4j"]})


def test_prefect_yaml_parameters_validate_against_the_schemas():
    doc = yaml.safe_load((REPO / "prefect.yaml").read_text())
    for dep in doc["deployments"]:
        flow = FLOWS[next(f.name for f in FLOWS.values() if dep["entrypoint"].endswith(":" + f.fn.__name__))]
        runs = [dep.get("parameters") or {}]
        runs += [{**runs[0], **(s.get("parameters") or {})} for s in dep.get("schedules") or []]
        for params in runs:
            assert valid(flow, params), (dep["entrypoint"], dep["name"], params)


@pytest.mark.parametrize(("flow", "template"), [
    (deploy_helix, "deploy-{env}"), (scale_helix, "scale-{env}-{service}-{replicas}"),
    (restore_helix, "restore-{env}-{backup_id}"), (backup_helix, "backup-{env}-{components}"),
    (upgrade_helix, "upgrade-{env}-{images}"), (prune_helix_backups, "prune-{env}"),
], ids=lambda x: getattr(x, "name", x))
def test_runs_are_named_after_what_they_do(flow, template):
    assert flow.flow_run_name.__name__ == f"run_name({template!r})"


def test_a_run_given_a_descriptor_is_named_after_the_environment_that_file_names(tmp_path):
    # upgrade-helix/staging run with another environment's descriptor acts on that environment: its name says so
    desc = tmp_path / "node.yaml"
    staging = yaml.safe_load((REPO / "deployments" / "staging.yaml").read_text())
    desc.write_text(yaml.safe_dump({**staging, "environment": "n-4f2a"}, sort_keys=False))
    (tmp_path / "helix.config.yaml").write_text((REPO / "deployments" / "helix.config.yaml").read_text())
    params = {"env": "staging", "descriptor": str(desc), "images": {"dashboard": "v2"}}
    assert format_run_name("upgrade-{env}-{images}", {"images": "descriptor-tags"}, params) == \
        "upgrade-n-4f2a-dashboard=v2"
    assert format_run_name("deploy-{env}", {}, {"env": "staging"}) == "deploy-staging"
    # what it cannot read leaves the deployment's env, and never waits: a missing file, a directory, a FIFO
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for odd in (tmp_path / "missing.yaml", tmp_path, fifo, "\x00"):
        assert format_run_name("deploy-{env}", {}, {"env": "staging", "descriptor": str(odd)}) == "deploy-staging"
    assert descriptor_environment(desc) == "n-4f2a"
    (tmp_path / "no-env.yaml").write_text("target: engine\n")
    assert descriptor_environment(tmp_path / "no-env.yaml") is None


# --- with the Prefect server: refused before a flow run exists -----------------------------------------------

@pytest.fixture(scope="module")
def registered(prefect_server):
    """local's scale-helix, restore-helix and prune-helix-backups deployments on the session's Prefect server."""
    from tests.prefect_worker import BIN, client_env, sh

    env = client_env(prefect_server)
    sh([str(BIN / "prefect"), "work-pool", "create", "helix-ops", "--type", "process", "--overwrite"], env)
    names = ["scale-helix/local", "restore-helix/local", "prune-helix-backups/local"]
    sh([str(BIN / "prefect"), "--no-prompt", "deploy", *[a for n in names for a in ("--name", n)]], env)
    return env


def _api(env, method: str, path: str, **kw):
    r = httpx.request(method, f"{env['PREFECT_API_URL']}{path}", timeout=30, **kw)
    r.raise_for_status()
    return r.json() if r.content else None


def _deployment_id(env, name: str) -> str:
    return _api(env, "GET", f"/deployments/name/{name}")["id"]


def _runs_of(env, deployment_id: str) -> list[dict]:
    return _api(env, "POST", "/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}})


def _run(env, name: str, *params: str, start_in: str | None = None) -> subprocess.CompletedProcess:
    from tests.prefect_worker import BIN

    argv = [str(BIN / "prefect"), "deployment", "run", name, *[a for p in params for a in ("-p", p)]]
    if start_in:
        argv += ["--start-in", start_in]
    return subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("name", "params", "named"), [
    ("scale-helix/local", ["service=mcp-nope", "replicas=3"], "service"),
    ("scale-helix/local", ["service=mcp-discovery", "replicas=0"], "replicas"),
    ("scale-helix/local", ["service=mcp-discovery", "replicas=10000"], "replicas"),
    ("restore-helix/local", ["backup_id=../../etc-20250102T020000Z-a1b2c3"], "backup_id"),
    ("restore-helix/local", ["backup_id=local-20250102"], "backup_id"),
    ("prune-helix-backups/local", ["env=Local"], "env"),
])
def test_a_bad_parameter_is_refused_before_a_run_exists(registered, name, params, named):
    dep = _deployment_id(registered, name)
    before = {r["id"] for r in _runs_of(registered, dep)}
    out = _run(registered, name, *params)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert re.search(rf"Validation failed for field '{named}'|'{named}'", text), text
    assert {r["id"] for r in _runs_of(registered, dep)} == before

    # the API itself refuses it, whatever the client
    body = {"parameters": dict(p.split("=", 1) for p in params)}
    if "replicas" in body["parameters"]:
        body["parameters"]["replicas"] = int(body["parameters"]["replicas"])
    r = httpx.post(f"{registered['PREFECT_API_URL']}/deployments/{dep}/create_flow_run", json=body, timeout=30)
    assert r.status_code == 409 and named in r.text, r.text
    assert {r["id"] for r in _runs_of(registered, dep)} == before


def test_a_good_parameter_is_accepted(registered):
    dep = _deployment_id(registered, "scale-helix/local")
    before = {r["id"] for r in _runs_of(registered, dep)}
    # scheduled two hours ahead: no worker picks it up; deleted below
    out = _run(registered, "scale-helix/local", "service=mcp-discovery", "replicas=3", start_in="2 hours")
    assert out.returncode == 0, out.stdout + out.stderr
    new = [r for r in _runs_of(registered, dep) if r["id"] not in before]
    assert len(new) == 1 and new[0]["parameters"] == {"env": "local", "service": "mcp-discovery", "replicas": 3}
    assert new[0]["state_type"] == "SCHEDULED"
    _api(registered, "DELETE", f"/flow_runs/{new[0]['id']}")


def test_a_run_from_a_deployment_gets_its_templated_name(registered, tmp_path):
    """prune-helix-backups/local (a dry run over an empty store: no container engine) executed in this process's
    child with ``prefect flow-run execute``, as a worker would: the run is renamed ``prune-local``."""
    from tests.prefect_worker import BIN, sh

    store = tmp_path / f"store-{uuid.uuid4().hex[:6]}"
    store.mkdir()
    out = _run(registered, "prune-helix-backups/local", f"storage_path={store}")
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", out.stdout).group(1)
    sh([str(BIN / "prefect"), "flow-run", "execute", run_id], registered)
    run = _api(registered, "GET", f"/flow_runs/{run_id}")
    assert (run["state_type"], run["name"]) == ("COMPLETED", "prune-local")
