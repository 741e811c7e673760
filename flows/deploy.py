"""``deploy-helix``: load the descriptor → render → read the live state → plan (published) → approval by the
environment's policy → apply in dependency order with health gates → ``init-helix-db`` → status (published).

The same flow serves every target (``drivers/target.py``): on the engine, containers rolled with health gates
(``tasks/engine.py``); on Kubernetes, server-side apply with workloads gated on their rollouts and objects the
rendering no longer has pruned by label (``tasks/kube.py``); plan artifact, approval, lease, audit gate and
change record are the change gate's (``flows/gate.py``).

Orchestration only: every side effect is a task in ``tasks/``; every decision comes from the pure core.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.params import EnvName, run_name
from drivers.target import Connection
from helix_ops.errors import DriftRefused
from helix_ops.guide import NEO4J_BOLT_PORT
from helix_ops.migrations import DEFAULT_UID_PREFIX
from helix_ops.plan import Change as PlanChange
from helix_ops.plan import Plan
from flows.gate import Applied, Change, Proposal, run_change, who_asked
from flows.init_db import init_helix_db, load_neo4j_credentials
from helix_ops.overrides import Overrides
from tasks.db import schema_up_to_date
from tasks.overrides import load_overrides, save_overrides
from tasks.writer_pause import read_pause
from tasks.target import open_environment


def plan_markdown(env: str, plan: Plan) -> str:
    rows = [f"| {c.action} | `{c.identity}` | {c.reason} | "
            + "<br>".join(f"`{d.path}`: {d.old!r} → {d.new!r}" for d in c.diff) + " |" for c in plan.changes]
    counts = ", ".join(f"{n} {a}" for a, n in plan.counts().items())
    return "\n".join([f"# Deploy plan for `{env}`", "", counts, "",
                      "| action | object | reason | changes |", "|---|---|---|---|", *rows])


def plan_lines(plan: Plan) -> tuple[str, ...]:
    """What changes, one line per change and per changed field, then the counts (no-op objects left out)."""
    out = []
    for c in plan.changes:
        if c.action != "noop":
            out.append(f"{c.action} {c.identity}: {c.reason}")
            out += [f"  {d.path}: {d.old!r} -> {d.new!r}" for d in c.diff]
    return (*out, ", ".join(f"{n} {a}" for a, n in plan.counts().items()))


def drift_refused(env: str, changes: Sequence[PlanChange]) -> DriftRefused:
    """The one error of a deploy that found drift where the policy says ``refuse`` (nothing is changed)."""
    fields = "; ".join(f"{c.identity}: " + ", ".join(f"{d.path} {d.old!r} (descriptor: {d.new!r})" for d in c.diff)
                       for c in changes)
    return DriftRefused(f"deploy of {env} refused: changed outside helix-ops: {fields}. kubernetes.drift is "
                        f"'refuse': put the change into the descriptor (or undo it by hand), or set "
                        f"kubernetes.drift: revert to let the deploy take it back; nothing was changed")


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
                 docker_host_block: str | None = None, dry_run: bool = False,
                 reset_overrides: bool = False) -> dict[str, Any]:
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
        audit_override: where the approval policy says ``audit: true``, ask for approval even though a
            required security-checklist item fails; the reason is recorded in the audit artifact.
        kubeconfig / kube_context / cluster_block (target ``kubernetes``): the cluster, from a kubeconfig file
            (and context) or a prefect-kubernetes ``KubernetesClusterConfig`` block; none: ``$KUBECONFIG``,
            ``~/.kube/config`` or, inside a pod, its service account.
        neo4j_uri: a Bolt URI for ``init-helix-db`` instead of the target's endpoint.
        reset_overrides: deploy the descriptor as it is, and forget the image tags and replica counts that
            upgrade-helix and scale-helix kept (by default a deploy keeps them and lists them in its plan).
        dry_run: plan against the live state and publish the plan (``deploy-plan-<env>``) only: no approval, no
            lease, nothing applied, no change record; returns ``{"applied": False, "dry_run": True, "plan": …}``.

    Example: ``prefect deployment run deploy-helix/local`` or ``deploy_helix(env="local")``.
    """
    logger = get_run_logger()
    desc, config_text, target, steps = open_environment(env, descriptor, Connection(
        engine_url=engine_url, docker_host_block=docker_host_block, container_labels=container_labels or {},
        kubeconfig=kubeconfig, kube_context=kube_context, cluster_block=cluster_block), keep_overrides=False)
    # what upgrade-helix and scale-helix changed stays, on top of the descriptor (helix_ops/overrides.py)
    declared = desc
    overrides = Overrides() if reset_overrides else load_overrides(declared)
    desc = overrides.applied_to(declared)
    kept = tuple(f"override kept: {line}" for line in overrides.lines(declared))
    kept_md = ("\n\n## Overrides kept from upgrade-helix / scale-helix (`reset_overrides=true` deploys the descriptor "
               "as it is)\n\n" + "\n".join(f"- {line}" for line in overrides.lines(declared))) if kept else ""
    if dry_run:  # plan and publish only: no question, no lease, no apply
        dry = steps.plan_deploy(target, desc, config_text)
        for line in (*kept, *plan_lines(dry)):
            logger.info("plan (dry run): %s", line)
        create_markdown_artifact(plan_markdown(desc.environment, dry) + kept_md,
                                 key=f"deploy-plan-{desc.environment}",
                                 description=f"deploy plan for {desc.environment} (dry run)")
        return {"environment": desc.environment, "flow_run_id": str(flow_run.get_id()), "applied": False,
                "dry_run": True, "plan": dry.to_dict()}

    def plan() -> Proposal:
        p = steps.plan_deploy(target, desc, config_text)
        return Proposal(markdown=plan_markdown(desc.environment, p) + kept_md, lines=(*kept, *plan_lines(p)),
                        is_noop=p.is_noop, identity=p.to_dict(),
                        change={"plan": {k: v for k, v in p.counts().items() if k != "noop"}}, data=p)

    def apply(proposal: Proposal) -> Applied:
        p: Plan = proposal.data
        changed = steps.apply_deploy(target, desc, config_text, p, health_timeout_s, log=logger.info)
        images = {c.identity: next((d.new for d in c.diff if d.path == "image"), None) for c in p.changes
                  if c.action != "noop"}
        return Applied(after={i: v for i, v in images.items() if v}, detail=f"{len(changed)} object(s) changed",
                       value=changed)

    def audit(_proposal: Proposal) -> None:
        if desc.approval.audit:
            from tasks.audit import require_audit_pass

            require_audit_pass(desc, target, override_reason=audit_override or None)

    def settle(_proposal: Proposal) -> list[dict[str, Any]]:
        if run_init_db:
            with nullcontext(None) if neo4j_uri else target.endpoint("neo4j", NEO4J_BOLT_PORT) as address:
                uri = neo4j_uri or f"bolt://{address[0]}:{address[1]}"
                user, password = load_neo4j_credentials(desc.credentials.neo4j)
                # two read-only queries instead of init-helix-db's run (its tasks and a full scan) when the
                # ledger already matches the code: what makes a no-op deploy cheap
                current = schema_up_to_date(uri, user, password, DEFAULT_UID_PREFIX)
                if current:
                    logger.info("init-helix-db not needed: %s", current)
                else:
                    init_helix_db(env=desc.environment, neo4j_uri=uri, credentials_block=desc.credentials.neo4j)
        return steps.deploy_status(target, desc)

    def refuse(proposal: Proposal) -> DriftRefused | None:
        p: Plan = proposal.data
        if not p.drift or desc.kubernetes.drift != "refuse":
            return None
        # a writer a killed backup or restore left scaled to 0 is not a person's change: the deploy scales it back
        paused = set((read_pause(desc.environment) or {}).get("services") or {})
        changes = [c for c in p.drift if not (c.identity.rsplit("/", 1)[-1] in paused
                                              and all(d.path == "replicas" for d in c.diff))]
        return drift_refused(desc.environment, changes) if changes else None

    outcome = run_change(Change(desc, "deploy", who_asked(), plan, apply, before_question=audit, settle=settle,
                                refuse=refuse, lease_ttl_s=lease_ttl_s, lease_wait_s=lease_wait_s))
    result: dict[str, Any] = {"environment": desc.environment, "flow_run_id": str(flow_run.get_id()),
                              "applied": outcome.status == "applied", "plan": outcome.proposal.data.to_dict(),
                              "approval": outcome.decision.line()}
    if outcome.status == "refused":
        return result
    if reset_overrides:
        save_overrides(declared, Overrides())  # forgotten once the descriptor as it is has been deployed
    rows = outcome.settled
    create_markdown_artifact(status_markdown(desc.environment, rows), key=f"helix-status-{desc.environment}",
                             description=f"Helix {desc.environment} after deploy")
    unhealthy = [r["service"] for r in rows if not r.pop("healthy")]
    changed = outcome.applied.value if outcome.applied else []
    return {**result, "changed": changed, "status": rows, "unhealthy": unhealthy}
