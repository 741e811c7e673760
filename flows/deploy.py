"""``deploy-helix``: load the descriptor → render → read the live state → plan (published) → approval in prod →
apply in dependency order with health gates → ``init-helix-db`` → status (published).

Orchestration only: every side effect is a task in ``tasks/``; every decision comes from the pure core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, pause_flow_run
from prefect.artifacts import create_markdown_artifact
from prefect.input import RunInput
from prefect.runtime import flow_run

from helix_ops.descriptor import load_descriptor
from helix_ops.plan import Plan, compose_objects, compute_plan, engine_objects, template_hash
from helix_ops.render.compose import render_compose
from helix_ops.stack import build_stack
from tasks.engine import (
    EngineTarget,
    ProbeSpec,
    apply_network,
    apply_service,
    apply_volume,
    connect_engine,
    neo4j_endpoint,
    read_current_state,
    remove_service,
    service_status,
)
from flows.init_db import init_helix_db
from tasks.lease import environment_lease


class Approval(RunInput):
    """What an operator answers at the prod approval gate."""

    approve: bool
    reason: str = ""


def descriptor_path(env: str, path: str | None) -> Path:
    """``deployments/<env>.yaml`` of the working directory, unless a path is given."""
    return Path(path) if path else Path("deployments") / f"{env}.yaml"


def plan_markdown(env: str, plan: Plan) -> str:
    rows = [f"| {c.action} | `{c.identity}` | {c.reason} | "
            + "<br>".join(f"`{d.path}`: {d.old!r} → {d.new!r}" for d in c.diff) + " |" for c in plan.changes]
    counts = ", ".join(f"{n} {a}" for a, n in plan.counts().items())
    return "\n".join([f"# Deploy plan for `{env}`", "", counts, "",
                      "| action | object | reason | changes |", "|---|---|---|---|", *rows])


def status_markdown(env: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"# Helix `{env}` status", "", "| service | image | replicas | health | endpoint |", "|---|---|---|---|---|"]
    lines += [f"| {r['service']} | `{r['image']}` | {r['replicas']} | {r['health']} | {r['endpoint']} |" for r in rows]
    return "\n".join(lines)


@flow(name="deploy-helix", log_prints=False)
def deploy_helix(env: str = "local", descriptor: str | None = None, engine_url: str | None = None,
                 health_timeout_s: float = 180, lease_ttl_s: float = 120, lease_wait_s: float = 1800,
                 run_init_db: bool = True, container_labels: dict[str, str] | None = None,
                 audit_override: str = "") -> dict[str, Any]:
    """Deploy (or converge) one Helix environment on a container engine.

    Args:
        env: the environment name; its descriptor is ``deployments/<env>.yaml`` unless ``descriptor`` is given.
        descriptor: path of a descriptor file (overrides ``env``'s default path).
        engine_url: the Docker Engine API address (``unix:///…``); default: ``DOCKER_HOST`` or the local socket.
        health_timeout_s: how long each new replica may take to become healthy.
        lease_ttl_s / lease_wait_s: the environment lease: how long it outlives a crashed run, and how long a
            second deploy waits for the first.
        run_init_db: run ``init-helix-db`` after the services are healthy.
        container_labels: extra labels on every container (the test bed uses them for clean-up).
        audit_override: in prod, apply even though a required security-checklist item fails; the reason is
            recorded in the audit artifact.

    Example: ``prefect deployment run deploy-helix/local`` or ``deploy_helix(env="local")``.
    """
    logger = get_run_logger()
    desc = load_descriptor(descriptor_path(env, descriptor))
    stack = build_stack(desc)
    doc = render_compose(stack)
    target = EngineTarget(engine_url, desc.project, desc.environment, container_labels or {})
    connect_engine(target)

    owner = f"flow-run/{flow_run.get_id() or 'local'}"
    with environment_lease(desc.environment, owner, ttl_s=lease_ttl_s, wait_s=lease_wait_s):
        current = read_current_state(target)
        plan = compute_plan(engine_objects(doc), current)
        for line in plan.lines():
            logger.info("plan: %s", line)
        create_markdown_artifact(plan_markdown(desc.environment, plan), key=f"deploy-plan-{desc.environment}",
                                 description=f"deploy-helix plan for {desc.environment}")

        if desc.environment == "prod" and not plan.is_noop:
            from tasks.audit import require_audit_pass

            require_audit_pass(desc, engine_url, override_reason=audit_override or None)
            answer = pause_flow_run(wait_for_input=Approval, timeout=3600)
            if not answer.approve:
                logger.warning("deploy of prod not approved: %s", answer.reason or "(no reason)")
                return {"environment": desc.environment, "applied": False, "plan": plan.to_dict()}

        by_identity = {o.identity: o for o in compose_objects(doc)}
        changed: list[str] = []
        for change in plan.changes:
            kind, name = change.identity.split("/", 1)
            if change.action == "noop":
                continue
            if change.action == "delete":
                if kind == "service":
                    remove_service(target, name)
                    changed.append(name)
                continue
            obj = by_identity[change.identity]
            if kind == "network":
                apply_network(target, name, obj.spec, obj.spec_hash)
            elif kind == "volume":
                apply_volume(target, name, obj.spec_hash)
            else:
                svc = stack.service(name)
                probe = ProbeSpec(svc.probe.kind, svc.probe.port, svc.probe.path)
                apply_service(target, name, obj.spec, template_hash(obj.spec), probe, desc,
                              health_deadline_s=health_timeout_s)
                changed.append(name)

        if run_init_db:
            init_helix_db(neo4j_uri=neo4j_endpoint(target), credentials_block=desc.credentials.neo4j)

        probes = {s.name: ProbeSpec(s.probe.kind, s.probe.port, s.probe.path) for s in stack.services}
        rows = service_status(target, probes, desc)
    create_markdown_artifact(status_markdown(desc.environment, rows), key=f"helix-status-{desc.environment}",
                             description=f"Helix {desc.environment} after deploy")
    unhealthy = [r["service"] for r in rows if not r["health"] or r["health"].startswith(("unhealthy", "absent"))]
    return {"environment": desc.environment, "flow_run_id": str(flow_run.get_id()), "applied": not plan.is_noop,
            "plan": plan.to_dict(),
            "changed": changed, "status": rows, "unhealthy": unhealthy}
