"""Drift on Kubernetes: the fields helix-ops owns in a workload, read the same way from the rendering and from
the live object, so that an out-of-band change (``kubectl set image``, ``kubectl edit``, ``kubectl scale``)
shows in the plan even though the spec-hash annotation still matches.

Owned fields, per container of the pod template: its image, its environment (by name; a value is compared by
its hash and never shown, only that it changed: a secret typed into ``kubectl set env`` must not reach a plan
artifact; so are probe headers' values and exec commands), its resources (quantities compared by value: ``0.5`` is ``500m``, ``1Gi`` is ``1024Mi``) and its probes (with the
API server's defaults filled in, so that a default it adds is not a drift); and the workload's replicas when
the rendering sets them (an autoscaled workload's are the autoscaler's).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
PROBE_DEFAULTS = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
CONTAINER_PREFIX = "containers."

_BINARY = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal(10 ** 3),
            "M": Decimal(10 ** 6), "G": Decimal(10 ** 9), "T": Decimal(10 ** 12), "P": Decimal(10 ** 15),
            "E": Decimal(10 ** 18)}


_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")


def quantity(value: Any) -> str:
    """A Kubernetes quantity as a canonical number string (``"500m"`` and ``"0.5"`` → ``"0.5"``, ``"1Gi"`` and
    ``"1024Mi"`` → ``"1073741824"``); a value that is not a quantity (Kubernetes' own grammar) is returned as
    it is, so it differs from any real one."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        return text
    number, exponent, suffix = match.groups()
    scale = Decimal(_BINARY[suffix]) if suffix in _BINARY else _DECIMAL[suffix or ""]
    amount = Decimal(number + (exponent or "")) * scale
    return format(amount.normalize() + 0, "f")  # + 0: -0 is 0


HIDDEN = "sha256:"
"""The prefix of a value compared by its hash and never shown (env values, probe headers and commands)."""


def _value_hash(value: Any) -> str:
    return HIDDEN + hashlib.sha256(str(value).encode()).hexdigest()


def hidden(value: Any) -> bool:
    """Whether an owned field's value is a hash that a plan must not show (it says only that it changed)."""
    return isinstance(value, str) and value.startswith(HIDDEN)


def _env(entry: Mapping[str, Any]) -> str:
    if "valueFrom" in entry:
        source = entry["valueFrom"] or {}
        for kind, ref in sorted(source.items()):
            ref = dict(ref or {})
            if kind == "fieldRef":
                ref.setdefault("apiVersion", "v1")
            if kind == "resourceFieldRef":
                ref["divisor"] = quantity(ref.get("divisor") or "1")
                ref["divisor"] = "1" if ref["divisor"] == "0" else ref["divisor"]  # the server reads back 0 for 1
            if ref.get("optional") is False:
                del ref["optional"]
            return f"{kind} " + ",".join(f"{k}={ref[k]}" for k in sorted(ref))
        return "valueFrom"
    return _value_hash(entry.get("value", ""))


def _probe(probe: Mapping[str, Any]) -> dict[str, Any]:
    """A probe with the API server's defaults filled in (a 0 or missing threshold, an httpGet's scheme and path,
    a gRPC service) and what may hold a secret (headers' values, an exec command) hashed."""
    out = {k: v for k, v in probe.items() if v is not None and not (k == "initialDelaySeconds" and v == 0)}
    for key, default in PROBE_DEFAULTS.items():
        out[key] = out.get(key) or default
    if "httpGet" in out:
        get = {"scheme": "HTTP", "path": "/", **out["httpGet"]}
        if get.get("httpHeaders"):
            get["httpHeaders"] = {h.get("name"): _value_hash(h.get("value", "")) for h in get["httpHeaders"]}
        out["httpGet"] = get
    if "grpc" in out:
        out["grpc"] = {"service": "", **out["grpc"]}
    if "exec" in out:
        out["exec"] = {"command": _value_hash(out["exec"].get("command"))}
    return out


def _flat(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flat(v, f"{prefix}.{k}", out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flat(v, f"{prefix}[{i}]", out)
    else:
        out[prefix] = value


def owned_fields(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The owned fields of a Deployment or StatefulSet (rendered or live) as flat paths → comparable values:
    ``containers.<name>.image``, ``containers.<name>.env.<VAR>``, ``containers.<name>.resources.limits.cpu``,
    ``containers.<name>.readinessProbe.httpGet.path``…, and ``replicas`` when set. Empty for other kinds."""
    if manifest.get("kind") not in ("Deployment", "StatefulSet"):
        return {}
    spec = manifest.get("spec") or {}
    out: dict[str, Any] = {}
    if spec.get("replicas") is not None:
        out["replicas"] = spec["replicas"]
    pod = (spec.get("template") or {}).get("spec") or {}
    for c in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
        at = f"{CONTAINER_PREFIX}{c.get('name', '?')}"
        out[f"{at}.image"] = c.get("image")
        for entry in c.get("env") or []:
            out[f"{at}.env.{entry.get('name')}"] = _env(entry)
        for section, values in sorted((c.get("resources") or {}).items()):
            if isinstance(values, Mapping):  # limits, requests (claims is a list: not owned here)
                for name, amount in sorted(values.items()):
                    out[f"{at}.resources.{section}.{name}"] = quantity(amount)
        for kind in PROBES:
            if c.get(kind):
                _flat(_probe(c[kind]), f"{at}.{kind}", out)
    return out


def drifted(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(path, live value, desired value)`` for every owned field that differs: each container field on either
    side (something added, removed or changed out of band), and ``replicas`` when the rendering sets them."""
    paths = {p for p in (*desired, *live) if p.startswith(CONTAINER_PREFIX)}
    if "replicas" in desired:
        paths.add("replicas")
    return [(p, live.get(p), desired.get(p)) for p in sorted(paths) if live.get(p) != desired.get(p)]
