"""``upgrade-helix`` and ``scale-helix``: change a running environment without taking it down.

upgrade-helix: new image tags (parameters, or what the descriptor says) → plan against the live state
(published) → approval in prod → a verified pre-upgrade backup (if it fails, nothing is upgraded) → each
changed service rolled in dependency order with health gates (``drivers.rollout``) → on any failure, every
service already changed (and the failing one) rolled back to its previous image → audit record.

scale-helix: a new replica count within the scaling rules, through the same rollout and gates.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, pause_flow_run
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.deploy import Approval, descriptor_path, plan_markdown
from helix_ops.changes import DATA_SERVICES, AuditRecord, images_from_state, with_images, with_replicas
from helix_ops.descriptor import Descriptor, load_descriptor
from helix_ops.errors import HelixOpsError
from helix_ops.plan import compose_objects, compute_plan, engine_objects, template_hash
from helix_ops.render.compose import render_compose
from helix_ops.stack import build_stack
from tasks.engine import EngineTarget, ProbeSpec, apply_service, connect_engine, read_current_state
from tasks.lease import break_lease, environment_lease
from tasks.records import record_change


class UpgradeRolledBack(HelixOpsError):
    """A step failed its health gate; every changed service was rolled back to its previous image."""


def _who(triggered_by: str | None) -> str:
    if triggered_by:
        return triggered_by
    run = flow_run.get_id()
    return f"flow-run/{run}" if run else f"user/{getpass.getuser()}"


def _service_specs(desc: Descriptor) -> tuple[Any, dict[str, dict[str, Any]]]:
    stack = build_stack(desc)
    specs = {o.identity.split("/", 1)[1]: o.spec for o in compose_objects(render_compose(stack))
             if o.identity.startswith("service/")}
    return stack, specs


def _apply_services(target: EngineTarget, desc: Descriptor, names: list[str], health_timeout_s: float,
                    drain_s: float, parallel: bool = False) -> tuple[list[dict[str, Any]], list[str], dict[str, Exception]]:
    """Roll ``names`` to what ``desc`` renders in dependency order, one service at a time; with ``parallel``,
    wave by wave (services whose dependencies are all in earlier waves roll at the same time). Stops after
    the first service (or wave) with a failure.

    Returns (reports, services done, failures by service).
    """
    stack, specs = _service_specs(desc)
    reports: list[dict[str, Any]] = []
    done: list[str] = []
    waves = dependency_waves(stack, names) if parallel else [[n] for n in stack.names() if n in names]
    for wave in waves:
        futures = {}
        for name in wave:
            svc = stack.service(name)
            probe = ProbeSpec(svc.probe.kind, svc.probe.port, svc.probe.path)
            futures[name] = apply_service.submit(target, name, specs[name], template_hash(specs[name]), probe, desc,
                                                 health_deadline_s=health_timeout_s, drain_s=drain_s)
        failures: dict[str, Exception] = {}
        for name, future in futures.items():
            try:
                reports.append(future.result())
                done.append(name)
            except Exception as exc:  # noqa: BLE001 - collected, the caller rolls back
                failures[name] = exc
        if failures:
            return reports, done, failures
    return reports, done, {}


def _change(env: str, desired_for: Callable[[dict[str, str]], Descriptor], action: str, change: dict[str, Any], scope: set[str] | None,
            descriptor: str | None, engine_url: str | None, health_timeout_s: float, drain_s: float,
            lease_ttl_s: float, lease_wait_s: float, break_stale_lease: str | None,
            container_labels: dict[str, str] | None, triggered_by: str | None, backup_first: bool,
            current_desc: Descriptor, parallel: bool = False, kube: dict[str, Any] | None = None) -> dict[str, Any]:
    if current_desc.target == "kubernetes":
        return _change_kubernetes(env, desired_for, action, change, scope, descriptor, health_timeout_s,
                                  lease_ttl_s, lease_wait_s, break_stale_lease, triggered_by, backup_first,
                                  current_desc, kube or {})
    logger = get_run_logger()
    who = _who(triggered_by)
    target = EngineTarget(engine_url, current_desc.project, current_desc.environment, container_labels or {})
    connect_engine(target)
    if break_stale_lease:
        taken = break_lease(current_desc.environment)
        record_change(AuditRecord.now(environment=current_desc.environment, action="break-lease", triggered_by=who,
                                      change={"reason": break_stale_lease, "slots_freed": taken}, before={},
                                      after={}, result="succeeded", detail=break_stale_lease))
    if backup_first and _pending_services(target, desired_for, scope):
        # Before taking the lease: backup-helix holds the same environment lease while it runs.
        _pre_upgrade_backup(env, descriptor, engine_url)
    with environment_lease(current_desc.environment, who, ttl_s=lease_ttl_s, wait_s=lease_wait_s):
        current = read_current_state(target)
        before = images_from_state(current)
        desired = desired_for(before)
        plan = compute_plan(engine_objects(render_compose(build_stack(desired))), current)
        steps = [c for c in plan.changes if c.identity.startswith("service/") and c.action in ("create", "update")
                 and (scope is None or c.identity.split("/", 1)[1] in scope)]
        names = [c.identity.split("/", 1)[1] for c in steps]
        for line in plan.lines():
            logger.info("plan: %s", line)
        create_markdown_artifact(plan_markdown(desired.environment, plan), key=f"{action}-plan-{desired.environment}",
                                 description=f"{action}-helix plan for {desired.environment}")
        if not names:
            logger.info("nothing to %s: every service already matches", action)
            return {"environment": desired.environment, "changed": [], "result": "noop", "plan": plan.to_dict()}
        if desired.environment == "prod":
            answer = pause_flow_run(wait_for_input=Approval, timeout=3600)
            if not answer.approve:
                record_change(AuditRecord.now(environment=desired.environment, action=action, triggered_by=who,
                                              change=change, before=before, after=before, result="refused",
                                              detail=answer.reason))
                return {"environment": desired.environment, "changed": [], "result": "refused"}
        reports, done, failures = _apply_services(target, desired, names, health_timeout_s, drain_s, parallel)
        if failures:
            failed = sorted(failures)
            exc = failures[failed[0]]
            logger.error("%s failed at %s: %s; rolling back %s", action, ", ".join(failed), exc,
                         ", ".join([*done, *failed]))
            previous = with_images(current_desc, {n: before[n] for n in [*done, *failed] if n in before},
                                   include_data_services=True)
            _, _, rollback_failures = _apply_services(target, previous, [*done, *failed], health_timeout_s, drain_s)
            after = images_from_state(read_current_state(target))
            detail = f"{', '.join(failed)} failed its health gate: {exc}"
            if rollback_failures:
                detail += f"; the rollback of {', '.join(sorted(rollback_failures))} failed too"
            record_change(AuditRecord.now(environment=desired.environment, action=action, triggered_by=who,
                                          change=change, before=before, after=after, result="rolled-back",
                                          detail=detail))
            raise UpgradeRolledBack(f"{action} of {desired.environment} failed at {', '.join(failed)} and was "
                                    f"rolled back: {exc}") from exc
        after = images_from_state(read_current_state(target))
        record_change(AuditRecord.now(environment=desired.environment, action=action, triggered_by=who,
                                      change=change, before=before, after=after, result="succeeded",
                                      detail=", ".join(f"{r['service']}: {r['strategy']}, downtime "
                                                       f"{r['downtime_s']}s" for r in reports)))
    return {"environment": desired.environment, "changed": names, "result": "succeeded", "before": before,
            "after": after, "reports": reports, "plan": plan.to_dict()}


def dependency_waves(stack: Any, names: list[str]) -> list[list[str]]:
    """``names`` grouped into waves: a service's wave is one more than that of its deepest dependency, so a
    wave only depends on earlier ones (dashboard and mcp-graph together, then the other MCP servers)."""
    depth: dict[str, int] = {}
    for svc in stack.services:  # apply order: dependencies come first
        depth[svc.name] = 1 + max((depth[d] for d in svc.depends_on), default=-1)
    waves: dict[int, list[str]] = {}
    for name in [s for s in stack.names() if s in names]:
        waves.setdefault(depth[name], []).append(name)
    return [waves[k] for k in sorted(waves)]


def _pending_services(target: EngineTarget, desired_for: Callable[[dict[str, str]], Descriptor],
                      scope: set[str] | None) -> list[str]:
    """The services a change would touch, from the live state (read without the lease: a preview)."""
    current = read_current_state(target)
    desired = desired_for(images_from_state(current))
    plan = compute_plan(engine_objects(render_compose(build_stack(desired))), current)
    return [c.identity.split("/", 1)[1] for c in plan.changes if c.identity.startswith("service/")
            and c.action in ("create", "update") and (scope is None or c.identity.split("/", 1)[1] in scope)]


def _pre_upgrade_backup(env: str, descriptor: str | None, engine_url: str | None) -> None:
    """A verified backup before anything changes; raises (and so upgrades nothing) when it fails."""
    from flows.backup import backup_helix

    backup_helix(env=env, descriptor=descriptor, engine_url=engine_url)


@flow(name="upgrade-helix")
def upgrade_helix(env: str = "local", images: dict[str, str] | None = None, descriptor: str | None = None,
                  engine_url: str | None = None, include_data_services: bool = False, backup_first: bool = True,
                  health_timeout_s: float = 120, drain_s: float = 1.0, lease_ttl_s: float = 120,
                  lease_wait_s: float = 600, break_stale_lease: str | None = None,
                  container_labels: dict[str, str] | None = None, triggered_by: str | None = None,
                  parallel: bool = False, kubeconfig: str | None = None, kube_context: str | None = None,
                  cluster_block: str | None = None) -> dict[str, Any]:
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
        kubeconfig / kube_context / cluster_block: the cluster of a ``target: kubernetes`` environment (see
            deploy-helix); there ``health_timeout_s`` is each workload's rollout deadline.

    Example: ``prefect deployment run upgrade-helix/prod -p images='{"dashboard": "1.4.2"}'``.
    """
    current_desc = load_descriptor(descriptor_path(env, descriptor))
    desired = with_images(current_desc, images, include_data_services) if images else current_desc
    scope = set(images) if images else {s for s in build_stack(desired).names()
                                         if include_data_services or s not in DATA_SERVICES}
    return _change(env, lambda _running: desired, "upgrade", {"images": images or "from descriptor"}, scope, descriptor, engine_url,
                   health_timeout_s, drain_s, lease_ttl_s, lease_wait_s, break_stale_lease, container_labels,
                   triggered_by, backup_first, current_desc, parallel,
                   {"kubeconfig": kubeconfig, "context": kube_context, "cluster_block": cluster_block})


@flow(name="scale-helix")
def scale_helix(service: str, replicas: int, env: str = "local", descriptor: str | None = None,
                engine_url: str | None = None, health_timeout_s: float = 120, drain_s: float = 1.0,
                lease_ttl_s: float = 120, lease_wait_s: float = 600, break_stale_lease: str | None = None,
                container_labels: dict[str, str] | None = None, triggered_by: str | None = None,
                kubeconfig: str | None = None, kube_context: str | None = None,
                cluster_block: str | None = None) -> dict[str, Any]:
    """Change one service's replica count within the scaling rules (mcp-graph never above one), gated on
    health like an upgrade. The service keeps the image it runs now; replicas that run are kept.
    Note: the descriptor file is not rewritten; commit the new count there too."""
    current_desc = load_descriptor(descriptor_path(env, descriptor))
    with_replicas(current_desc, service, replicas)  # refuse a rule break before touching anything

    def desired_for(running: dict[str, str]) -> Descriptor:
        keep = {service: running[service]} if service in running else {}
        return with_replicas(with_images(current_desc, keep) if keep else current_desc, service, replicas)

    return _change(env, desired_for, "scale", {"service": service, "replicas": replicas}, {service}, descriptor,
                   engine_url, health_timeout_s, drain_s, lease_ttl_s, lease_wait_s, break_stale_lease,
                   container_labels, triggered_by, False, current_desc, False,
                   {"kubeconfig": kubeconfig, "context": kube_context, "cluster_block": cluster_block})


def _change_kubernetes(env: str, desired_for: Callable[[dict[str, str]], Descriptor], action: str,
                       change: dict[str, Any], scope: set[str] | None, descriptor: str | None,
                       health_timeout_s: float, lease_ttl_s: float, lease_wait_s: float,
                       break_stale_lease: str | None, triggered_by: str | None, backup_first: bool,
                       current_desc: Descriptor, kube: dict[str, Any]) -> dict[str, Any]:
    """upgrade/scale on a Kubernetes target: the same plan, approval, lease and audit record as on the engine;
    each changed workload is applied and gated on its rollout (``health_timeout_s``). A workload that misses
    its deadline is rolled back to its previous pod template by the driver; the workloads changed before it
    are rolled back by applying the previous images' rendering again."""
    from drivers.kube import RolloutFailed
    from helix_ops.errors import ConfigError
    from tasks.kube import (KubeTarget, connect_kube, helix_config_text, is_workload, name_of, plan_kube,
                            read_kube_state, roll_kube_workload, workload_images)

    logger = get_run_logger()
    who = _who(triggered_by)
    target = KubeTarget.for_descriptor(current_desc, kube.get("kubeconfig"), kube.get("context"),
                                       cluster_block=kube.get("cluster_block"))
    config_text = helix_config_text(current_desc, descriptor_path(env, descriptor))
    connect_kube(target)
    if break_stale_lease:
        taken = break_lease(current_desc.environment)
        record_change(AuditRecord.now(environment=current_desc.environment, action="break-lease", triggered_by=who,
                                      change={"reason": break_stale_lease, "slots_freed": taken}, before={},
                                      after={}, result="succeeded", detail=break_stale_lease))
    note = ""
    if backup_first:
        if scope is None or scope & DATA_SERVICES:
            raise ConfigError("backup_first", "backup-helix does not reach a Kubernetes environment yet: take a "
                                              "backup by other means, then run with backup_first=false")
        note = "no pre-upgrade backup (backup-helix does not reach Kubernetes yet; no data service changes). "
        logger.warning(note)
    with environment_lease(current_desc.environment, who, ttl_s=lease_ttl_s, wait_s=lease_wait_s):
        current = read_kube_state(target)
        before = workload_images(current)
        desired = desired_for(before)
        plan = plan_kube(target, desired, config_text)
        steps = [c for c in plan.changes if is_workload(c.identity) and c.action in ("create", "update")
                 and (scope is None or name_of(c.identity) in scope)]
        for line in plan.lines():
            logger.info("plan: %s", line)
        create_markdown_artifact(plan_markdown(desired.environment, plan), key=f"{action}-plan-{desired.environment}",
                                 description=f"{action}-helix plan for {desired.environment}")
        if not steps:
            logger.info("nothing to %s: every workload already matches", action)
            return {"environment": desired.environment, "changed": [], "result": "noop", "plan": plan.to_dict()}
        if desired.environment == "prod":
            answer = pause_flow_run(wait_for_input=Approval, timeout=3600)
            if not answer.approve:
                record_change(AuditRecord.now(environment=desired.environment, action=action, triggered_by=who,
                                              change=change, before=before, after=before, result="refused",
                                              detail=answer.reason))
                return {"environment": desired.environment, "changed": [], "result": "refused"}
        done: list[str] = []
        reports: list[dict[str, Any]] = []
        for step in steps:
            try:
                reports.append(roll_kube_workload(target, desired, config_text, step.identity, step.spec_hash,
                                                  health_timeout_s))
            except Exception as exc:  # noqa: BLE001 - recorded and re-raised below, after the rollback
                failed = name_of(step.identity)
                logger.error("%s failed at %s: %s; rolling back %s", action, failed, exc,
                             ", ".join([*done, failed]))
                rollback_failures = []
                undo = {name_of(i): before[name_of(i)] for i in done if name_of(i) in before}
                if undo:
                    previous = with_images(current_desc, undo, include_data_services=True)
                    for identity in reversed(done):
                        try:
                            roll_kube_workload(target, previous, config_text, identity, None, health_timeout_s)
                        except Exception as again:  # noqa: BLE001 - reported in the audit record
                            rollback_failures.append(f"{name_of(identity)}: {again}")
                if isinstance(exc, RolloutFailed) and not exc.rolled_back:
                    rollback_failures.append(f"{failed}: not rolled back")
                after = workload_images(read_kube_state(target))
                detail = note + f"{failed} missed its rollout deadline: {exc}"
                if rollback_failures:
                    detail += "; the rollback failed for " + "; ".join(rollback_failures)
                rolled_back = isinstance(exc, RolloutFailed) and not rollback_failures
                if not isinstance(exc, RolloutFailed):
                    detail = note + f"{failed} could not be applied: {exc}"
                    if rollback_failures:
                        detail += "; the rollback failed for " + "; ".join(rollback_failures)
                record_change(AuditRecord.now(environment=desired.environment, action=action, triggered_by=who,
                                              change=change, before=before, after=after,
                                              result="rolled-back" if rolled_back else "failed", detail=detail))
                if not isinstance(exc, RolloutFailed):
                    raise  # e.g. forbidden or unreachable: the workload itself was not changed
                outcome = "and was rolled back" if rolled_back else "and the rollback did not complete (see audit)"
                raise UpgradeRolledBack(f"{action} of {desired.environment} failed at {failed} {outcome}: "
                                        f"{exc}") from exc
            done.append(step.identity)
        after = workload_images(read_kube_state(target))
        record_change(AuditRecord.now(environment=desired.environment, action=action, triggered_by=who,
                                      change=change, before=before, after=after, result="succeeded",
                                      detail=note + ", ".join(name_of(i) for i in done)))
    return {"environment": desired.environment, "changed": [name_of(i) for i in done], "result": "succeeded",
            "before": before, "after": after, "plan": plan.to_dict(), "reports": reports}
