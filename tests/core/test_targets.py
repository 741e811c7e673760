"""The Target interface without servers: which target a descriptor opens, what each implementation offers,
the pure helpers around it, and the rule that flows never branch on the target."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from drivers.target import OFFLINE_NEO4J_TOOLS, Connection, Target, merge_records, require
from drivers.target_engine import EngineTarget
from drivers.target_kube import KubeTarget
from helix_ops.descriptor import load_descriptor, parse_descriptor
from helix_ops.errors import ConfigError
from tasks.target import target_for as open_target

REPO = Path(__file__).resolve().parents[2]


def test_each_descriptor_opens_the_target_it_names_and_no_io_happens():
    local = open_target(load_descriptor(REPO / "deployments" / "local.yaml"),
                        Connection(engine_url="tcp://127.0.0.2:2375", container_labels={"a": "b"}))
    assert local == EngineTarget("tcp://127.0.0.2:2375", "helix-local", "local", {"a": "b"})
    prod = open_target(load_descriptor(REPO / "deployments" / "prod.yaml"),
                       Connection(kubeconfig="/k.yaml", kube_context="c", cluster_block="blk"))
    assert prod == KubeTarget("helix", "prod", "helix", "/k.yaml", "c", False, "blk")
    for target in (local, prod):
        assert isinstance(target, Target)  # the Protocol, checked at run time
    assert (local.kind, prod.kind) == ("engine", "kubernetes")
    assert OFFLINE_NEO4J_TOOLS in local.capabilities and OFFLINE_NEO4J_TOOLS not in prod.capabilities


def test_a_missing_capability_is_refused_with_what_to_do():
    prod = open_target(load_descriptor(REPO / "deployments" / "prod.yaml"))
    with pytest.raises(ConfigError) as err:
        require(prod, OFFLINE_NEO4J_TOOLS, "neo4j_strategy", "use 'logical'")
    assert str(err.value) == ("neo4j_strategy: not available on a kubernetes target (kubernetes ($KUBECONFIG), "
                              "namespace helix): use 'logical'")
    require(open_target(load_descriptor(REPO / "deployments" / "local.yaml")), OFFLINE_NEO4J_TOOLS, "x", "y")


@pytest.mark.parametrize("records, merged", [
    ([{"replicas": ["a"]}, {"replicas": ["b", "a"]}], {"replicas": ["a", "b"]}),
    ([{"replicas": ["p"], "scale": 1}, {"replicas": [], "scale": 2}], {"replicas": ["p"], "scale": 2}),
    ([{}, {"replicas": ["x"]}], {"replicas": ["x"]}),
    ([{"replicas": []}], {"replicas": []}),
])
def test_pause_records_merge(records, merged):
    assert merge_records(*records) == merged


@pytest.mark.parametrize("base_url, host", [
    (None, "127.0.0.1"),
    ("http+docker://localhost", "127.0.0.1"),
    ("http://127.0.0.2:2375", "127.0.0.2"),
    ("https://engine.example:2376", "engine.example"),
    ("http://localhost:2375", "127.0.0.1"),
    ("ssh://ops@engine", "127.0.0.1"),
])
def test_probe_ports_are_published_and_reached_on_the_engines_address(base_url, host):
    from drivers.engine import container_plans, probe_host_of

    assert probe_host_of(base_url) == host
    [plan] = container_plans("p", "local", "web", {"image": "i:1"}, "abcdef0123456789", {}, 3000, probe_host=host)
    assert plan.ports == {"3000/tcp": (host, None)}


def test_a_kubernetes_environment_must_back_up_to_s3():
    data = yaml.safe_load((REPO / "deployments" / "staging.yaml").read_text())
    data["backup"]["storage"] = {"kind": "local", "path": "/var/backups"}
    with pytest.raises(ConfigError, match=r"backup.storage.kind: 'local' storage for a kubernetes environment"):
        parse_descriptor(yaml.safe_dump(data))


def test_backup_components_are_checked_before_anything():
    from flows.backup import requested_components

    assert requested_components(None) == ("neo4j", "redis")
    assert requested_components(["redis"]) == ("redis",)
    for bad in (["neo4j", "neo4j"], ["postgres"]):
        with pytest.raises(ConfigError, match="components"):
            requested_components(bad)


def test_a_scratch_enterprise_neo4j_accepts_the_licence():
    from tasks.verify import scratch_neo4j_environment

    community = scratch_neo4j_environment("pw", "512m", "128m")
    assert "NEO4J_ACCEPT_LICENSE_AGREEMENT" not in community and community["NEO4J_AUTH"] == "neo4j/pw"
    assert scratch_neo4j_environment("pw", "512m", "128m", "enterprise")["NEO4J_ACCEPT_LICENSE_AGREEMENT"] == "yes"


def test_flows_never_ask_which_target_they_have():
    offenders = [f"{p.name}:{n}" for p in sorted((REPO / "flows").glob("*.py"))
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"\.target\s*==|target\s*==|\.kind\s*==|EngineTarget\(|KubeTarget\(", line)]
    assert offenders == []


def test_every_target_step_module_has_the_same_steps():
    """deploy, upgrade/scale and rotation call these on ``tasks.target.deployer_for(target)``."""
    import inspect

    import tasks.engine
    import tasks.kube
    from tasks.target import DEPLOYERS

    steps = ("plan_deploy", "apply_deploy", "deploy_status", "running_images", "service_of", "is_rollout_failure",
             "roll_services", "roll_back", "rotation_access", "roll_consumers")
    assert set(DEPLOYERS) == {"engine", "kubernetes"}
    for step in steps:
        engine, kube = getattr(tasks.engine, step), getattr(tasks.kube, step)
        assert list(inspect.signature(engine).parameters) == list(inspect.signature(kube).parameters), step
