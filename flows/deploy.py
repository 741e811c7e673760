"""``deploy-helix``: load the descriptor → render → read the live state → plan (published) → approval in prod →
apply in dependency order with health gates → ``init-helix-db`` → status (published).

The same flow serves both targets: a descriptor with ``target: kubernetes`` is applied to its cluster by
server-side apply (``tasks/kube.py``), workloads gated on their rollouts, objects the rendering no longer has
pruned by label, under the same lease, plan artifact, approval and audit gate as on the container engine.

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
                 audit_override: str = "", kubeconfig: str | None = None, kube_context: str | None = None,
                 cluster_block: str | None = None, neo4j_uri: str | None = None) -> dict[str, Any]:
    """Deploy (or converge) one Helix environment on a container engine or a Kubernetes cluster.

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
        kubeconfig / kube_context / cluster_block (target ``kubernetes``): the cluster, from a kubeconfig file
            (and context) or a prefect-kubernetes ``KubernetesClusterConfig`` block; none: ``$KUBECONFIG``,
            ``~/.kube/config`` or, inside a pod, its service account. ``health_timeout_s`` is each workload's
            rollout deadline (missed: the previous pod template is applied again and the flow fails).
        neo4j_uri (target ``kubernetes``): a Bolt URI this process reaches (a port-forward, a LoadBalancer) for
            ``init-helix-db``; without it the migrations are not run from here (see docs/kubernetes.md).

    Example: ``prefect deployment run deploy-helix/local`` or ``deploy_helix(env="local")``.
    """
    logger = get_run_logger()
    desc = load_descriptor(descriptor_path(env, descriptor))
    if desc.target == "kubernetes":
        return _deploy_kubernetes(desc, descriptor_path(env, descriptor), health_timeout_s, lease_ttl_s,
                                  lease_wait_s, run_init_db, audit_override, kubeconfig, kube_context,
                                  cluster_block, neo4j_uri)
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


def _approved(desc, plan: Plan, audit_override: str) -> bool:
    """The prod gate: the security audit, then an operator's answer (a no-op plan needs neither)."""
    if desc.environment != "prod" or plan.is_noop:
        return True
    from tasks.audit import require_audit_pass

    require_audit_pass(desc, None, override_reason=audit_override or None)
    answer = pause_flow_run(wait_for_input=Approval, timeout=3600)
    if not answer.approve:
        get_run_logger().warning("deploy of prod not approved: %s", answer.reason or "(no reason)")
    return answer.approve


def _apply_recorded(target, desc, config_text, plan: Plan, deadline_s: float, who: str) -> list[str]:
    """Apply ``plan`` on the cluster and append an audit record of what happened (a no-op plan records none)."""
    from helix_ops.changes import AuditRecord
    from tasks.kube import apply_plan
    from tasks.records import record_change

    if plan.is_noop:
        return []
    counts = plan.counts()
    images = {c.identity: next((d.new for d in c.diff if d.path == "image"), None) for c in plan.changes
              if c.action != "noop"}
    change = {"plan": {k: v for k, v in counts.items() if k != "noop"}}
    try:
        changed = apply_plan(target, desc, config_text, plan, deadline_s, log=get_run_logger().info)
    except Exception as exc:
        record_change(AuditRecord.now(environment=desc.environment, action="deploy", triggered_by=who,
                                      change=change, before={}, after={}, result="failed", detail=str(exc)))
        raise
    after = {i: v for i, v in images.items() if v}
    record_change(AuditRecord.now(environment=desc.environment, action="deploy", triggered_by=who, change=change,
                                  before={}, after=after, result="succeeded",
                                  detail=f"{len(changed)} object(s) changed"))
    return changed


def _deploy_kubernetes(desc, path: Path, health_timeout_s: float, lease_ttl_s: float, lease_wait_s: float,
                       run_init_db: bool, audit_override: str, kubeconfig: str | None, kube_context: str | None,
                       cluster_block: str | None, neo4j_uri: str | None) -> dict[str, Any]:
    from tasks.kube import KubeTarget, connect_kube, helix_config_text, kube_status, plan_kube

    logger = get_run_logger()
    target = KubeTarget.for_descriptor(desc, kubeconfig, kube_context, cluster_block=cluster_block)
    config_text = helix_config_text(desc, path)
    version = connect_kube(target)
    logger.info("Kubernetes API server %s (%s)", version["server"], version["gitVersion"])
    owner = f"flow-run/{flow_run.get_id() or 'local'}"
    with environment_lease(desc.environment, owner, ttl_s=lease_ttl_s, wait_s=lease_wait_s):
        plan = plan_kube(target, desc, config_text)
        for line in plan.lines():
            logger.info("plan: %s", line)
        create_markdown_artifact(plan_markdown(desc.environment, plan), key=f"deploy-plan-{desc.environment}",
                                 description=f"deploy-helix plan for {desc.environment}")
        if not _approved(desc, plan, audit_override):
            return {"environment": desc.environment, "applied": False, "plan": plan.to_dict()}
        changed = _apply_recorded(target, desc, config_text, plan, health_timeout_s, owner)
        if run_init_db and neo4j_uri:
            init_helix_db(neo4j_uri=neo4j_uri, credentials_block=desc.credentials.neo4j)
        elif run_init_db:
            logger.info("init-helix-db not run: on Kubernetes pass neo4j_uri (a port-forward or a Bolt address "
                        "this worker reaches)")
        rows = kube_status(target)
    create_markdown_artifact(status_markdown(desc.environment, rows), key=f"helix-status-{desc.environment}",
                             description=f"Helix {desc.environment} after deploy")
    unhealthy = [r["service"] for r in rows if r["health"] != "ready"]
    return {"environment": desc.environment, "flow_run_id": str(flow_run.get_id()), "applied": not plan.is_noop,
            "plan": plan.to_dict(), "changed": changed, "status": rows, "unhealthy": unhealthy}
