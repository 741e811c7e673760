"""What audit-helix knows: the facts :func:`helix_ops.audit.evaluate` checks, and the outcome type of a check.

``tasks/audit.py`` gathers :class:`AuditFacts` from the descriptor, the renderings, the credential blocks and
the live engine or namespace; ``None`` in a field means "not gathered" and its checks are ``skipped``
(:func:`skipped` says why, from ``gather_errors``). Secrets never get here as values: :func:`secret_facts`
reduces each one to :class:`SecretFacts` (length, character classes, whether it is a known weak value, its
block's ``rotated_at``).

Example::

    facts = AuditFacts("prod", "engine", now, tls=True,
                       neo4j_password=secret_facts("neo4j", value, rotated_at=block.rotated_at))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Status = Literal["pass", "fail", "warn", "excepted", "skipped"]

Result = tuple[Status, str]
"""A check's outcome: its status and what was seen."""

WEAK_VALUES = frozenset({
    "password", "neo4j", "redis", "admin", "changeme", "secret", "helix", "123456", "12345678", "letmein",
    "password123", "qwerty", "test", "default", "your-secret-here", "your-32-char-secret-here",
})


@dataclass(frozen=True)
class SecretFacts:
    """What the audit may know about one secret: never its value."""

    name: str
    length: int
    classes: int
    """How many of lowercase, uppercase, digits, other characters it uses."""
    weak: bool
    """A common word or a value from the guide's examples."""
    rotated_at: datetime | None = None


def secret_facts(name: str, value: str, rotated_at: datetime | None = None) -> SecretFacts:
    """Reduce a secret to its facts (call where the value is, then drop the value)."""
    classes = sum([any(c.islower() for c in value), any(c.isupper() for c in value),
                   any(c.isdigit() for c in value), any(not c.isalnum() for c in value)])
    weak = value.lower() in WEAK_VALUES or len(set(value)) <= 3
    return SecretFacts(name, len(value), classes, weak, rotated_at)


@dataclass(frozen=True)
class ContainerFacts:
    """A running container of the project: service, image reference, user and host-published ports."""

    name: str
    service: str
    image: str
    user: str
    published: tuple[tuple[int, str, int], ...] = ()
    """``(container port, host ip, host port)`` for every published port."""
    image_digest: str | None = None
    security: Mapping[str, Any] | None = None
    """Kubernetes: the container's effective security settings
    (:func:`helix_ops.audit_kubernetes.effective_security`)."""


@dataclass(frozen=True)
class ServiceFacts:
    """A live Kubernetes Service: its type, the ``app`` it selects, ``(port, targetPort, nodePort)`` per port
    and its externalIPs."""

    name: str
    type: str
    app: str | None
    ports: tuple[tuple[int, str, int | None], ...] = ()
    external_ips: tuple[str, ...] = ()


DATA_SERVICES = ("neo4j", "redis", "redis-sentinel")
DATABASE_PORTS = frozenset({7474, 7687, 6379, 26379})
"""Neo4j HTTP and Bolt, Redis, Sentinel: never reachable from outside the cluster."""


@dataclass(frozen=True)
class AuditFacts:
    """Everything :func:`helix_ops.audit.evaluate` looks at. ``None`` means "not gathered" (the check is skipped).

    Attributes:
        environment / target: the descriptor's environment and target (``engine`` / ``kubernetes``).
        tls: the descriptor's ``ingress.tls``; ``nginx_conf``: the rendered nginx.conf;
        kubernetes: the rendered manifests (NetworkPolicies, Ingress).
        neo4j_password / redis_password / nextauth_secret: facts of the block values.
        secret_ages: facts of every credential block (``rotated_at``).
        neo4j_unauthenticated_refused / neo4j_wrong_password_refused: live Bolt logins without/with a wrong
            password were refused. ``redis_unauthenticated_refused``: a PING without AUTH was refused.
        containers: the project's running containers (Kubernetes: every container of the namespace's
            Deployments and StatefulSets, with its security settings); ``live_nginx_conf``: nginx.conf read
            from the running load balancer; ``log_level``: the descriptor's log level.
        live_network_policies / services / configmap_leaks / role_rules (Kubernetes): read through the API
            server (see the attributes).
        now: the time of the audit (UTC).
    """

    environment: str
    target: str
    now: datetime
    tls: bool | None = None
    nginx_conf: str | None = None
    kubernetes: Sequence[Mapping[str, Any]] | None = None
    log_level: str | None = None
    neo4j_password: SecretFacts | None = None
    redis_password: SecretFacts | None = None
    nextauth_secret: SecretFacts | None = None
    secret_ages: Sequence[SecretFacts] | None = None
    neo4j_unauthenticated_refused: bool | None = None
    neo4j_wrong_password_refused: bool | None = None
    redis_unauthenticated_refused: bool | None = None
    containers: Sequence[ContainerFacts] | None = None
    live_nginx_conf: str | None = None
    load_balancer: str = "nginx"
    live_network_policies: Mapping[str, Mapping[str, Any]] | None = None
    """Kubernetes: name → spec of every NetworkPolicy in the namespace."""
    services: Sequence[ServiceFacts] | None = None
    """Kubernetes: every Service in the namespace."""
    configmap_leaks: Sequence[tuple[str, str]] | None = None
    """Kubernetes: ``(ConfigMap, key)`` whose value holds a secret value of the environment (never the value)."""
    role_name: str = "helix-ops"
    role_rules: Sequence[Mapping[str, Any]] | None = None
    """Kubernetes: the rules of helix-ops' live Role in the namespace (``()`` when there is no such Role)."""
    allowed_role_rules: Sequence[Mapping[str, Any]] | None = None
    """The rules of that Role in deployments/rbac/role.yaml: the most it may grant."""
    gather_errors: Mapping[str, str] = field(default_factory=dict)
    """Why a live fact is missing (``neo4j``: "no running container"), shown in the finding."""


def skipped(facts: AuditFacts, what: str, key: str) -> Result:
    """The result of a check whose fact was not gathered: ``skipped``, with why (``gather_errors[key]``)."""
    why = facts.gather_errors.get(key, "not gathered")
    return "skipped", f"{what} could not be checked: {why}"
