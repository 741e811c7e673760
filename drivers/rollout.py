"""Rolling a service to a new spec on the container engine, without taking it down.

* start-first services (the dashboard and the stateless MCP servers): one replica at a time, start the new
  one, wait until it is healthy, swap it for an old one in the load balancer (if the service sits behind it:
  one graceful reload, in-flight requests finish), let the old one drain, stop it. The service never has fewer
  healthy replicas than requested.
* stop-first services (mcp-graph, the single writer; the databases; the load balancer): stop, then start (the
  old replicas are removed once the new ones are healthy); the downtime is measured.

A rollout resumes cleanly: replicas of the new spec that already run and pass the health gate are kept, so a
rerun after a crash finishes the job instead of starting over.

``roll_id`` re-creates every replica from the same spec (a restart that re-reads the secrets, as
rotate-helix-secrets needs): the new replicas' names end in ``-<roll_id>``, so only replicas of that roll count
as current and a rerun of the same roll keeps them. Labels (the spec hash) are unchanged, so a deploy plan
still sees no change.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from docker.models.containers import Container

from drivers.engine import EngineDriver, container_plans
from helix_ops.plan import HASH_LABEL

HealthCheck = Callable[[Container], Callable[[], str]]
"""Given a container, the check that tells it is healthy (raises while it is not)."""

MembersHook = Callable[[list[str]], None]
"""Called with the replica names the load balancer should send traffic to, in order."""


@dataclass
class RolloutReport:
    service: str
    strategy: str
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    downtime_s: float = 0.0
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"service": self.service, "strategy": self.strategy, "started": self.started,
                "stopped": self.stopped, "kept": self.kept, "downtime_s": round(self.downtime_s, 3),
                "wall_s": round(self.wall_s, 3)}


class RolloutFailed(Exception):
    """A new replica did not become healthy; ``report`` says what was started and stopped before."""

    def __init__(self, report: RolloutReport, cause: Exception) -> None:
        self.report = report
        self.cause = cause
        super().__init__(str(cause))

    def __reduce__(self):  # pickled with its constructor's arguments (Prefect moves exceptions between processes)
        return (type(self), (self.report, self.cause))


def _running(containers: Sequence[Container]) -> list[Container]:
    return [c for c in containers if c.status == "running"]


def roll_service(driver: EngineDriver, name: str, spec: Mapping[str, Any], spec_hash: str,
                 files: Mapping[str, str], probe_port: int | None, health: HealthCheck,
                 secrets: Mapping[str, str], deadline_s: float, members_hook: MembersHook | None = None,
                 drain_s: float = 1.0, log: Callable[[str], None] = lambda m: None,
                 roll_id: str | None = None) -> RolloutReport:
    """Bring service ``name`` to ``spec`` (see the module doc); raise RolloutFailed on a failed health gate.

    With ``roll_id``, replicas not created by that roll are replaced even when they run ``spec``.

    On failure the unhealthy new replica is removed and, behind the load balancer, never received traffic;
    replicas that were serving keep serving (a stop-first service's old replicas, stopped for the roll, are
    started again).
    """
    t0 = time.monotonic()
    start_first = spec.get("deploy", {}).get("update_config", {}).get("order") == "start-first"
    report = RolloutReport(name, "start-first" if start_first else "stop-first")
    plans = container_plans(driver.project, driver.environment, name, spec, spec_hash, files, probe_port,
                            driver.extra_labels, probe_host=driver.probe_host)
    if roll_id:
        plans = [dataclasses.replace(p, name=f"{p.name}-{roll_id}") for p in plans]
    existing = driver.containers(name)
    new_names = {p.name for p in plans}
    current = {c.name: c for c in existing if c.labels.get(HASH_LABEL) == spec_hash and c.name in new_names
               and c.status == "running"}
    old = [c for c in existing if c.name not in current]
    serving = [c.name for c in _running(existing)]

    parked: list[str] = []
    if not start_first and old:
        down_at = time.monotonic()
        log(f"{name}: stopping {len(old)} old replica(s) (stop-first)")
        # An old replica is stopped, not removed, until the new ones are healthy: a run killed in between
        # leaves the service's containers behind, so the next run (a resumed rotation) still sees a service
        # the environment runs. One that carries a new replica's name (same spec, not running) goes now.
        report.stopped += driver.remove([c for c in old if c.name in new_names])
        old = [c for c in old if c.name not in new_names]
        parked = driver.stop(old)
        report.stopped += parked
        serving = [n for n in serving if n not in set(report.stopped)]
    else:
        down_at = None

    def gate(container: Container, what: str) -> str:  # the health gate of every replica, new or kept
        return driver.wait_healthy(container, health(container), what, deadline_s, recheck=lambda: health(container))

    for plan in plans:
        if plan.name in current:
            # A replica of this spec (and roll) that runs is kept only once it passes the same health gate as
            # a new one: a killed run may have created it without ever gating it (still starting, or its
            # published port lost by the engine: the gate restarts it once). One that fails is replaced.
            kept = current[plan.name]
            try:
                gate(kept, f"{name} ({plan.name}, kept) to be healthy")
            except Exception as exc:  # noqa: BLE001 - replaced below, its own failure is only logged
                log(f"{name}: kept replica {plan.name} is not healthy ({exc}); replacing it")
                report.stopped += driver.remove([kept], grace_s=2)
                serving = [n for n in serving if n != plan.name]  # its successor joins the balancer once healthy
            else:
                report.kept.append(plan.name)
                continue
        log(f"{name}: starting {plan.name} ({plan.image})")
        container = driver.create_container(plan, secrets)
        try:
            status = gate(container, f"{name} ({plan.name}) to be healthy")
        except Exception as exc:
            driver.remove([container], grace_s=2)
            if parked and not report.started:  # stop-first: the old replicas serve again, then the failure is raised
                try:
                    started = driver.start_containers(parked, deadline_s=60)
                    log(f"{name}: {plan.name} failed; old replica(s) {', '.join(started)} started again")
                except Exception as again:  # noqa: BLE001 - the roll's own failure is the one to raise
                    log(f"{name}: could not start the old replica(s) again: {again}")
            report.wall_s = time.monotonic() - t0
            raise RolloutFailed(report, exc) from exc
        if down_at is not None:
            report.downtime_s = time.monotonic() - down_at
            down_at = None
        log(f"{name}: {plan.name} healthy ({status})")
        report.started.append(plan.name)
        victim = old.pop(0) if start_first and old else None
        draining = victim is not None and victim.name in serving
        if members_hook is not None:  # one graceful reload swaps them: the healthy new replica in, the old out
            serving = [*(n for n in serving if victim is None or n != victim.name), plan.name]
            members_hook(serving)
            if draining:
                time.sleep(drain_s)  # the reloaded balancer's old workers finish their requests to the victim
        if victim is not None:
            log(f"{name}: stopping old replica {victim.name}")
            report.stopped += driver.remove([victim])
    if old:  # fewer replicas than before, leftovers of an interrupted run, or the stop-first ones parked above
        if members_hook is not None:
            serving = [n for n in serving if n not in {c.name for c in old}]
            members_hook(serving)
            time.sleep(drain_s)
        report.stopped += [n for n in driver.remove(old) if n not in parked]
    report.wall_s = time.monotonic() - t0
    return report
