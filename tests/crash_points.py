"""The machinery of the randomized crash tests (issue 24, part 4), shared by the flows' modules
(``tests/backup/test_backup_random_crash.py``, ``tests/flows/test_upgrade_random_crash.py``,
``tests/rotate/test_rotate_random_crash.py``).

An ordinary run of a flow records the task boundaries it goes through (:class:`Boundaries`: ``before:<task>#n``
and ``after:<task>#n``, in order); for each seed, ``random.Random(seed)`` picks one (:func:`pick`), and a flow
process (a subprocess, as a worker runs it) SIGKILLs itself exactly there (:func:`run_killed`). Seeds come from
:data:`SEEDS_ENV` (:func:`seeds`): ``HELIX_CRASH_SEEDS=20`` runs seeds 1..20, ``HELIX_CRASH_SEEDS=3,17`` those;
``HELIX_CRASH_POINT=<point>`` kills at that point whatever the seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEEDS_ENV = "HELIX_CRASH_SEEDS"

FLOWS = {
    "backup-helix": ("flows.backup", "backup_helix"),
    "restore-helix": ("flows.restore", "restore_helix"),
    "upgrade-helix": ("flows.upgrade", "upgrade_helix"),
    "rotate-helix-secrets": ("flows.rotate", "rotate_helix_secrets"),
}
"""The flows a killable process can run: name -> (module, function)."""


def seeds(default: list[int]) -> list[int]:
    raw = os.environ.get(SEEDS_ENV, "").strip()
    if not raw:
        return default
    if raw.isdigit():
        return list(range(1, int(raw) + 1))
    return [int(s) for s in raw.split(",") if s.strip()]


POINT_ENV = "HELIX_CRASH_POINT"


def pick(seed: int, points: list[str], canonical: bool = False) -> str:
    """The boundary seed ``seed`` kills at: ``random.Random(seed)``'s choice among ``points`` (in their recorded
    order; with ``canonical``, sorted: a run whose tasks run in parallel records them interleaved differently
    each time, so a seed replays the same point only from a sorted list). ``HELIX_CRASH_POINT`` names the point
    instead (a replay of one printed point)."""
    chosen = os.environ.get(POINT_ENV, "").strip()
    if chosen:
        assert chosen in points, f"{POINT_ENV}={chosen} is not a boundary of this flow: {sorted(points)}"
        return chosen
    return random.Random(seed).choice(sorted(points) if canonical else points)


DRIVER_METHODS = ("create_container", "remove", "stop", "stop_service", "start_containers", "wait_healthy",
                  "update_load_balancer")
"""With ``fine``, the container engine's steps are boundaries too (``before:engine.create_container#n``…): the
points inside a rolling restart (a new replica created, health-gated, the old one removed), which runs in a
task submitted to Prefect's thread pool."""


class Counter:
    """Numbers the boundaries (thread-safe: submitted tasks run in Prefect's thread pool): ``where:name#n``."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, where: str, name: str) -> str:
        key = f"{where}:{name}"
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            return f"{key}#{self.counts[key]}"


def install(boundary: Callable[[str, str], None], set_attr: Callable[[object, str, object], None],
            fine: bool = False) -> None:
    """Call ``boundary(where, name)`` before and after every task the flow calls (``Task.__call__``); with
    ``fine``, before and after every task run (called or submitted: Prefect's ``run_task_sync``) and every
    engine step of :data:`DRIVER_METHODS` instead."""

    def wrapped(original: Callable, name_of: Callable[..., str]) -> Callable:
        def call(*a, **kw):
            name = name_of(*a, **kw)
            boundary("before", name)
            out = original(*a, **kw)
            boundary("after", name)
            return out

        return call

    if not fine:
        from prefect.tasks import Task

        set_attr(Task, "__call__", wrapped(Task.__call__, lambda task, *a, **kw: task.name))
        return
    import prefect.task_engine as task_engine

    from drivers.engine import EngineDriver

    set_attr(task_engine, "run_task_sync",
             wrapped(task_engine.run_task_sync, lambda *a, **kw: (kw["task"] if "task" in kw else a[0]).name))
    for method in DRIVER_METHODS:
        set_attr(EngineDriver, method, wrapped(getattr(EngineDriver, method),
                                               lambda *a, _m=method, **kw: f"engine.{_m}"))


# The flow process: counts the boundaries (as :func:`install` sets them) and SIGKILLs itself at the chosen one;
# prints the result when the run gets through.
KILLABLE = """
import importlib, json, os, signal, sys
sys.path.insert(0, {repo!r})
from tests.crash_points import FLOWS, Counter, install

flow_name, kill_at, args, fine = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4] == "fine"
counter = Counter()

def boundary(where, name):
    if counter(where, name) == kill_at:
        print("killed at", kill_at, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

install(boundary, setattr, fine)
module, function = FLOWS[flow_name]
run = getattr(importlib.import_module(module), function)
print("result", json.dumps(run(**args), default=str), flush=True)
"""


class Boundaries:
    """Records the boundaries a flow run goes through (in this process), as ``where:name#n`` (see
    :func:`install` for ``fine``)."""

    def __init__(self, monkeypatch, fine: bool = False) -> None:
        self.points: list[str] = []
        counter = Counter()
        install(lambda where, name: self.points.append(counter(where, name)), monkeypatch.setattr, fine)


def run_killed(flow_name: str, point: str, args: dict, log: Path, timeout_s: float = 300,
               fine: bool = False) -> tuple[int, str]:
    """Run ``flow_name`` in a flow process that SIGKILLs itself at ``point`` (a boundary of
    ``Boundaries(..., fine)``); ``(returncode, output)``."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    with open(log, "w") as out:
        argv = [flow_name, point, json.dumps(args), "fine" if fine else "tasks"]
        proc = subprocess.Popen([sys.executable, "-c", KILLABLE.format(repo=str(REPO)), *argv], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout_s)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
    return proc.returncode, log.read_text(errors="replace")


def no_records_left(environment: str = "local") -> None:
    """No writer-pause record and no lease-holder record of ``environment`` are left."""
    from prefect.variables import Variable

    from flows.lease import holder_variable
    from tasks.writer_pause import read_pause

    assert read_pause(environment) is None, "the writer-pause record was left"
    assert Variable.get(holder_variable(environment), default=None) is None, "the lease-holder record was left"


def lease_free(environment: str = "local") -> None:
    """No slot of ``environment``'s lease is held."""
    from flows.lease import _active_slots

    assert _active_slots(environment) == 0, "the environment lease is still held"


def settled_health(target, descriptor, services, settle_s: float = 90) -> list[dict]:
    """``service_status`` of ``services`` once every replica that runs passes the product's own health gate
    (``EngineDriver.wait_healthy``), waiting up to ``settle_s`` for replicas just created (a killed roll's);
    fails naming the unhealthy ones after that.

    As in every roll, a replica whose published port refuses every connection while its process listens inside
    (the engine lost the port's forwarding: seen under load, see ``drivers.engine_health.REFUSED_RESTART_S``)
    is restarted once. A restart keeps what the replica holds (its environment), so "it logs in with what it
    holds" is still what passes; a replica that answers but fails its login is never restarted."""
    from concurrent.futures import ThreadPoolExecutor

    from helix_ops.errors import WaitTimeout
    from helix_ops.stack import build_stack
    from tasks.engine import ProbeSpec, health_check, secret_env, service_status

    stack = build_stack(descriptor)
    probes = {n: ProbeSpec(svc.probe.kind, svc.probe.port, svc.probe.path)
              for n in services for svc in [stack.service(n)]}
    driver, secrets = target.driver(), secret_env(descriptor)
    replicas = [(c.labels.get("helix-ops.service"), c) for c in driver.containers() if c.status == "running"
                and c.labels.get("helix-ops.service") in probes]

    def gate(job) -> str | None:
        name, c = job
        check = lambda: health_check(driver, c, probes[name], secrets)  # noqa: E731 - the gate's recheck
        try:
            driver.wait_healthy(c, check(), f"{name} ({c.name}) to be healthy", settle_s, recheck=check)
        except WaitTimeout as exc:
            return f"{name} ({c.name}): {exc}"
        return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        bad = [b for b in pool.map(gate, replicas) if b]
    assert not bad, f"replicas still unhealthy after {settle_s} s: {bad}"
    return service_status.fn(target, probes, descriptor)
