"""The stack model: apply order, environment wiring, secrets by reference, scaling and sizing rules."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest
from core_helpers import DEPLOYMENTS, descriptor_data, dump, helix_config_text, mutate

from helix_ops.descriptor import load_descriptor, parse_descriptor
from helix_ops.errors import ConfigError
from helix_ops.rules import resolved_resources
from helix_ops.stack import EnvVar, apply_order, build_stack, dependency_waves, secret_blocks


def stack(env="prod", config=True):
    return build_stack(load_descriptor(DEPLOYMENTS / f"{env}.yaml"), helix_config_text() if config else None)


def test_apply_order_puts_dependencies_first():
    s = stack()
    names = s.names()
    assert names == ("neo4j", "redis", "redis-sentinel", "dashboard", "mcp-graph", "mcp-discovery",
                     "mcp-derivation", "mcp-cascade", "mcp-verification", "nginx")
    for svc in s.services:
        for dep in svc.depends_on:
            assert names.index(dep) < names.index(svc.name)


def test_apply_order_refuses_cycles_and_unknown_dependencies():
    s = stack("local")
    neo, redis = s.service("neo4j"), s.service("redis")
    import dataclasses

    with pytest.raises(ConfigError, match="dependency cycle: (neo4j -> redis -> neo4j|redis -> neo4j -> redis)"):
        apply_order([dataclasses.replace(neo, depends_on=("redis",)), dataclasses.replace(redis, depends_on=("neo4j",))])
    with pytest.raises(ConfigError, match="unknown service ghost"):
        apply_order([dataclasses.replace(neo, depends_on=("ghost",))])


def test_apply_order_is_stable_and_waves_only_depend_on_earlier_waves():
    import dataclasses

    s = stack("local")
    svc = {x.name: x for x in s.services}
    a, b, c = (dataclasses.replace(svc["redis"], name=n, depends_on=d) for n, d in
               (("a", ()), ("b", ("a",)), ("c", ())))
    assert [x.name for x in apply_order([a, b, c])] == ["a", "b", "c"]  # b is ready before c is taken
    assert [x.name for x in apply_order([b, c, a])] == ["c", "a", "b"]
    waves = dependency_waves(s, s.names())
    assert [n for w in waves for n in w] == list(s.names())  # every service once, in apply order
    level = {n: i for i, w in enumerate(waves) for n in w}
    for x in s.services:
        assert all(level[d] < level[x.name] for d in x.depends_on), x.name
    assert "dashboard" in waves[level["mcp-graph"]]  # dashboard and mcp-graph together
    assert dependency_waves(s, ["mcp-discovery", "redis"]) == [["redis"], ["mcp-discovery"]]


def test_members_of_a_stateful_set_resolve_to_their_service():
    s = stack()  # prod: Redis in Sentinel mode (replicated) and a Neo4j cluster
    redis, sentinel = s.service("redis"), s.service("redis-sentinel")
    assert redis.replicas >= 2 and sentinel.replicas >= 2
    assert s.service(f"redis-{redis.replicas}") is redis  # not redis-sentinel: the whole prefix must match
    assert s.service(f"redis-sentinel-{sentinel.replicas}") is sentinel
    for ghost in (f"redis-{redis.replicas + 1}", "redis-1", "redis-0", "redis-x", "mcp-graph-2", "ghost"):
        with pytest.raises(KeyError):
            s.service(ghost)


def test_dashboard_wiring_for_sentinel_and_cluster():
    env = {e.name: e for e in stack().service("dashboard").env}
    assert env["NEO4J_URI"] == EnvVar("NEO4J_URI", "neo4j://neo4j:7687")
    assert env["REDIS_HOST"].value == "redis-sentinel"
    assert env["REDIS_PORT"].value == "26379"
    assert env["REDIS_SENTINEL_MASTER"].value == "helix"
    assert env["NEO4J_PASSWORD"] == EnvVar("NEO4J_PASSWORD", secret="neo4j-password")
    assert env["NEXTAUTH_SECRET"] == EnvVar("NEXTAUTH_SECRET", secret="nextauth-secret")
    assert env["NEXTAUTH_URL"].value == "https://dashboard.example.com"
    assert "ANTHROPIC_API_KEY" not in env


def test_single_server_wiring_and_ports_for_the_probe():
    s = stack("local", config=False)
    graph = {e.name: e.value for e in s.service("mcp-graph").env}
    assert graph["NEO4J_URI"] == "bolt://neo4j:7687"
    assert graph["REDIS_HOST"] == "redis" and graph["REDIS_PORT"] == "6379"
    assert graph["HELIX_SERVICE"] == "mcp-graph" and graph["PORT"] == "3101"
    assert s.service("mcp-graph").probe.port == 3101
    assert s.service("mcp-graph").probe.path == "/api/health"
    assert "HELIX_CONFIG" not in graph


def test_only_discovery_and_derivation_get_the_anthropic_key():
    s = stack()
    with_key = {svc.name for svc in s.services if "anthropic-api-key" in svc.secret_keys()}
    assert with_key == {"mcp-discovery", "mcp-derivation"}


def test_no_service_carries_a_literal_secret():
    for svc in stack().services:
        for e in svc.env:
            assert (e.value is None) != (e.secret is None), e
            if re.search(r"PASSWORD|SECRET|API_KEY|AUTH", e.name) and e.name != "NEXTAUTH_URL":
                assert e.secret is not None, e


def test_neo4j_uses_neo4j5_setting_names_and_auth_key():
    env = {e.name: e for e in stack().service("neo4j").env}
    assert env["NEO4J_AUTH"].secret == "neo4j-auth"
    assert env["NEO4J_server_memory_heap_max__size"].value == "4G"
    assert env["NEO4J_server_memory_pagecache_size"].value == "2G"
    assert env["NEO4J_ACCEPT_LICENSE_AGREEMENT"].value == "yes"
    assert not any(name.startswith("NEO4J_dbms_memory") for name in env)


def test_scaling_flags_and_strategies():
    s = stack()
    assert s.service("mcp-graph").strategy == "Recreate" and not s.service("mcp-graph").scalable
    assert s.service("dashboard").strategy == "RollingUpdate" and s.service("dashboard").scalable
    assert s.service("mcp-discovery").replicas == 2


def test_redis_password_never_on_the_command_line():
    cmd = stack().service("redis").command
    assert cmd[:2] == ("sh", "-c")
    assert "$REDIS_PASSWORD" in cmd[2] and "--requirepass" not in cmd[2]
    # the ACL (seeded once from the environment, then owned by Redis) persists on the data volume
    assert '(umask 077; echo "user default on >$REDIS_PASSWORD ~* &* +@all" > /data/users.acl)' in cmd[2]
    assert 'echo "aclfile /data/users.acl"' in cmd[2] and "requirepass" not in cmd[2]


def test_guide_table_is_the_default_resources():
    d = load_descriptor(DEPLOYMENTS / "staging.yaml")
    assert resolved_resources(d, "mcp-discovery") == (("2Gi", "2"), ("4Gi", "2"))
    assert resolved_resources(d, "dashboard") == (("256Mi", "500m"), ("512Mi", "500m"))


def test_secret_blocks_name_the_prefect_blocks():
    d = load_descriptor(DEPLOYMENTS / "prod.yaml")
    assert secret_blocks(d) == {
        "neo4j-password": "helix-prod-neo4j",
        "redis-password": "helix-prod-redis",
        "nextauth-secret": "helix-prod-nextauth",
        "anthropic-api-key": "helix-prod-anthropic",
    }


def test_build_stack_refuses_rule_breaking_descriptors_built_by_hand():
    d = load_descriptor(DEPLOYMENTS / "prod.yaml")
    services = d.services.model_copy(update={"mcp_graph": d.services.mcp_graph.model_copy(update={"replicas": 2})})
    with pytest.raises(ConfigError, match="single writer"):
        build_stack(d.model_copy(update={"services": services}))


def test_helix_config_variables_must_be_wired():
    d = load_descriptor(DEPLOYMENTS / "prod.yaml")
    with pytest.raises(ConfigError) as info:
        build_stack(d, helix_config_text() + "extra:\n  key: ${SOMETHING_UNWIRED}\n")
    assert info.value.path == "helix_config"
    assert "SOMETHING_UNWIRED" in info.value.message


def test_descriptor_is_frozen():
    d = load_descriptor(DEPLOYMENTS / "prod.yaml")
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        d.environment = "other"  # type: ignore[misc]


def test_local_descriptor_uses_test_bed_images():
    s = stack("local", config=False)
    images = {svc.name: svc.image for svc in s.services}
    assert images["neo4j"] == "localhost/helix-neo4j:5.26"
    assert images["redis"] == "localhost/helix-redis:7"
    assert images["nginx"] == "localhost/helix-nginx:1"
    for name in ("dashboard", "mcp-graph", "mcp-discovery", "mcp-derivation", "mcp-cascade", "mcp-verification"):
        assert images[name] == "localhost/helix-probe:v1"


def test_compose_only_publishes_the_load_balancer():
    from helix_ops.render.compose import render_compose

    doc = render_compose(stack("local", config=False))
    published = {name for name, svc in doc["services"].items() if "ports" in svc}
    assert published == {"nginx"}
    assert doc["services"]["nginx"]["ports"] == [{"target": 8080, "published": "8080", "protocol": "tcp"}]
    assert "version" not in doc
    assert not any("container_name" in svc for svc in doc["services"].values())
    assert doc["services"]["dashboard"]["deploy"]["replicas"] == 2


def test_compose_secrets_are_env_references():
    from helix_ops.render.compose import env_file_keys, render_compose

    s = stack("local", config=False)
    doc = render_compose(s)
    assert doc["services"]["neo4j"]["environment"]["NEO4J_AUTH"] == (
        "neo4j/${NEO4J_PASSWORD:?set NEO4J_PASSWORD in .env}")
    assert doc["services"]["redis"]["environment"]["REDISCLI_AUTH"] == (
        "${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}")
    assert env_file_keys(s) == ["ANTHROPIC_API_KEY", "NEO4J_PASSWORD", "NEXTAUTH_SECRET", "REDIS_PASSWORD"]


def test_kubernetes_secret_template_and_supplied_values():
    from helix_ops.render.kubernetes import secret

    s = stack()
    tmpl = secret(s, None)
    assert tmpl["stringData"] == dict.fromkeys(
        ["anthropic-api-key", "neo4j-auth", "neo4j-password", "neo4j-user", "nextauth-secret", "redis-password"], "")
    values = {"neo4j-password": "pw", "redis-password": "r", "nextauth-secret": "n", "anthropic-api-key": "k"}
    assert secret(s, values)["stringData"]["neo4j-auth"] == "neo4j/pw"
    # the Neo4j user travels with its password; the stack's default user when not supplied
    assert secret(s, values)["stringData"]["neo4j-user"] == "neo4j"
    assert secret(s, {**values, "neo4j-user": "helix_rotation"})["stringData"]["neo4j-user"] == "helix_rotation"
    with pytest.raises(ConfigError, match="helix-prod-redis"):
        secret(s, {**values, "redis-password": ""})
    with pytest.raises(ConfigError, match="not a secret key"):
        secret(s, {**values, "neo4j-auth": "neo4j/x"})


def test_no_pod_gets_service_link_variables():
    """A Service named neo4j/redis would inject NEO4J_PORT=tcp://… / REDIS_PORT=tcp://… into every pod: the Neo4j
    image reads NEO4J_* as settings, and helix-probe refused REDIS_PORT "tcp://…" on a real kubelet."""
    from helix_ops.render.kubernetes import render_kubernetes

    objects = render_kubernetes(stack())
    pods = [o["spec"]["template"]["spec"] for o in objects if o.get("kind") in ("Deployment", "StatefulSet")]
    assert len(pods) >= 7
    assert all(p.get("enableServiceLinks") is False for p in pods)
    services = {o["metadata"]["name"] for o in objects if o.get("kind") == "Service"}
    assert "neo4j" in services and any(n.startswith("redis") for n in services)  # the names that would inject


def test_cluster_on_community_refused_before_rendering():
    data = mutate(descriptor_data("prod"), "services.neo4j.edition", "community")
    with pytest.raises(ConfigError, match="needs edition enterprise"):
        parse_descriptor(dump(data))


def test_compose_never_interpolates_a_value_into_argv():
    from helix_ops.render.compose import render_compose

    doc = render_compose(stack())
    redis = doc["services"]["redis"]
    assert redis["entrypoint"][:2] == ["sh", "-c"] and "command" not in redis
    for name, svc in doc["services"].items():
        for part in [*svc.get("entrypoint", []), *svc.get("command", []), *svc["healthcheck"]["test"]]:
            assert "${" not in part.replace("$${", ""), (name, part)


def test_one_descriptor_path_checks_the_environment_name_even_with_a_path(tmp_path):
    from helix_ops.descriptor import descriptor_file

    assert descriptor_file("prod") == Path("deployments/prod.yaml")
    assert descriptor_file("prod", tmp_path / "x.yaml") == tmp_path / "x.yaml"
    assert descriptor_file(None, tmp_path / "x.yaml") == tmp_path / "x.yaml"
    for bad in ("../etc", "Prod", "a b", ""):
        with pytest.raises(ConfigError, match="not an environment name"):
            descriptor_file(bad, tmp_path / "x.yaml" if bad else None)
