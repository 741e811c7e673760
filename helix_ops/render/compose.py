"""Render the stack as a Compose document (a dict), fixed where the guide's Compose file fails.

* no ``version:``; no ``container_name`` (services scale); only the load balancer publishes a host port;
* Neo4j 5 setting names; health checks that reflect the server (Bolt via cypher-shell, RESP PING, HTTP);
* secrets are ``${VAR:?...}`` references to ``.env``, never values; no password on any command line
  (Redis reads it from a config file written at start, redis-cli from ``REDISCLI_AUTH``);
* a Neo4j cluster and Redis Sentinel members become numbered services (``neo4j``, ``neo4j-2``, ...), since
  Compose replicas have no identity of their own.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from helix_ops.errors import RenderError
from helix_ops.quantities import compose_cpus, compose_memory
from helix_ops.stack import (
    DERIVED_SECRETS,
    SECRET_ENV,
    EnvVar,
    Probe,
    ServiceSpec,
    Stack,
    neo4j_member_env,
    redis_member_env,
    sentinel_member_env,
)

NETWORK = "helix"
ENV_FILE_HINT = "set {var} in .env"


def render_compose(stack: Stack) -> dict[str, Any]:
    """The Compose document for ``stack`` (services in apply order).

    Secrets are ``${VAR}`` references resolved by Compose from ``.env`` (see :func:`env_file_keys`).
    """
    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    for svc in stack.services:
        for member in member_names(svc):
            services[member] = _service(stack, svc, member)
            volumes.update({v: {} for v in _named_volumes(svc, member)})
    doc: dict[str, Any] = {"name": project_name(stack), "services": services}
    if volumes:
        doc["volumes"] = volumes
    doc["networks"] = {NETWORK: {"driver": "bridge"}}
    return doc


def project_name(stack: Stack) -> str:
    """The Compose project name: the descriptor's project, suffixed with the environment unless it has it."""
    project, env = stack.descriptor.project, stack.environment
    return project if project.endswith(f"-{env}") else f"{project}-{env}"


def env_file_keys(stack: Stack) -> list[str]:
    """The variables the ``.env`` file next to the Compose file must define (values from Prefect blocks)."""
    keys = set()
    for key in stack.secret_keys():
        base = DERIVED_SECRETS[key][1] if key in DERIVED_SECRETS else key
        keys.add(SECRET_ENV[base])
    return sorted(keys)


def member_names(svc: ServiceSpec) -> list[str]:
    """Compose service names: one per member of a stateful set (``neo4j``, ``neo4j-2``, ...), else one."""
    if not svc.stateful or svc.replicas == 1:
        return [svc.name]
    return [svc.name] + [f"{svc.name}-{i}" for i in range(2, svc.replicas + 1)]


def secret_reference(key: str) -> str:
    """``neo4j-password`` → ``${NEO4J_PASSWORD:?set NEO4J_PASSWORD in .env}``; derived keys composed."""
    if key in DERIVED_SECRETS:
        prefix, base = DERIVED_SECRETS[key]
        return prefix + secret_reference(base)
    var = SECRET_ENV[key]
    return "${%s:?%s}" % (var, ENV_FILE_HINT.format(var=var))


def escape(text: str) -> str:
    """Escape ``$`` so Compose passes it to the container literally."""
    return text.replace("$", "$$")


def credentials_reference(var: EnvVar) -> str:
    """``NEO4J_USER`` → ``${NEO4J_USER:-neo4j}``: from ``.env`` (where helix-ops writes the blocks' value),
    the stack's default when unset."""
    return "${%s:-%s}" % (var.name, var.value or "")


def _environment(env: list[EnvVar]) -> dict[str, str]:
    return {e.name: secret_reference(e.secret) if e.secret else
            credentials_reference(e) if e.from_credentials else escape(e.value or "") for e in env}


def _member_env(stack: Stack, svc: ServiceSpec, member: str) -> list[EnvVar]:
    d = stack.descriptor
    if svc.name == "neo4j":
        return neo4j_member_env(d, member_names(svc), member)
    if svc.name == "redis":
        return redis_member_env("redis", member)
    if svc.name == "redis-sentinel":
        return sentinel_member_env("redis", member)
    return []


def _service(stack: Stack, svc: ServiceSpec, member: str) -> dict[str, Any]:
    out: dict[str, Any] = {"image": svc.image}
    if svc.command:
        out["entrypoint"] = [escape(part) for part in svc.command]
    env = [*svc.env, *_member_env(stack, svc, member)]
    if env:
        out["environment"] = _environment(env)
    if svc.depends_on:
        out["depends_on"] = {dep: {"condition": "service_healthy"} for dep in svc.depends_on}
    out["healthcheck"] = healthcheck(svc.probe, svc)
    if svc.name == "nginx":
        out["ports"] = [{"target": svc.port, "published": str(stack.descriptor.services.nginx.host_port),
                         "protocol": "tcp"}]
    else:
        out["expose"] = [str(p.port) for p in svc.ports]
    mounts = _mounts(svc, member)
    if mounts:
        out["volumes"] = mounts
    out["deploy"] = _deploy(svc)
    out["restart"] = "unless-stopped"
    out["labels"] = {"helix-ops.environment": stack.environment, "helix-ops.service": svc.name}
    if svc.name == "redis-sentinel":
        out["networks"] = {NETWORK: {"aliases": ["redis-sentinel"]}}
    else:
        out["networks"] = [NETWORK]
    return out


def _deploy(svc: ServiceSpec) -> dict[str, Any]:
    r = svc.resources
    deploy: dict[str, Any] = {}
    if not svc.stateful:
        # `mode: replicated` is the specification's default, spelt out because podman-compose reads
        # `replicas` only next to it.
        deploy["mode"] = "replicated"
        deploy["replicas"] = svc.replicas
    deploy["resources"] = {
        "limits": {"memory": compose_memory(r.limit_memory), "cpus": compose_cpus(r.limit_cpu)},
        "reservations": {"memory": compose_memory(r.request_memory), "cpus": compose_cpus(r.request_cpu)},
    }
    if svc.scalable:
        deploy["update_config"] = {"parallelism": 1, "order": "start-first", "failure_action": "rollback"}
    elif not svc.stateful:
        deploy["update_config"] = {"parallelism": 1, "order": "stop-first", "failure_action": "rollback"}
    return deploy


def _named_volumes(svc: ServiceSpec, member: str) -> list[str]:
    return [f"{member}_{m.volume}" for m in svc.mounts if m.kind != "config"]


CONFIG_FILES = {"helix-config": "./helix.config.yaml", "nginx-config": "./nginx.conf", "nginx-certs": "./certs"}
"""Files rendered or supplied next to the Compose file, bind-mounted read-only."""


def _mounts(svc: ServiceSpec, member: str) -> list[str]:
    out = []
    for m in svc.mounts:
        if m.kind == "config":
            out.append(f"{CONFIG_FILES[m.volume]}:{m.path}:ro")
        else:
            out.append(f"{member}_{m.volume}:{m.path}")
    return out


def healthcheck(probe: Probe, svc: ServiceSpec) -> dict[str, Any]:
    """A real health check: HTTP GET, Bolt ``RETURN 1`` with credentials from the environment, or PING."""
    return {
        "test": _health_test(probe, svc),
        "interval": f"{probe.period}s",
        "timeout": f"{probe.timeout}s",
        "retries": probe.failures,
        "start_period": f"{probe.initial_delay}s",
    }


def _health_test(probe: Probe, svc: ServiceSpec) -> list[str]:
    url = f"http://127.0.0.1:{probe.port}{probe.path or '/'}"
    if probe.kind == "http" and svc.role == "load-balancer":
        return ["CMD", "wget", "-q", "-O", "/dev/null", url]
    if probe.kind == "http":
        script = f"fetch('{url}').then(r=>process.exit(r.ok?0:1)).catch(()=>process.exit(1))"
        return ["CMD", "node", "-e", script]
    if probe.kind == "bolt":
        return [
            "CMD-SHELL",
            'NEO4J_USERNAME="$${NEO4J_AUTH%%/*}" NEO4J_PASSWORD="$${NEO4J_AUTH#*/}" '
            f"cypher-shell -a bolt://127.0.0.1:{probe.port} 'RETURN 1'",
        ]
    return ["CMD", "redis-cli", "-p", str(probe.port), "ping"]


@cache
def compose_schema() -> dict[str, Any]:
    """The Compose specification JSON schema vendored in ``helix_ops/schemas/compose-spec.json``."""
    text = resources.files("helix_ops").joinpath("schemas/compose-spec.json").read_text(encoding="utf-8")
    return json.loads(text)


def validate_compose(doc: dict[str, Any]) -> None:
    """Raise :class:`RenderError` (with the JSON path) if ``doc`` breaks the Compose specification."""
    import jsonschema

    schema = compose_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        first = errors[0]
        path = ".".join(str(p) for p in first.absolute_path) or "(top level)"
        raise RenderError(f"compose: {path}: {first.message}")
