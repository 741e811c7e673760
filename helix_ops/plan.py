"""Plans: what to create, update, delete or leave alone, as data.

The desired side is a rendering (Compose services or Kubernetes objects) turned into
:class:`DesiredObject`s; the current side is a plain :class:`CurrentState` (from a driver or a JSON state
file): per object an identity, the spec hash the driver recorded (a container label, an annotation) and
the fields it could read. Nothing here performs I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from helix_ops.drift import CONTAINER_PREFIX, drifted, hidden, owned_fields
from helix_ops.errors import PlanError

Action = Literal["create", "update", "delete", "noop"]
REDACTED = "<redacted>"
HASH_LABEL = "helix-ops.spec-hash"
"""The label (engine) / annotation (Kubernetes) under which drivers record an object's spec hash."""


def spec_hash(spec: Any) -> str:
    """A stable hash of a rendered spec: 32 hex digits of SHA-256 over canonical JSON.

    Key order does not matter; fits a Kubernetes label value (≤ 63 characters).
    """
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class DesiredObject:
    """One object to exist: its identity, rendered spec, hash and the summary fields a driver can read."""

    identity: str
    spec: Mapping[str, Any]
    fields: Mapping[str, Any]
    secret: bool = False

    @property
    def spec_hash(self) -> str:
        """:func:`spec_hash` of the spec."""
        return spec_hash(self.spec)


@dataclass(frozen=True)
class CurrentObject:
    """One object as it is: identity, recorded spec hash (None if unknown), fields read from it."""

    identity: str
    spec_hash: str | None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CurrentState:
    """Everything helix-ops manages in an environment, as found."""

    objects: tuple[CurrentObject, ...] = ()

    def by_identity(self) -> dict[str, CurrentObject]:
        """Objects keyed by identity."""
        return {o.identity: o for o in self.objects}


@dataclass(frozen=True)
class FieldChange:
    """One field that differs: dotted path, current and desired value."""

    path: str
    old: Any
    new: Any


@dataclass(frozen=True)
class Change:
    """One step of a plan."""

    action: Action
    identity: str
    reason: str
    spec_hash: str | None = None
    diff: tuple[FieldChange, ...] = ()
    drift: bool = False
    """An update that takes back an out-of-band change (the live object's spec hash is the rendering's)."""


@dataclass(frozen=True)
class Plan:
    """Changes in the order to carry them out: creates/updates in apply order, then deletes in reverse."""

    changes: tuple[Change, ...]

    @property
    def is_noop(self) -> bool:
        """True when nothing would change."""
        return all(c.action == "noop" for c in self.changes)

    @property
    def drift(self) -> tuple[Change, ...]:
        """The updates that take back out-of-band changes (see :mod:`helix_ops.drift`)."""
        return tuple(c for c in self.changes if c.drift)

    def counts(self) -> dict[str, int]:
        """How many changes of each action."""
        return {a: sum(c.action == a for c in self.changes) for a in ("create", "update", "delete", "noop")}

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (for artifacts and ``helix-ops plan --json``)."""
        return {
            "counts": self.counts(),
            "changes": [
                {
                    "action": c.action,
                    "identity": c.identity,
                    "reason": c.reason,
                    "spec_hash": c.spec_hash,
                    "drift": c.drift,
                    "diff": [{"path": d.path, "old": d.old, "new": d.new} for d in c.diff],
                }
                for c in self.changes
            ],
        }

    def lines(self) -> list[str]:
        """Human-readable lines, one per change plus one per changed field."""
        out = []
        for c in self.changes:
            out.append(f"{c.action:<6} {c.identity}: {c.reason}")
            out += [f"         {d.path}: {d.old!r} -> {d.new!r}" for d in c.diff]
        counts = self.counts()
        out.append(", ".join(f"{n} {a}" for a, n in counts.items()))
        return out


def compute_plan(desired: Iterable[DesiredObject], current: CurrentState) -> Plan:
    """Compare the desired rendering with the current state.

    * desired but absent → create; present with the same spec hash → no-op with the reason;
    * present with another (or unknown) hash → update, with a diff of the fields the current state shows;
    * present but not desired → delete.
    """
    desired = list(desired)
    identities = [d.identity for d in desired]
    if len(set(identities)) != len(identities):
        raise PlanError(f"duplicate identities in the desired rendering: {sorted(_dupes(identities))}")
    now = current.by_identity()
    changes = [_compare(d, now.get(d.identity)) for d in desired]
    wanted = set(identities)
    gone = [o for o in current.objects if o.identity not in wanted]
    changes += [
        Change("delete", o.identity, "not in the desired rendering", o.spec_hash) for o in reversed(gone)
    ]
    return Plan(tuple(changes))


def _dupes(items: list[str]) -> set[str]:
    seen: set[str] = set()
    return {i for i in items if i in seen or seen.add(i)}  # type: ignore[func-returns-value]


def _compare(d: DesiredObject, now: CurrentObject | None) -> Change:
    new_hash = d.spec_hash
    if now is None:
        return Change("create", d.identity, f"absent{_at(d).replace(' at ', '; create at ')}", new_hash)
    if now.spec_hash == new_hash:
        drift = drifted(d.fields, now.fields) if any(k.startswith(CONTAINER_PREFIX) for k in d.fields) else []
        if drift:  # the annotation matches, but a field helix-ops owns was changed out of band
            return Change("update", d.identity, f"drift: {', '.join(p for p, _, _ in drift)} changed outside "
                                                f"helix-ops", new_hash,
                          tuple(FieldChange(p, _shown(old), _shown(new)) for p, old, new in drift), drift=True)
        state = f"already{_at(d)}" if _at(d) else "unchanged"
        return Change("noop", d.identity, f"{_name(d)} {state}, spec hash {new_hash}", new_hash)
    diff = field_diff(now.fields, d, d.secret)
    if not diff:
        diff = (FieldChange("(spec hash)", now.spec_hash, new_hash),)
    return Change("update", d.identity, f"spec hash {now.spec_hash} -> {new_hash}", new_hash, diff)


def _name(d: DesiredObject) -> str:
    return d.identity.rsplit("/", 1)[-1]


def _at(d: DesiredObject) -> str:
    image = d.fields.get("image")
    return f" at image {image}" if image else ""


def field_diff(current: Mapping[str, Any], d: DesiredObject, secret: bool = False) -> tuple[FieldChange, ...]:
    """Differences over the summary fields plus any field path the current state reports.

    Paths the current state reports are looked up in the flattened desired spec; secret values are redacted.
    """
    flat = flatten(d.spec)
    desired_fields = {**{k: flat.get(k) for k in current if k not in d.fields}, **d.fields}
    changes = []
    for path in sorted(set(desired_fields) | set(current)):
        old, new = current.get(path), desired_fields.get(path)
        if old != new:
            if secret:
                old, new = REDACTED, REDACTED
            changes.append(FieldChange(path, _shown(old), _shown(new)))
    return tuple(changes)


def _shown(value: Any) -> Any:
    """A value as a plan may show it: a hashed one (an env value, a probe header: helix_ops.drift) as REDACTED."""
    return REDACTED if hidden(value) else value


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [1]}}`` → ``{"a.b[0]": 1}``."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: value}


# --- desired objects from renderings ----------------------------------------------------------------------


def compose_objects(doc: Mapping[str, Any]) -> list[DesiredObject]:
    """Desired objects of a Compose document: networks and volumes first, then services in order."""
    objs = [DesiredObject(f"network/{n}", spec, {}) for n, spec in doc.get("networks", {}).items()]
    objs += [DesiredObject(f"volume/{n}", spec, {}) for n, spec in doc.get("volumes", {}).items()]
    for name, spec in doc["services"].items():
        fields = {"image": spec["image"]}
        if "replicas" in spec.get("deploy", {}):
            fields["replicas"] = spec["deploy"]["replicas"]
        objs.append(DesiredObject(f"service/{name}", spec, fields))
    return objs


def template_hash(service_spec: Mapping[str, Any]) -> str:
    """The hash of a Compose service without its replica count: what one replica is made from.

    Container-engine replicas are named after it, so scaling keeps the replicas that run and only adds or
    removes some (like a Kubernetes pod-template hash).
    """
    deploy = {k: v for k, v in service_spec.get("deploy", {}).items() if k != "replicas"}
    return spec_hash({**service_spec, "deploy": deploy})


def engine_service_hash(template: str, replicas: int) -> str:
    """The identity hash of a service on the container engine: its template hash and replica count."""
    return spec_hash({"template": template, "replicas": replicas})


def engine_objects(doc: Mapping[str, Any]) -> list[DesiredObject]:
    """Desired objects of a Compose document as the container-engine driver reads them back.

    Like :func:`compose_objects`, but a service's spec is ``{template, replicas}``, so the hash the driver
    can rebuild from container labels (template hash, running replicas) is comparable.
    """
    objs = []
    for obj in compose_objects(doc):
        if not obj.identity.startswith("service/"):
            objs.append(obj)
            continue
        replicas = int(obj.spec.get("deploy", {}).get("replicas", 1))
        objs.append(DesiredObject(obj.identity, {"template": template_hash(obj.spec), "replicas": replicas},
                                  {"image": obj.spec["image"], "replicas": replicas}))
    return objs


def kubernetes_objects(manifests: Iterable[Mapping[str, Any]]) -> list[DesiredObject]:
    """Desired objects of Kubernetes manifests (identity ``Kind/namespace/name``), Secrets redacted in diffs."""
    objs = []
    for m in manifests:
        meta = m["metadata"]
        identity = "/".join(p for p in (m["kind"], meta.get("namespace"), meta["name"]) if p)
        fields: dict[str, Any] = {}
        spec = m.get("spec", {})
        if "replicas" in spec:
            fields["replicas"] = spec["replicas"]
        containers = spec.get("template", {}).get("spec", {}).get("containers", [])
        if containers:
            fields["image"] = containers[0]["image"]
        fields.update(owned_fields(m))
        objs.append(DesiredObject(identity, m, fields, secret=m["kind"] == "Secret"))
    return objs


def state_of(desired: Iterable[DesiredObject]) -> CurrentState:
    """The state an environment is in once ``desired`` has been applied (what a driver would read back)."""
    return CurrentState(tuple(CurrentObject(d.identity, d.spec_hash, dict(d.fields)) for d in desired))


def parse_state(data: Any, source: str = "state") -> CurrentState:
    """A :class:`CurrentState` from JSON-ready data: ``{"objects": [{"identity", "spec_hash", "fields"}]}``."""
    from helix_ops._validation import validate_model
    from helix_ops.state_file import StateFile

    model = validate_model(StateFile, data, source)
    return CurrentState(tuple(CurrentObject(o.identity, o.spec_hash, dict(o.fields)) for o in model.objects))
