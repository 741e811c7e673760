"""prefect.yaml against the descriptors and the flows: no server needed.

* the generated schedules (backup-helix, rotate-helix-secrets) agree with ``deployments/<env>.yaml``;
* every schedule is one the installed Prefect's ``prefect deploy`` accepts;
* every deployment names an environment with a descriptor, runs on that environment's work queue, its flow can
  run on that environment's target, and the flow accepts its parameters and its schedules' parameters.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from functools import cache
from pathlib import Path

import pytest
import yaml
from core_helpers import ROOT

from helix_ops.descriptor import load_descriptor
from helix_ops.schedules import (
    all_schedules,
    check_schedules,
    deployment_key,
    deployments_of,
    environment_of,
    marked_blocks,
    write_schedules,
)

PREFECT_YAML = ROOT / "prefect.yaml"
POOL = "helix-ops"
ENVIRONMENTS = ("local", "staging", "prod")

# How each flow reaches an environment, and so which targets it runs on. Each kind is checked against the
# flow's code below (its function and the functions of its module it calls), not taken on trust:
#   "target":   builds the environment's Target with tasks.target.target_for
#               (drivers/target.py: the engine and Kubernetes behind one interface);
#   "store":    reads and writes the backup store only and builds no Target (verify's scratch restore runs on
#               the worker's own container engine, not the environment's target);
#   "engine":   the container engine only.
REACH = {
    "deploy_helix": "target",
    "backup_helix": "target",
    "restore_helix": "target",
    "rotate_helix_secrets": "target",
    "audit_helix": "target",
    "init_helix_db": "target",
    "upgrade_helix": "target",
    "scale_helix": "target",
    "provision_helix": "target",
    "verify_helix_backup": "store",
    "prune_helix_backups": "store",
}
RUNS_ON = {"target": {"engine", "kubernetes"}, "store": {"engine", "kubernetes"}, "engine": {"engine"}}
BUILDS_TARGET = {"target_for", "open_environment"}
ENGINE_OR_KUBE_OBJECTS = BUILDS_TARGET | {"EngineTarget", "KubeTarget", "connect_engine", "connect_kube"}


@cache
def prefect_text() -> str:
    return PREFECT_YAML.read_text(encoding="utf-8")


@cache
def prefect_doc() -> dict:
    return yaml.safe_load(prefect_text())


def deployments() -> list[dict]:
    return prefect_doc()["deployments"]


@cache
def descriptor(env: str):
    return load_descriptor(ROOT / "deployments" / f"{env}.yaml")


def generated() -> dict:
    return all_schedules([descriptor(e) for e in sorted({environment_of(d) for d in deployments()})])


def flow_of(entrypoint: str):
    path, name = entrypoint.split(":")
    module = importlib.import_module(Path(path).with_suffix("").as_posix().replace("/", "."))
    return module, getattr(module, name)


# --- schedules: one source of truth ---------------------------------------------------------------------------

def test_generated_schedules_agree_with_the_descriptors():
    assert check_schedules(prefect_doc(), generated()) == []
    assert write_schedules(prefect_text(), generated()) == prefect_text(), \
        "prefect.yaml's generated blocks are stale: run `.venv/bin/helix-ops schedules --write`"


def test_prod_backups_follow_the_descriptor_per_component():
    prod = next(d for d in deployments() if deployment_key(d) == "backup-helix/prod")
    assert [(s["cron"], s["timezone"], s["parameters"]) for s in prod["schedules"]] == [
        ("0 2 * * *", "Europe/Berlin", {"components": ["neo4j"]}),
        ("15 * * * *", "Europe/Berlin", {"components": ["redis"]}),
    ]
    rotation = next(d for d in deployments() if deployment_key(d) == "rotate-helix-secrets/prod")
    assert [(s["cron"], s["timezone"]) for s in rotation["schedules"]] == [("0 3 1 * *", "UTC")]


def test_local_schedules_are_registered_inactive():
    local = [s for d in deployments() if environment_of(d) == "local" for s in d.get("schedules") or []]
    assert local and all(s["active"] is False for s in local)


def test_every_generated_deployment_is_marked_once():
    keys = [key for key, *_ in marked_blocks(prefect_text())]
    assert sorted(keys) == sorted(generated()) and len(set(keys)) == len(keys)


@pytest.mark.parametrize("dep", [d for d in deployments() if d.get("schedules")], ids=deployment_key)
def test_schedules_are_what_the_installed_prefect_deploy_accepts(dep):
    from prefect.cli.deploy._models import RawScheduleConfig
    # what `prefect deploy` turns a prefect.yaml schedule entry into (private, but it is the CLI's own path)
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    slugs = [s.get("slug") for s in dep["schedules"] if s.get("slug")]
    assert len(slugs) == len(set(slugs))
    for entry in dep["schedules"]:
        RawScheduleConfig.model_validate(entry)  # extra="forbid": a misspelt key fails here
        created = DeploymentScheduleCreate(**_schedule_config_to_deployment_schedule(entry))
        assert isinstance(created.schedule, CronSchedule)
        assert created.schedule.cron == entry["cron"] and created.schedule.timezone == entry["timezone"]
        assert created.parameters == entry.get("parameters", {})


def test_the_whole_file_validates_as_prefects_model():
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(prefect_doc())
    assert len(model.deployments) == len(deployments())


# --- deployments: environment, queue, target, parameters ------------------------------------------------------

def test_deployment_keys_are_unique_and_every_environment_has_the_same_kinds():
    keys = [deployment_key(d) for d in deployments()]
    assert len(keys) == len(set(keys))
    assert {environment_of(d) for d in deployments()} == set(ENVIRONMENTS)


@pytest.mark.parametrize("dep", deployments(), ids=deployment_key)
def test_deployment_names_an_environment_with_a_descriptor(dep):
    env = environment_of(dep)
    assert env, f"{deployment_key(dep)}: parameters.env names no environment"
    assert dep["name"] == env, f"{deployment_key(dep)}: deployments are named after their environment"
    assert (ROOT / "deployments" / f"{env}.yaml").is_file(), f"{deployment_key(dep)}: no deployments/{env}.yaml"
    assert descriptor(env).environment == env


@pytest.mark.parametrize("dep", deployments(), ids=deployment_key)
def test_deployment_runs_on_its_environments_work_queue(dep):
    assert dep["work_pool"] == {"name": POOL, "work_queue_name": environment_of(dep)}


@pytest.mark.parametrize("dep", deployments(), ids=deployment_key)
def test_deployment_flow_accepts_its_parameters_and_its_schedules(dep):
    _, fn = flow_of(dep["entrypoint"])
    assert fn.name == deployment_key(dep).split("/")[0], "the flow's name is its function's, with dashes"
    signature = inspect.signature(fn.fn)
    base = dep.get("parameters") or {}
    runs = [(base, signature.bind_partial)]  # a manual run may add the rest (scale-helix: -p service=...)
    # a scheduled run has nobody to add a required parameter: the schedule's must bind completely
    runs += [({**base, **(s.get("parameters") or {})}, signature.bind) for s in dep.get("schedules") or []]
    for params, bind in runs:
        unknown = set(params) - set(signature.parameters)
        assert not unknown, f"{deployment_key(dep)}: {fn.name} takes no {sorted(unknown)}"
        bind(**params)


@pytest.mark.parametrize("dep", [d for d in deployments() if d["entrypoint"].endswith(":backup_helix")], ids=deployment_key)
def test_backup_schedule_components_are_ones_backup_helix_accepts(dep):
    from flows.backup import requested_components

    for s in dep.get("schedules") or []:
        assert requested_components(s["parameters"]["components"]) == tuple(s["parameters"]["components"])


def _calls_reached(module, function: str) -> set[str]:
    """Names called by ``function`` and by the functions of its module it calls (transitively)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(module)))
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    seen, todo, calls = set(), [function], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        for node in ast.walk(defs[name]):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                calls.add(node.func.id)
                todo.append(node.func.id)
    return calls


@pytest.mark.parametrize("entrypoint", sorted({d["entrypoint"] for d in deployments()}))
def test_reach_table_is_what_the_flow_code_does(entrypoint):
    module, _ = flow_of(entrypoint)
    name = entrypoint.split(":")[1]
    assert name in REACH, f"{entrypoint}: add it to REACH (how it reaches an environment)"
    calls = _calls_reached(module, name)
    kind = REACH[name]
    if kind == "target":
        assert calls & BUILDS_TARGET, f"{entrypoint} builds no Target with target_for or open_environment"
    elif kind == "store":
        assert "open_store" in calls and not calls & ENGINE_OR_KUBE_OBJECTS, \
            f"{entrypoint} does more than read the backup store: {sorted(calls & ENGINE_OR_KUBE_OBJECTS)}"


@pytest.mark.parametrize("dep", deployments(), ids=deployment_key)
def test_deployment_flow_runs_on_its_environments_target(dep):
    name = dep["entrypoint"].split(":")[1]
    target = descriptor(environment_of(dep)).target
    assert target in RUNS_ON[REACH[name]], f"{deployment_key(dep)}: {name} does not run on {target}"


def test_init_helix_db_has_one_deployment_per_environment_through_its_target():
    init = [d for d in deployments() if d["entrypoint"] == "flows/init_db.py:init_helix_db"]
    assert sorted(d["name"] for d in init) == sorted(ENVIRONMENTS)
    assert all(d["parameters"] == {"env": d["name"]} for d in init)


def test_deployments_of_an_environment_are_only_its_own():
    local = deployments_of(prefect_doc(), "local")
    assert "deploy-helix/local" in local and "init-helix-db/local" in local
    assert all(k.endswith("/local") for k in local)
    assert len(local) == sum(1 for d in deployments() if environment_of(d) == "local")
