"""helix.config.yaml: ${VAR} interpolation with an explicit environment, typed values, clear errors."""

from __future__ import annotations

import pytest
from core_helpers import helix_config_text

from helix_ops.config import parse_helix_config
from helix_ops.errors import ConfigError
from helix_ops.interpolate import interpolate, interpolate_tree, referenced_variables

ENV = {
    "NEO4J_URI": "bolt://neo4j:7687",
    "NEO4J_USER": "neo4j",
    "NEO4J_PASSWORD": "s3cret",
    "REDIS_HOST": "redis-sentinel",
    "REDIS_PORT": "26379",
    "REDIS_PASSWORD": "r3dis",
}


def test_guide_config_parses_with_typed_values():
    cfg = parse_helix_config(helix_config_text(), ENV)
    assert cfg.events.port == 26379 and isinstance(cfg.events.port, int)
    assert cfg.events.tls is True
    assert cfg.graph.uri == "bolt://neo4j:7687"
    assert cfg.gates["gate_1"].timeout_hours == 48
    assert cfg.server.uid_prefix == "cpe"


def test_unset_variable_fails_loudly_never_empty():
    env = {k: v for k, v in ENV.items() if k != "REDIS_PASSWORD"}
    with pytest.raises(ConfigError) as info:
        parse_helix_config(helix_config_text(), env, "helix.config.yaml")
    assert str(info.value) == "helix.config.yaml: events.password: environment variable REDIS_PASSWORD is not set"


def test_empty_value_is_not_unset_but_still_invalid():
    with pytest.raises(ConfigError) as info:
        parse_helix_config(helix_config_text(), {**ENV, "NEO4J_PASSWORD": ""})
    assert info.value.path == "graph.password"
    assert info.value.message == "must not be empty"


@pytest.mark.parametrize(
    ("patch", "path", "message"),
    [
        ({"REDIS_PORT": "not-a-port"}, "events.port", "expected an integer, got str 'not-a-port'"),
        ({"REDIS_PORT": "70000"}, "events.port", "must be at most 65535"),
        ({"NEO4J_URI": "http://neo4j"}, "graph.uri", "does not match the expected form"),
    ],
)
def test_interpolated_values_are_typed(patch, path, message):
    with pytest.raises(ConfigError) as info:
        parse_helix_config(helix_config_text(), {**ENV, **patch})
    assert info.value.path == path
    assert message in info.value.message


def test_gate_timeout_must_be_positive():
    text = helix_config_text().replace("gate_1: { enabled: true, timeout_hours: 48 }",
                                       "gate_1: { enabled: true, timeout_hours: 0 }")
    with pytest.raises(ConfigError) as info:
        parse_helix_config(text, ENV)
    assert str(info.value) == "gates.gate_1.timeout_hours: must be greater than 0"


def test_unknown_key_lists_the_expected_keys():
    with pytest.raises(ConfigError) as info:
        parse_helix_config(helix_config_text() + "extra: 1\n", ENV)
    assert str(info.value) == (
        "extra: unknown key (expected one of: enforcement, events, gates, graph, server)")


def test_interpolate_escapes_and_malformed_references():
    assert interpolate("a$${B}c", {}) == "a${B}c"
    assert interpolate("${A}-${A}", {"A": "x"}) == "x-x"
    with pytest.raises(ConfigError, match="malformed variable reference"):
        interpolate("${A", {"A": "x"}, "p")
    with pytest.raises(ConfigError, match="malformed"):
        interpolate("${1A}", {}, "p")


def test_interpolation_is_pure_and_never_reads_os_environ(monkeypatch):
    monkeypatch.setenv("ONLY_IN_OS_ENVIRON", "x")
    with pytest.raises(ConfigError, match="ONLY_IN_OS_ENVIRON is not set"):
        interpolate("${ONLY_IN_OS_ENVIRON}", {})


def test_interpolate_tree_paths_and_values_not_keys():
    tree = {"a": [{"b": "${X}"}], "${K}": 1}
    assert interpolate_tree(tree, {"X": "1"}) == {"a": [{"b": "1"}], "${K}": 1}
    with pytest.raises(ConfigError) as info:
        interpolate_tree(tree, {})
    assert info.value.path == "a[0].b"
    assert referenced_variables(tree) == {"X"}
