"""Requested changes to a running environment, validated before anything is touched (pure).

* :func:`with_images` — the descriptor with new image tags for some services (upgrade-helix);
* :func:`with_replicas` — the descriptor with a new replica count for one service (scale-helix);
* :func:`images_from_state` — the images services run now, as read back by a driver (for rollbacks);
* :class:`AuditRecord` — what changed, when, from, to, the result and who triggered it.

Every result goes through the same validation and scaling rules as a descriptor file, so a request that
breaks a rule (mcp-graph above one replica, an unknown service, a malformed tag) is refused with one
:class:`ConfigError` naming the parameter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from helix_ops import guide
from helix_ops._validation import validate_model
from helix_ops.descriptor import Descriptor
from helix_ops.errors import ConfigError
from helix_ops.plan import CurrentState

DATA_SERVICES = frozenset({"neo4j", "redis"})
"""Upgraded only when asked explicitly."""


def _rebuild(descriptor: Descriptor, data: dict[str, Any], param: str) -> Descriptor:
    from helix_ops.rules import check_rules

    try:
        new = validate_model(Descriptor, data)
        check_rules(new)
    except ConfigError as exc:
        raise ConfigError(f"{param} ({exc.path})", exc.message) from None
    return new


def split_image(ref: str) -> tuple[str | None, str]:
    """``repo:tag`` → (repo, tag); a bare ``tag`` → (None, tag). A registry port is not a tag."""
    head, sep, tail = ref.rpartition(":")
    if sep and "/" not in tail:
        return head, tail
    return None, ref


def with_images(descriptor: Descriptor, images: Mapping[str, str], include_data_services: bool = False) -> Descriptor:
    """``descriptor`` with ``images`` (service → tag, or ``repository:tag``) applied.

    Neo4j and Redis are refused unless ``include_data_services``; unknown services and bad tags are refused.
    """
    if not images:
        raise ConfigError("images", "name at least one service and its new tag, e.g. {\"dashboard\": \"1.4.2\"}")
    data = descriptor.model_dump(by_alias=True, mode="json")
    for service, ref in images.items():
        if service not in guide.SERVICE_NAMES:
            raise ConfigError(f"images.{service}", f"unknown service (expected one of {', '.join(guide.SERVICE_NAMES)})")
        if service in DATA_SERVICES and not include_data_services:
            raise ConfigError(f"images.{service}", "is a data service: upgrade it only with include_data_services=true")
        if not isinstance(ref, str) or not ref:
            raise ConfigError(f"images.{service}", "must be a tag or repository:tag string")
        repo, tag = split_image(ref)
        image = data["services"][service]["image"]
        image["tag"] = tag
        if repo:
            image["repository"] = repo
    return _rebuild(descriptor, data, "images")


def with_replicas(descriptor: Descriptor, service: str, replicas: int) -> Descriptor:
    """``descriptor`` with ``service`` at ``replicas``; the scaling rules apply (mcp-graph stays at 1)."""
    if service not in guide.APP_SERVICES:
        raise ConfigError("service", f"{service!r} does not scale (scalable: {', '.join(sorted(guide.SCALABLE))})")
    if service not in guide.SCALABLE and replicas != 1:
        raise ConfigError("replicas", f"{service} is the single writer to Neo4j and runs exactly one replica")
    data = descriptor.model_dump(by_alias=True, mode="json")
    data["services"][service]["replicas"] = replicas
    return _rebuild(descriptor, data, "replicas")


def images_from_state(state: CurrentState) -> dict[str, str]:
    """Service → the image its containers run now (from the ``image`` field a driver reports)."""
    out = {}
    for obj in state.objects:
        kind, _, name = obj.identity.partition("/")
        if kind == "service" and obj.fields.get("image"):
            out[name] = str(obj.fields["image"])
    return out


class AuditRecord(BaseModel):
    """One change to an environment, as appended to its audit log and published as an artifact."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    environment: str
    action: Literal["deploy", "upgrade", "scale", "rollback", "rotate", "restore", "prune", "break-lease"]
    at: str
    triggered_by: str
    change: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]
    result: Literal["succeeded", "rolled-back", "failed", "refused"]
    detail: str = ""
    approval: dict[str, Any] | None = None
    """The operator's answer when one was asked: approved, approver, reason, the question's key."""

    @classmethod
    def now(cls, **fields: Any) -> AuditRecord:
        return cls(at=datetime.now(timezone.utc).isoformat(timespec="seconds"), **fields)

    def _approval_lines(self) -> list[str]:
        if not self.approval:
            return []
        verdict = "approved" if self.approval.get("approved") else "refused"
        return [f"{verdict} by {self.approval.get('approver')}: {self.approval.get('reason')}", ""]

    def line(self) -> str:
        """The record as one JSON line (the audit log's format)."""
        return json.dumps(self.model_dump(), sort_keys=True)

    def markdown(self) -> str:
        rows = [f"| {k} | `{self.before.get(k, '')}` | `{self.after.get(k, '')}` |"
                for k in sorted(set(self.before) | set(self.after))]
        return "\n".join([f"# {self.action} of `{self.environment}`: {self.result}", "",
                          f"at {self.at}, triggered by {self.triggered_by}", "", self.detail, "",
                          *self._approval_lines(),
                          "| service | before | after |", "|---|---|---|", *rows])
