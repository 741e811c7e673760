"""``upgrade-helix`` and ``scale-helix``: change a running environment without taking it down.

upgrade-helix: new image tags (parameters, or what the descriptor says) → plan against the live state
(published) → approval by the environment's policy → a verified pre-upgrade backup (if it fails, nothing is upgraded) → each
changed service rolled in dependency order with health gates (``drivers.rollout``) → on any failure, every
service already changed (and the failing one) rolled back to its previous image → change record (the change
gate of ``flows/gate.py``).

scale-helix: a new replica count within the scaling rules, through the same rollout and gates.

One path for every target (``drivers/target.py``): the steps that differ (how images are read, how a service
rolls and rolls back) are ``tasks.engine``'s and ``tasks.kube``'s, picked by ``tasks.target.deployer_for``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger

from flows.params import AppService, EnvName, ImageRef, Replicas, ServiceName, run_name
from drivers.target import Connection
from flows.deploy import drift_refused, plan_lines, plan_markdown
from flows.gate import Applied, Change, Proposal, RolledBack, run_change, who_asked
from helix_ops.descriptor import descriptor_file
from helix_ops.changes import DATA_SERVICES, AuditRecord, with_images, with_replicas
from helix_ops.descriptor import Descriptor, load_descriptor
from helix_ops.errors import HelixOpsError
from helix_ops.stack import build_stack
from flows.lease import break_lease
from helix_ops.overrides import image_ref
from tasks.overrides import load_overrides, save_overrides
from tasks.records import record_change
from tasks.target import open_environment


class UpgradeRolledBack(HelixOpsError):
    """A step failed its health gate; every changed service was rolled back to its previous image."""


class _RollFailed(Exception):
    """Some services failed to roll: which ones were done and which failed (for the gate's rollback)."""

    def __init__(self, done: list[str], failures: dict[str, Exception]):
        super().__init__(", ".join(sorted(failures)))
        self.done, self.failures = done, failures

    def __reduce__(self):
        return (type(self), (self.done, self.failures))


def _change(env: str, desired_for: Callable[[dict[str, str]], Descriptor], action: str, change: dict[str, Any],
            scope: set[str] | None, descriptor: str | None, conn: Connection, health_timeout_s: float,
            drain_s: float, lease_ttl_s: float, lease_wait_s: float, break_stale_lease: str | None,
            triggered_by: str | None, backup_first: bool, current_desc: Descriptor,
            parallel: bool = False) -> dict[str, Any]:
    """Plan against the live state → approval by the policy → (a verified backup first) → roll each changed
    service with health gates → on a failure, roll back what changed → record: the change gate
    (``flows/gate.py``) with this plan, apply and rollback. The steps that differ per target are
    ``tasks.engine`` / ``tasks.kube``'s (``tasks.target.deployer_for``)."""
    logger = get_run_logger()
    who = who_asked(triggered_by)
    _, config_text, target, steps = open_environment(env, descriptor, conn, keep_overrides=False)
    if break_stale_lease:
        taken = break_lease(current_desc.environment)
        record_change(AuditRecord.now(environment=current_desc.environment, action="break-lease", triggered_by=who,
                                      change={"reason": break_stale_lease, "slots_freed": taken}, before={},
                                      after={}, result="succeeded", detail=break_stale_lease))

    def plan() -> Proposal:
        before = steps.running_images(target)
        desired = desired_for(before)
        p = steps.plan_deploy(target, desired, config_text)
        todo = [c for c in p.changes if c.action in ("create", "update") and steps.service_of(c.identity)
                and (scope is None or steps.service_of(c.identity) in scope)]
        names = [steps.service_of(c.identity) for c in todo]
        return Proposal(markdown=plan_markdown(desired.environment, p), lines=plan_lines(p), is_noop=not names,
                        identity={"services": names, "plan": p.to_dict()}, change=change, before=before,
                        data=(desired, p, todo))

    def apply(proposal: Proposal) -> Applied:
        desired, _, todo = proposal.data
        reports, done, failures = steps.roll_services(target, desired, config_text, todo, health_timeout_s,
                                                      drain_s, parallel)
        if failures:
            raise _RollFailed(done, failures)
        return Applied(after=steps.running_images(target),
                       detail=", ".join(_report_line(r) for r in reports) or ", ".join(done), value=reports)

    def rollback(proposal: Proposal, error: Exception) -> RolledBack | None:
        if not isinstance(error, _RollFailed):
            return None
        before, done, failures = proposal.before, error.done, error.failures
        failed = sorted(failures)
        exc = failures[failed[0]]
        logger.error("%s failed at %s: %s; rolling back %s", action, ", ".join(failed), exc,
                     ", ".join([*done, *failed]))
        previous = with_images(current_desc, {n: before[n] for n in [*done, *failed] if n in before},
                               include_data_services=True)
        problems = steps.roll_back(target, previous, config_text, done, failures, health_timeout_s, drain_s)
        rollout = steps.is_rollout_failure(exc)
        detail = (f"{', '.join(failed)} failed its health gate: {exc}" if rollout
                  else f"{', '.join(failed)} could not be applied: {exc}")
        if problems:
            detail += "; the rollback failed for " + "; ".join(problems)
        outcome = "and was rolled back" if not problems else "and the rollback did not complete (see audit)"
        raised: Exception = exc  # not a rollout failure (e.g. forbidden): the service itself was not changed
        if rollout:
            raised = UpgradeRolledBack(f"{action} of {current_desc.environment} failed at {', '.join(failed)} "
                                       f"{outcome}: {exc}")
            raised.__cause__ = exc
        return RolledBack(after=steps.running_images(target), complete=rollout and not problems, detail=detail,
                          error=raised)

    def backup(_proposal: Proposal) -> None:
        # after the answer, before the lease: backup-helix holds the same environment lease while it runs
        _pre_upgrade_backup(env, descriptor, conn)

    def refuse(proposal: Proposal) -> Exception | None:
        """Under ``kubernetes.drift: refuse``, a roll that would take back an out-of-band change is refused too."""
        _, p, todo = proposal.data
        drift = [c for c in todo if c.drift]
        return drift_refused(current_desc.environment, drift) if drift and current_desc.kubernetes.drift == "refuse" \
            else None

    outcome = run_change(Change(current_desc, action, who, plan, apply, rollback=rollback,
                                prepare=backup if backup_first else None, refuse=refuse, lease_ttl_s=lease_ttl_s,
                                lease_wait_s=lease_wait_s))
    proposal = outcome.proposal
    desired = proposal.data[0]
    if outcome.status == "refused":
        return {"environment": desired.environment, "changed": [], "result": "refused",
                "approval": outcome.decision.line()}
    if outcome.status == "noop":
        logger.info("nothing to %s: every service already matches", action)
        return {"environment": desired.environment, "changed": [], "result": "noop",
                "plan": proposal.data[1].to_dict()}
    assert outcome.applied is not None
    return {"environment": desired.environment, "changed": proposal.identity["services"], "result": "succeeded",
            "before": proposal.before, "after": outcome.applied.after, "reports": outcome.applied.value,
            "plan": proposal.data[1].to_dict(), "approval": outcome.decision.line()}


def _report_line(report: dict[str, Any]) -> str:
    if "strategy" in report:
        return f"{report['service']}: {report['strategy']}, downtime {report['downtime_s']}s"
    return f"{report.get('workload', '?')}: {report.get('result', '?')}"


def _pre_upgrade_backup(env: str, descriptor: str | None, conn: Connection) -> None:
    """A verified backup before anything changes; raises (and so upgrades nothing) when it fails."""
    from flows.backup import backup_helix

    backup_helix(env=env, descriptor=descriptor, engine_url=conn.engine_url, kubeconfig=conn.kubeconfig,
                 kube_context=conn.kube_context, cluster_block=conn.cluster_block,
                 docker_host_block=conn.docker_host_block)


@flow(name="upgrade-helix", flow_run_name=run_name("upgrade-{env}-{images}", images="descriptor-tags"))
def upgrade_helix(env: EnvName = "local", images: dict[ServiceName, ImageRef] | None = None, descriptor: str | None = None,
                  engine_url: str | None = None, include_data_services: bool = False, backup_first: bool = True,
                  health_timeout_s: float = 120, drain_s: float = 1.0, lease_ttl_s: float = 120,
                  lease_wait_s: float = 600, break_stale_lease: str | None = None,
                  container_labels: dict[str, str] | None = None, triggered_by: str | None = None,
                  parallel: bool = False, kubeconfig: str | None = None, kube_context: str | None = None,
                  cluster_block: str | None = None, docker_host_block: str | None = None) -> dict[str, Any]:
    """Upgrade services of one environment with zero downtime, rolling back by itself on a failed gate.

    Args:
        env / descriptor: the environment (``deployments/<env>.yaml``) or a descriptor path.
        images: service → new tag (or ``repository:tag``); none: converge to the descriptor's tags.
        include_data_services: allow Neo4j and Redis in ``images`` (health-gated, with downtime).
        backup_first: take a verified backup-helix backup first; if it fails nothing is upgraded.
        health_timeout_s: deadline of each new replica's health gate.
        break_stale_lease: a reason; frees a lease left by a crashed run (recorded in the audit log).
        triggered_by: who asked (recorded); default the flow run.
        parallel: roll services of one dependency level at the same time (faster; on a small host the load of
            several starting replicas can make health checks flap, so it is off by default).
        engine_url / docker_host_block / kubeconfig / kube_context / cluster_block: how the target is reached
            (see deploy-helix); on Kubernetes ``health_timeout_s`` is each workload's rollout deadline.

    Example: ``prefect deployment run upgrade-helix/prod -p images='{"dashboard": "1.4.2"}'``.
    """
    declared = load_descriptor(descriptor_file(env, descriptor))
    overrides = load_overrides(declared)  # what earlier upgrades and scales changed (helix_ops/overrides.py)
    scope = set(images) if images else {s for s in build_stack(declared).names()
                                         if include_data_services or s not in DATA_SERVICES}
    if images:
        current_desc = overrides.applied_to(declared)
        desired = with_images(current_desc, images, include_data_services)
        kept = overrides.upgraded({s: image_ref(desired, s) for s in images})
    else:  # back to the descriptor's tags: their overrides go
        kept = overrides.without_images(scope)
        current_desc = desired = kept.applied_to(declared)
    conn = Connection(engine_url=engine_url, docker_host_block=docker_host_block,
                      container_labels=container_labels or {}, kubeconfig=kubeconfig, kube_context=kube_context,
                      cluster_block=cluster_block)
    result = _change(env, lambda _running: desired, "upgrade", {"images": images or "from descriptor"}, scope,
                     descriptor, conn, health_timeout_s, drain_s, lease_ttl_s, lease_wait_s, break_stale_lease,
                     triggered_by, backup_first, current_desc, parallel)
    if result["result"] in ("succeeded", "noop"):
        save_overrides(declared, kept)  # the next deploy-helix keeps these tags (and lists them in its plan)
    return result


@flow(name="scale-helix", flow_run_name=run_name("scale-{env}-{service}-{replicas}"))
def scale_helix(service: AppService, replicas: Replicas, env: EnvName = "local", descriptor: str | None = None,
                engine_url: str | None = None, health_timeout_s: float = 120, drain_s: float = 1.0,
                lease_ttl_s: float = 120, lease_wait_s: float = 600, break_stale_lease: str | None = None,
                container_labels: dict[str, str] | None = None, triggered_by: str | None = None,
                kubeconfig: str | None = None, kube_context: str | None = None,
                cluster_block: str | None = None, docker_host_block: str | None = None) -> dict[str, Any]:
    """Change one service's replica count within the scaling rules (mcp-graph never above one), gated on
    health like an upgrade. The service keeps the image it runs now; replicas that run are kept.
    The descriptor file is not rewritten: the count is kept as an override that the next deploy-helix keeps
    (and lists in its plan) until the descriptor says it too or a deploy runs with ``reset_overrides``."""
    declared = load_descriptor(descriptor_file(env, descriptor))
    overrides = load_overrides(declared)  # what earlier upgrades and scales changed (helix_ops/overrides.py)
    current_desc = overrides.applied_to(declared)
    with_replicas(current_desc, service, replicas)  # refuse a rule break before touching anything

    def desired_for(running: dict[str, str]) -> Descriptor:
        keep = {service: running[service]} if service in running else {}
        return with_replicas(with_images(current_desc, keep) if keep else current_desc, service, replicas)

    conn = Connection(engine_url=engine_url, docker_host_block=docker_host_block,
                      container_labels=container_labels or {}, kubeconfig=kubeconfig, kube_context=kube_context,
                      cluster_block=cluster_block)
    result = _change(env, desired_for, "scale", {"service": service, "replicas": replicas}, {service}, descriptor,
                     conn, health_timeout_s, drain_s, lease_ttl_s, lease_wait_s, break_stale_lease, triggered_by,
                     False, current_desc, False)
    if result["result"] in ("succeeded", "noop"):
        save_overrides(declared, overrides.scaled(service, replicas))  # the next deploy-helix keeps the count
    return result
