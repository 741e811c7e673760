"""``${VAR}`` interpolation, pure: the environment is an explicit mapping.

An unset variable is an error, never an empty string. ``$$`` stands for a literal ``$``. Interpolation
works on parsed YAML (strings inside the tree), so a value can never inject YAML structure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from helix_ops._validation import format_path
from helix_ops.errors import ConfigError

_TOKEN = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|(\{[^}]*\}?))")


def interpolate(text: str, env: Mapping[str, str], path: str = "") -> str:
    """Replace every ``${VAR}`` in ``text`` with ``env[VAR]``.

    >>> interpolate("bolt://${HOST}:7687", {"HOST": "neo4j"})
    'bolt://neo4j:7687'

    Raises :class:`ConfigError` naming ``path`` when a variable is unset or a reference is malformed.
    """

    def replace(match: re.Match[str]) -> str:
        escaped, name, bad = match.groups()
        if escaped:
            return "$"
        if bad is not None:
            raise ConfigError(path, f"malformed variable reference ${bad} (expected ${{NAME}})")
        if name not in env:
            raise ConfigError(path, f"environment variable {name} is not set")
        return env[name]

    return _TOKEN.sub(replace, text)


def interpolate_tree(data: Any, env: Mapping[str, str], loc: tuple[str | int, ...] = ()) -> Any:
    """Interpolate every string (not keys) in a parsed YAML tree; returns a new tree."""
    if isinstance(data, str):
        return interpolate(data, env, format_path(loc))
    if isinstance(data, dict):
        return {k: interpolate_tree(v, env, (*loc, str(k))) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate_tree(v, env, (*loc, i)) for i, v in enumerate(data)]
    return data


def referenced_variables(data: Any) -> set[str]:
    """Names of all ``${VAR}`` references in a parsed YAML tree."""
    if isinstance(data, str):
        return {m.group(2) for m in _TOKEN.finditer(data) if m.group(2)}
    if isinstance(data, dict):
        return set().union(*(referenced_variables(v) for v in data.values())) if data else set()
    if isinstance(data, list):
        return set().union(*(referenced_variables(v) for v in data)) if data else set()
    return set()
