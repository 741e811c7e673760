"""Property: random mutations of a valid descriptor never crash the loader (ConfigError or success)."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from core_helpers import descriptor_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helix_ops.descriptor import Descriptor, parse_descriptor
from helix_ops.errors import ConfigError
from helix_ops.stack import build_stack

BASES = {env: descriptor_data(env) for env in ("local", "staging", "prod")}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["latest", "1Gi", "0", "enterprise", "community", "sentinel", "${X}", "Mi", "-1",
                     "1.31", "* * * * *", "s3", "local", "AKIAABCDEFGHIJKLMNOP", "neo4j"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=6)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a node in the tree (including containers)."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw) -> str:
    data = copy.deepcopy(BASES[draw(st.sampled_from(sorted(BASES)))])
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        target = draw(st.sampled_from(paths(data)[1:]))
        *parents, last = target
        node = data
        for p in parents:
            node = node[p]
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        if op == "delete" and isinstance(node, dict):
            del node[last]
        elif op == "add" and isinstance(node.get(last) if isinstance(node, dict) else None, dict):
            node[last][draw(st.text(max_size=10))] = draw(values)
        else:
            node[last] = draw(values)
        if not paths(data)[1:]:
            break
    text = yaml.safe_dump(data, allow_unicode=True)
    if draw(st.booleans()) and draw(st.integers(0, 9)) == 0:
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["[", "{", ":", "\t", "- - ", "&a *b"])) + text[cut:]
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_loader_never_crashes_on_mutated_descriptors(text):
    try:
        descriptor = parse_descriptor(text, "fuzz.yaml")
    except ConfigError as exc:
        line = exc.one_line()
        assert line.startswith("fuzz.yaml: ") and "\n" not in line and exc.path
        return
    assert isinstance(descriptor, Descriptor)
    build_stack(descriptor)  # a valid descriptor always yields a stack
