"""The secrets bundle: loaded from the blocks a descriptor names, never shown, never pickled, and turned
into exactly the environment each container needs."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import pytest
from pydantic import SecretStr

from blocks.bootstrap import main
from blocks.secrets import (
    COMPOSE_ENV_NAMES,
    EnvironmentSecrets,
    SecretEnv,
    compose_env,
    load_environment_secrets,
    resolve_env,
    secret_value,
    secret_values,
)
from helix_ops.descriptor import load_descriptor
from helix_ops.errors import ConfigError
from helix_ops.render.compose import env_file_keys
from helix_ops.render.kubernetes import render_kubernetes
from helix_ops.stack import SECRET_ENV, build_stack, secret_blocks
from tests.blocks.conftest import REPO, assert_no_secret

VALUES = {
    "HELIX_NEO4J_PASSWORD": "neo4j-bundle-Zq8Zq8",
    "HELIX_REDIS_PASSWORD": "redis-bundle-Zq8Zq8",
    "HELIX_NEXTAUTH_SECRET": "nextauth-bundle-Zq8Zq8-0123456789abcdef",
    "HELIX_ANTHROPIC_API_KEY": "sk-ant-bundle-Zq8Zq8",
}


@pytest.fixture
def bundle(local_descriptor, capsys):
    assert main(["--env", "local"], VALUES) == 0
    capsys.readouterr()
    return load_environment_secrets(local_descriptor)


def _bundle(environment: str = "prod", descriptor=None) -> EnvironmentSecrets:
    """A bundle built directly (no API), for rendering tests."""
    return EnvironmentSecrets(
        environment=environment,
        blocks=secret_blocks(descriptor) if descriptor else {},
        neo4j_user="neo4j",
        neo4j_password=SecretStr(VALUES["HELIX_NEO4J_PASSWORD"]),
        redis_username="default",
        redis_password=SecretStr(VALUES["HELIX_REDIS_PASSWORD"]),
        nextauth_secret=SecretStr(VALUES["HELIX_NEXTAUTH_SECRET"]),
        anthropic_api_key=SecretStr(VALUES["HELIX_ANTHROPIC_API_KEY"]),
    )


def test_bundle_holds_the_block_values(bundle, local_descriptor):
    assert bundle.environment == "local"
    assert bundle.neo4j_user == "neo4j" and bundle.redis_username == "default"
    assert bundle.neo4j_password.get_secret_value() == VALUES["HELIX_NEO4J_PASSWORD"]
    assert bundle.redis_password.get_secret_value() == VALUES["HELIX_REDIS_PASSWORD"]
    assert bundle.nextauth_secret.get_secret_value() == VALUES["HELIX_NEXTAUTH_SECRET"]
    assert bundle.anthropic_api_key.get_secret_value() == VALUES["HELIX_ANTHROPIC_API_KEY"]
    assert bundle.anthropic_placeholder is False
    assert bundle.blocks == secret_blocks(local_descriptor)


def test_bundle_never_shows_or_pickles_a_value(bundle):
    env = compose_env(bundle)
    texts = [repr(bundle), str(bundle), f"{bundle}", repr(env), str(env), f"{env!r}", repr(secret_values(bundle))]
    assert_no_secret(texts, VALUES.values())
    assert "values=<hidden>" in repr(bundle)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(bundle)
    assert copy.deepcopy(bundle) is bundle and copy.copy(bundle) is bundle
    with pytest.raises(dataclasses.FrozenInstanceError):
        bundle.environment = "prod"  # frozen


def test_bundle_fields_must_be_secret_str():
    with pytest.raises(TypeError, match="neo4j_password must be a SecretStr"):
        EnvironmentSecrets(environment="x", blocks={}, neo4j_user="neo4j", neo4j_password="plain",
                           redis_username="default", redis_password=SecretStr("a"), nextauth_secret=SecretStr("b"),
                           anthropic_api_key=SecretStr("c"))


def test_compose_env_uses_the_names_the_renderers_use(bundle, local_descriptor):
    env = compose_env(bundle)
    assert isinstance(env, dict) and isinstance(env, SecretEnv)
    assert dict(env) == {
        "NEO4J_USER": "neo4j",
        "NEO4J_PASSWORD": VALUES["HELIX_NEO4J_PASSWORD"],
        "REDIS_PASSWORD": VALUES["HELIX_REDIS_PASSWORD"],
        "NEXTAUTH_SECRET": VALUES["HELIX_NEXTAUTH_SECRET"],
        "ANTHROPIC_API_KEY": VALUES["HELIX_ANTHROPIC_API_KEY"],
    }
    assert tuple(env) == COMPOSE_ENV_NAMES
    stack = build_stack(local_descriptor)
    assert set(env_file_keys(stack)) <= set(env)  # everything the Compose file references is there
    assert set(SECRET_ENV.values()) | {"NEO4J_USER"} == set(env)


def test_resolve_env_gives_each_service_its_full_environment(bundle, local_descriptor):
    stack = build_stack(local_descriptor)
    by_name = {svc.name: resolve_env(svc.env, bundle) for svc in stack.services}
    assert by_name["neo4j"]["NEO4J_AUTH"] == "neo4j/" + VALUES["HELIX_NEO4J_PASSWORD"]
    assert by_name["redis"]["REDIS_PASSWORD"] == by_name["redis"]["REDISCLI_AUTH"] == VALUES["HELIX_REDIS_PASSWORD"]
    dashboard = by_name["dashboard"]
    assert dashboard["NEXTAUTH_SECRET"] == VALUES["HELIX_NEXTAUTH_SECRET"]
    assert dashboard["NEO4J_PASSWORD"] == VALUES["HELIX_NEO4J_PASSWORD"]
    assert dashboard["NEXTAUTH_URL"] == "http://localhost"
    assert "ANTHROPIC_API_KEY" not in dashboard
    assert by_name["mcp-discovery"]["ANTHROPIC_API_KEY"] == VALUES["HELIX_ANTHROPIC_API_KEY"]
    for svc in stack.services:
        env = by_name[svc.name]
        assert list(env) == [e.name for e in svc.env]
        for var in svc.env:
            if var.value is not None:
                assert env[var.name] == var.value
            else:
                assert env[var.name] and "${" not in env[var.name]
        assert_no_secret([repr(env)], VALUES.values())


def test_secret_values_fill_the_kubernetes_secret():
    descriptor = load_descriptor(REPO / "deployments" / "prod.yaml")
    stack = build_stack(descriptor, (REPO / "deployments" / "helix.config.yaml").read_text())
    bundle = _bundle("prod", descriptor)
    secret = next(m for m in render_kubernetes(stack, secret_values(bundle)) if m["kind"] == "Secret")
    assert secret["stringData"] == {
        **{key: secret_value(key, bundle) for key in stack.secret_keys()},
        "neo4j-user": "neo4j",  # not in secret_values: the renderer's default (tasks.kube passes the block's)
    }
    assert secret["stringData"]["neo4j-auth"] == "neo4j/" + VALUES["HELIX_NEO4J_PASSWORD"]


def test_unknown_or_empty_secret_keys_are_refused():
    bundle = _bundle()
    with pytest.raises(ConfigError, match="not a secret key"):
        secret_value("postgres-password", bundle)
    empty = EnvironmentSecrets(**{**bundle.__dict__, "redis_password": SecretStr(""),
                                  "blocks": {"redis-password": "helix-x-redis"}})
    with pytest.raises(ConfigError, match="empty value in Prefect block helix-x-redis"):
        secret_value("redis-password", empty)


def test_missing_block_names_the_credentials_entry(local_descriptor):
    with pytest.raises(ConfigError) as info:
        load_environment_secrets(local_descriptor)
    assert info.value.path == "credentials.neo4j"
    assert "python -m blocks.bootstrap --env local" in str(info.value)


def test_a_name_holding_another_block_type_is_reported(local_descriptor, capsys):
    """credentials.redis naming the Neo4j block: the Redis type has no block of that name."""
    assert main(["--env", "local"], {}) == 0
    capsys.readouterr()
    creds = local_descriptor.credentials
    wrong = local_descriptor.model_copy(update={"credentials": creds.model_copy(update={"redis": creds.neo4j})})
    with pytest.raises(ConfigError) as info:
        load_environment_secrets(wrong)
    assert info.value.path == "credentials.redis"
    assert f"no Prefect block '{creds.neo4j}' of type helix-redis-credentials" in str(info.value)


def test_bundle_passes_through_a_prefect_task_without_being_persisted(bundle):
    """How tasks use it: NO_CACHE, the bundle as an argument, only names in the result."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    @task(cache_policy=NO_CACHE, persist_result=False)
    def env_names(secrets: EnvironmentSecrets) -> list[str]:
        return sorted(compose_env(secrets))

    @flow(persist_result=False)
    def check(secrets: EnvironmentSecrets) -> list[str]:
        return env_names(secrets)

    assert check(bundle) == sorted(COMPOSE_ENV_NAMES)
