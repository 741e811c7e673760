"""Shared helpers for the core tests: load a descriptor as data, mutate it, dump it back."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = ROOT / "deployments"
GOLDEN = Path(__file__).resolve().parent / "golden"
DELETE = object()


def descriptor_data(env: str = "prod") -> dict[str, Any]:
    """The descriptor of ``env`` as plain data."""
    return yaml.safe_load((DEPLOYMENTS / f"{env}.yaml").read_text())


def helix_config_text() -> str:
    """The example helix.config.yaml."""
    return (DEPLOYMENTS / "helix.config.yaml").read_text()


def mutate(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``data`` with the dotted ``path`` set to ``value`` (or removed with DELETE)."""
    out = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return out


def dump(data: Any) -> str:
    """YAML text of ``data``."""
    return yaml.safe_dump(data, sort_keys=False)
