"""The schedules of ``prefect.yaml``, generated from the descriptors: one source of truth.

A descriptor says when its environment is backed up (``backup.schedules.<component>`` in ``backup.timezone``)
and, optionally, when its secrets rotate (``rotation.schedule`` in ``rotation.timezone``). From those,
:func:`descriptor_schedules` builds the schedule entries of the ``backup-helix/<env>`` and
``rotate-helix-secrets/<env>`` deployments (one backup schedule per component, each with
``parameters: {components: [<component>]}``), and :func:`write_schedules` puts them into ``prefect.yaml``'s
text between marker comments, leaving every other line (comments, anchors, the other deployments' hand-written
schedules) as it is::

    # >>> schedules of backup-helix/prod: from deployments/prod.yaml (helix-ops schedules --write)
    schedules:
      - cron: "0 2 * * *"
        ...
    # <<< schedules of backup-helix/prod

:func:`check_schedules` compares the parsed ``prefect.yaml`` with the descriptors (``helix-ops schedules
--check``, and ``tests/core/test_prefect_yaml.py``). Pure: text and data in, text and data out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from helix_ops.descriptor import Descriptor
from helix_ops.errors import ConfigError

BACKUP_FLOW = "backup-helix"
ROTATION_FLOW = "rotate-helix-secrets"
INACTIVE_ENVIRONMENTS = frozenset({"local"})
"""Environments whose generated schedules are registered inactive (``active: false``): the developer's
``local`` environment (the quickstart must not back it up every half hour on its own). Turn one on in the
Prefect UI, or remove it here and run ``helix-ops schedules --write``."""

BEGIN = "# >>> schedules of "
END = "# <<< schedules of "

Schedule = dict[str, Any]


def deployment_key(deployment: Mapping[str, Any]) -> str:
    """``<flow>/<name>`` of a ``prefect.yaml`` deployment entry; the flow is the entrypoint's function with
    dashes (``flows/backup.py:backup_helix`` → ``backup-helix``), the way ``prefect deploy --name`` matches it."""
    function = str(deployment.get("entrypoint", "")).rsplit(":", 1)[-1]
    return f"{function.replace('_', '-')}/{deployment.get('name')}"


def environment_of(deployment: Mapping[str, Any]) -> str | None:
    """The environment a deployment acts on: its ``parameters.env`` (None when it names none)."""
    env = (deployment.get("parameters") or {}).get("env")
    return env if isinstance(env, str) else None


def deployments_of(prefect_yaml: Mapping[str, Any], env: str) -> list[str]:
    """The ``<flow>/<name>`` of every deployment of environment ``env``, in file order (for
    ``prefect deploy --name ...``: register only what a worker of that environment's queue runs)."""
    return [deployment_key(d) for d in prefect_yaml.get("deployments") or [] if environment_of(d) == env]


def descriptor_schedules(desc: Descriptor) -> dict[str, list[Schedule]]:
    """``{"backup-helix/<env>": [...], "rotate-helix-secrets/<env>": [...]}``: the schedule entries the
    descriptor asks for, as ``prefect.yaml`` writes them (an empty list: that deployment has no schedule)."""
    env = desc.environment
    active = env not in INACTIVE_ENVIRONMENTS
    backup: list[Schedule] = []
    for component in type(desc.backup.schedules).model_fields:
        cron = getattr(desc.backup.schedules, component)
        if cron is not None:
            backup.append({"cron": cron, "timezone": desc.backup.timezone, "active": active,
                           "slug": f"backup-{component}", "parameters": {"components": [component]}})
    rotation: list[Schedule] = []
    if desc.rotation is not None:
        rotation.append({"cron": desc.rotation.schedule, "timezone": desc.rotation.timezone, "active": active,
                         "slug": "rotation"})
    return {f"{BACKUP_FLOW}/{env}": backup, f"{ROTATION_FLOW}/{env}": rotation}


def all_schedules(descriptors: Sequence[Descriptor]) -> dict[str, list[Schedule]]:
    """:func:`descriptor_schedules` of every descriptor, merged."""
    out: dict[str, list[Schedule]] = {}
    for desc in descriptors:
        out.update(descriptor_schedules(desc))
    return out


def render_block(key: str, schedules: Sequence[Schedule], indent: str) -> list[str]:
    """The lines of one generated block, markers included, at ``indent`` (the deployment's keys' indent)."""
    env = key.split("/", 1)[1]
    lines = [f"{indent}{BEGIN}{key}: from deployments/{env}.yaml (helix-ops schedules --write)"]
    if not schedules:
        lines.append(f"{indent}schedules: []")
    else:
        lines.append(f"{indent}schedules:")
        for entry in schedules:
            first = True
            for name, value in entry.items():
                lead = "  - " if first else "    "
                lines.append(f"{indent}{lead}{name}: {_scalar(value)}")
                first = False
    lines.append(f"{indent}{END}{key}")
    return lines


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return yaml.safe_dump(dict(value), default_flow_style=True, sort_keys=False, width=1000).strip()
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_/+.-]*", value) \
            and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)  # a double-quoted YAML string: a cron may start with '*'


def marked_blocks(text: str, source: str = "prefect.yaml") -> list[tuple[str, int, int, str]]:
    """``(key, begin line, end line, indent)`` of every generated block in ``text`` (0-based, inclusive)."""
    lines = text.splitlines()
    blocks: list[tuple[str, int, int, str]] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].lstrip(" ")
        if stripped.startswith(END):
            raise ConfigError(f"line {i + 1}", f"'{END.strip()}' without its '{BEGIN.strip()}' line", source)
        if stripped.startswith(BEGIN):
            indent = lines[i][: len(lines[i]) - len(stripped)]
            key = stripped[len(BEGIN):].split(":", 1)[0].strip()
            end = next((j for j in range(i + 1, len(lines)) if lines[j].lstrip(" ").startswith((BEGIN, END))),
                       None)
            if end is None or lines[end].strip() != f"{END}{key}":
                raise ConfigError(f"line {i + 1}", f"the generated schedules of {key} have no '{END}{key}' line "
                                                   "before the next marker", source)
            blocks.append((key, i, end, indent))
            i = end
        i += 1
    return blocks


def write_schedules(text: str, wanted: Mapping[str, Sequence[Schedule]], source: str = "prefect.yaml") -> str:
    """``text`` (prefect.yaml) with every generated block set to ``wanted[key]``; nothing else changes.

    Raises :class:`ConfigError` when a wanted deployment has no marker pair (add the two marker lines where
    its ``schedules`` go), a marker names a deployment nothing generates, or a key is marked twice."""
    blocks = marked_blocks(text, source)
    seen = [key for key, *_ in blocks]
    twice = sorted({k for k in seen if seen.count(k) > 1})
    if twice:
        raise ConfigError("deployments", f"schedules of {', '.join(twice)} marked more than once", source)
    unknown = sorted(set(seen) - set(wanted))
    if unknown:
        raise ConfigError("deployments", f"generated schedules marked for {', '.join(unknown)}, which no "
                                          "descriptor generates (remove the markers or add the descriptor)", source)
    missing = [k for k in wanted if k not in seen]
    if missing:
        raise ConfigError("deployments", f"no '{BEGIN}{missing[0]}' marker: add the marker pair "
                                          f"'{BEGIN}{missing[0]}' / '{END}{missing[0]}' in that deployment, "
                                          "where its schedules go", source)
    lines = text.splitlines()
    out: list[str] = []
    last = 0
    for key, begin, end, indent in blocks:
        out += lines[last:begin]
        out += render_block(key, wanted[key], indent)
        last = end + 1
    out += lines[last:]
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def check_schedules(prefect_yaml: Mapping[str, Any], wanted: Mapping[str, Sequence[Schedule]]) -> list[str]:
    """Where the parsed ``prefect.yaml`` disagrees with the descriptors, one line each (empty: agrees)."""
    by_key: dict[str, list[Mapping[str, Any]]] = {}
    for deployment in prefect_yaml.get("deployments") or []:
        by_key.setdefault(deployment_key(deployment), []).append(deployment)
    problems: list[str] = []
    for key, schedules in wanted.items():
        found = by_key.get(key, [])
        if len(found) != 1:
            problems.append(f"{key}: {len(found)} deployments in prefect.yaml, expected 1")
            continue
        actual = found[0].get("schedules") or []
        if [dict(s) for s in actual] != [dict(s) for s in schedules]:
            problems.append(f"{key}: prefect.yaml has {_brief(actual)}, the descriptor says {_brief(schedules)}")
    return problems


def _brief(schedules: Sequence[Mapping[str, Any]]) -> str:
    if not schedules:
        return "no schedule"
    return "; ".join(", ".join(f"{k}={json.dumps(v)}" for k, v in s.items()) for s in schedules)
