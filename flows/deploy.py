"""``deploy-helix``: load the descriptor → render → read the live state → plan (published) → approval in prod →
apply in dependency order with health gates → ``init-helix-db`` → status (published).

The same flow serves every target (``drivers/target.py``): on the engine, containers rolled with health gates
(``tasks/engine.py``); on Kubernetes, server-side apply with workloads gated on their rollouts and objects the
rendering no longer has pruned by label (``tasks/kube.py``); under one lease, plan artifact, approval, audit
gate and change record.

Orchestration only: every side effect is a task in ``tasks/``; every decision comes from the pure core.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, pause_flow_run
from prefect.artifacts import create_markdown_artifact
from prefect.input import RunInput
from prefect.runtime import flow_run

from flows.params import EnvName, run_name
from drivers.target import Connection
from helix_ops.guide import NEO4J_BOLT_PORT
from helix_ops.plan import Plan
from flows.init_db import init_helix_db
from flows.lease import environment_lease
from tasks.target import open_environment


class Approval(RunInput):
    """What an operator answers at the prod approval gate."""

    approve: bool
    reason: str = ""


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


@flow(name="deploy-helix", log_prints=False, flow_run_name=run_name("deploy-{env}"))
def deploy_helix(env: EnvName = "local", descriptor: str | None = None, engine_url: str | None = None,
                 health_timeout_s: float = 180, lease_ttl_s: float = 120, lease_wait_s: float = 1800,
                 run_init_db: bool = True, container_labels: dict[str, str] | None = None,
                 audit_override: str = "", kubeconfig: str | None = None, kube_context: str | None = None,
                 cluster_block: str | None = None, neo4j_uri: str | None = None,
                 docker_host_block: str | None = None) -> dict[str, Any]:
    """Deploy (or converge) one Helix environment on a container engine or a Kubernetes cluster.

    Args:
        env: the environment name; its descriptor is ``deployments/<env>.yaml`` unless ``descriptor`` is given.
        descriptor: path of a descriptor file (overrides ``env``'s default path).
        engine_url / docker_host_block (target ``engine``): the Docker Engine API address (``unix:///…``,
            ``tcp://``, ``ssh://``) or a prefect-docker ``DockerHost`` block naming it; default: ``DOCKER_HOST``
            or the local socket.
        health_timeout_s: how long each new replica may take to become healthy (on Kubernetes: each workload's
            rollout deadline; missed: the previous pod template is applied again and the flow fails).
        lease_ttl_s / lease_wait_s: the environment lease: how long it outlives a crashed run, and how long a
            second deploy waits for the first.
        run_init_db: run ``init-helix-db`` after the services are healthy (Neo4j reached through the target:
            a published port, or a port-forward through the API server).
        container_labels: extra labels on every container (the test bed uses them for clean-up).
        audit_override: in prod, apply even though a required security-checklist item fails; the reason is
            recorded in the audit artifact.
        kubeconfig / kube_context / cluster_block (target ``kubernetes``): the cluster, from a kubeconfig file
            (and context) or a prefect-kubernetes ``KubernetesClusterConfig`` block; none: ``$KUBECONFIG``,
            ``~/.kube/config`` or, inside a pod, its service account.
        neo4j_uri: a Bolt URI for ``init-helix-db`` instead of the target's endpoint.

    Example: ``prefect deployment run deploy-helix/local`` or ``deploy_helix(env="local")``.
    """
    logger = get_run_logger()
    desc, config_text, target, steps = open_environment(env, descriptor, Connection(
        engine_url=engine_url, docker_host_block=docker_host_block, container_labels=container_labels or {},
        kubeconfig=kubeconfig, kube_context=kube_context, cluster_block=cluster_block))

    owner = f"flow-run/{flow_run.get_id() or 'local'}"
    with environment_lease(desc.environment, owner, ttl_s=lease_ttl_s, wait_s=lease_wait_s):
        plan = steps.plan_deploy(target, desc, config_text)
        for line in plan.lines():
            logger.info("plan: %s", line)
        create_markdown_artifact(plan_markdown(desc.environment, plan), key=f"deploy-plan-{desc.environment}",
                                 description=f"deploy-helix plan for {desc.environment}")
        if not _approved(desc, target, plan, audit_override):
            return {"environment": desc.environment, "applied": False, "plan": plan.to_dict()}
        changed = _apply_recorded(target, steps, desc, config_text, plan, health_timeout_s, owner)
        if run_init_db:
            if neo4j_uri:
                init_helix_db(neo4j_uri=neo4j_uri, credentials_block=desc.credentials.neo4j)
            else:
                with target.endpoint("neo4j", NEO4J_BOLT_PORT) as (host, port):
                    init_helix_db(neo4j_uri=f"bolt://{host}:{port}", credentials_block=desc.credentials.neo4j)
        rows = steps.deploy_status(target, desc)
    create_markdown_artifact(status_markdown(desc.environment, rows), key=f"helix-status-{desc.environment}",
                             description=f"Helix {desc.environment} after deploy")
    unhealthy = [r["service"] for r in rows if not r.pop("healthy")]
    return {"environment": desc.environment, "flow_run_id": str(flow_run.get_id()), "applied": not plan.is_noop,
            "plan": plan.to_dict(), "changed": changed, "status": rows, "unhealthy": unhealthy}


def _approved(desc, target, plan: Plan, audit_override: str) -> bool:
    """The prod gate: the security audit, then an operator's answer (a no-op plan needs neither)."""
    if desc.environment != "prod" or plan.is_noop:
        return True
    from tasks.audit import require_audit_pass

    require_audit_pass(desc, target, override_reason=audit_override or None)
    answer = pause_flow_run(wait_for_input=Approval, timeout=3600)
    if not answer.approve:
        get_run_logger().warning("deploy of prod not approved: %s", answer.reason or "(no reason)")
    return answer.approve


def _apply_recorded(target, steps, desc, config_text, plan: Plan, deadline_s: float, who: str) -> list[str]:
    """Apply ``plan`` on the target and append an audit record of what happened (a no-op plan records none)."""
    from helix_ops.changes import AuditRecord
    from tasks.records import record_change

    if plan.is_noop:
        return []
    counts = plan.counts()
    images = {c.identity: next((d.new for d in c.diff if d.path == "image"), None) for c in plan.changes
              if c.action != "noop"}
    change = {"plan": {k: v for k, v in counts.items() if k != "noop"}}
    try:
        changed = steps.apply_deploy(target, desc, config_text, plan, deadline_s, log=get_run_logger().info)
    except Exception as exc:
        record_change(AuditRecord.now(environment=desc.environment, action="deploy", triggered_by=who,
                                      change=change, before={}, after={}, result="failed", detail=str(exc)))
        raise
    after = {i: v for i, v in images.items() if v}
    record_change(AuditRecord.now(environment=desc.environment, action="deploy", triggered_by=who, change=change,
                                  before={}, after=after, result="succeeded",
                                  detail=f"{len(changed)} object(s) changed"))
    return changed
