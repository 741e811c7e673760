"""Prefect tasks over the Kubernetes driver (``drivers.kube``): one verb on one object each, with retries.

A task gets a :class:`KubeTarget` (plain data: where the cluster is, whose objects) and the descriptor, and
renders what it needs itself: the Secret's values are loaded from the environment's Prefect blocks inside the
task (``cache_policy=NO_CACHE``) and never passed in, logged or returned. Every task that applies checks that
the rendering it gets still has the spec hash the published plan showed, so an approved plan is what runs.

Secret rotation's Kubernetes part is :func:`apply_secret_and_roll_consumers` (see its docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from drivers.kube import WORKLOADS, KubeApiError
from drivers.target_kube import KubeTarget
from helix_ops.descriptor import Descriptor
from helix_ops.errors import PlanError, WaitTimeout
from helix_ops.plan import CurrentState, DesiredObject, Plan, compute_plan, kubernetes_objects

Manifest = dict[str, Any]


def helix_config_text(desc: Descriptor, descriptor_file: str | Path) -> str | None:
    """The helix.config.yaml the descriptor names (relative to the descriptor file), for the ConfigMap."""
    if not desc.helix_config:
        return None
    from helix_ops.config import read_helix_config_text

    return read_helix_config_text(Path(descriptor_file).parent / desc.helix_config)  # bounded, UTF-8 checked


def render_for_cluster(desc: Descriptor, config_text: str | None, with_secrets: bool = True) -> list[Manifest]:
    """The manifests the driver applies: the rendering with the blocks' secret values and the secret
    checksums on the consumers' pod templates. Call it inside a task only (it holds secret values)."""
    from helix_ops.render.kubernetes import render_kubernetes, with_secret_checksums
    from helix_ops.stack import build_stack

    stack = build_stack(desc, config_text)
    if not with_secrets:
        return render_kubernetes(stack, None)
    from blocks.secrets import load_environment_secrets, secret_values

    secrets = load_environment_secrets(desc)
    # the Neo4j user travels with its password (a rotation's bridge user): both go into helix-secrets
    values = {**secret_values(secrets), "neo4j-user": secrets.neo4j_user}
    return with_secret_checksums(stack, render_kubernetes(stack, values))


def _desired(desc: Descriptor, config_text: str | None) -> dict[str, tuple[DesiredObject, Manifest]]:
    manifests = render_for_cluster(desc, config_text)
    return {o.identity: (o, m) for o, m in zip(kubernetes_objects(manifests), manifests)}


def _checked(desired: Mapping[str, tuple[DesiredObject, Manifest]], identity: str,
             spec_hash: str | None) -> tuple[DesiredObject, Manifest]:
    if identity not in desired:
        raise PlanError(f"{identity} is not in the rendering of this descriptor")
    obj, manifest = desired[identity]
    if spec_hash is not None and obj.spec_hash != spec_hash:
        raise PlanError(f"{identity} renders to spec hash {obj.spec_hash}, not the planned {spec_hash}: the "
                        "descriptor or a secret changed since the plan was made; run again for a new plan")
    return obj, manifest


def workload_images(state: CurrentState) -> dict[str, str]:
    """Service → the image its Deployment/StatefulSet runs now (the Kubernetes ``images_from_state``)."""
    out = {}
    for obj in state.objects:
        kind, _, rest = obj.identity.partition("/")
        if kind in WORKLOADS and obj.fields.get("image"):
            out[rest.rsplit("/", 1)[-1]] = str(obj.fields["image"])
    return out


def is_workload(identity: str) -> bool:
    return identity.split("/", 1)[0] in WORKLOADS


def name_of(identity: str) -> str:
    return identity.rsplit("/", 1)[-1]


@task(name="connect-kubernetes", retries=2, retry_delay_seconds=[1, 3], timeout_seconds=60, cache_policy=NO_CACHE)
def connect_kube(target: KubeTarget) -> dict[str, str]:
    """Ask the API server its version (retried: a server that is down fails after the retries, clearly)."""
    driver = target.driver()
    try:
        return driver.version()
    finally:
        driver.close()


@task(name="read-kubernetes-state", retries=2, retry_delay_seconds=2, timeout_seconds=120, cache_policy=NO_CACHE)
def read_kube_state(target: KubeTarget) -> CurrentState:
    """Every object of the environment (by helix-ops labels) with its recorded spec hash, image, replicas."""
    driver = target.driver()
    try:
        return driver.current_state()
    finally:
        driver.close()


@task(name="plan-kubernetes", retries=1, retry_delay_seconds=2, timeout_seconds=120, cache_policy=NO_CACHE)
def plan_kube(target: KubeTarget, desc: Descriptor, config_text: str | None) -> Plan:
    """The plan: the rendering (with the blocks' secrets; Secret diffs redacted) against the live state."""
    driver = target.driver()
    try:
        current = driver.current_state()
    finally:
        driver.close()
    return compute_plan([o for o, _ in _desired(desc, config_text).values()], current)


@task(name="apply-kubernetes-objects", retries=2, retry_delay_seconds=2, timeout_seconds=300, cache_policy=NO_CACHE)
def apply_kube_objects(target: KubeTarget, desc: Descriptor, config_text: str | None,
                       changes: list[tuple[str, str | None]]) -> dict[str, str]:
    """Server-side apply the named objects (identity, planned spec hash) in the order given: what is not a
    workload (namespace, policies, Secret, ConfigMap, Services, budgets, Ingress). Returns identity → result."""
    desired = _desired(desc, config_text)
    driver = target.driver()
    try:
        out = {}
        for identity, spec_hash in changes:
            obj, manifest = _checked(desired, identity, spec_hash)
            out[identity] = driver.apply(manifest, obj.spec_hash)
        return out
    finally:
        driver.close()


@task(name="roll-kubernetes-workload", timeout_seconds=1800, cache_policy=NO_CACHE)
def roll_kube_workload(target: KubeTarget, desc: Descriptor, config_text: str | None, identity: str,
                       spec_hash: str | None = None, deadline_s: float = 180, rollback: bool = True,
                       take_back: bool = False) -> dict[str, Any]:
    """Apply one Deployment/StatefulSet and wait for its rollout within ``deadline_s``; when it misses the
    deadline, the previous pod template is applied again and ``drivers.kube.RolloutFailed`` is raised
    (``rolled_back`` says whether the previous revision serves again). ``take_back`` (a drift update): the
    owned fields another field manager changed or added are set to the rendering's too. Not retried: a retry
    would apply again."""
    logger = get_run_logger()
    obj, manifest = _checked(_desired(desc, config_text), identity, spec_hash)
    driver = target.driver()
    try:
        return driver.roll(manifest, obj.spec_hash, deadline_s, rollback=rollback, log=logger.info,
                           take_back=take_back)
    finally:
        driver.close()


@task(name="delete-kubernetes-object", retries=2, retry_delay_seconds=2, timeout_seconds=120, cache_policy=NO_CACHE)
def delete_kube_object(target: KubeTarget, identity: str) -> str:
    """Delete one object of the environment (only if its labels say it is; never the namespace)."""
    driver = target.driver()
    try:
        return driver.delete(identity)
    finally:
        driver.close()


@task(name="kubernetes-status", retries=1, timeout_seconds=120, cache_policy=NO_CACHE)
def kube_status(target: KubeTarget) -> list[dict[str, Any]]:
    """Per workload: image, ready/desired replicas and whether its rollout is complete."""
    driver = target.driver()
    try:
        state = driver.current_state()
        rows = []
        for obj in state.objects:
            kind, _, _ = obj.identity.partition("/")
            if kind not in WORKLOADS:
                continue
            name = name_of(obj.identity)
            done, failure, seen = driver.rollout_status(kind, name)
            health = "ready" if done else (failure or f"rolling out: {seen}")
            rows.append({"service": name, "kind": kind, "image": seen.get("image", ""),
                         "replicas": f"{seen.get('ready', 0)}/{seen.get('want', 0)}", "health": health,
                         "endpoint": f"{name}.{target.namespace}.svc"})
        return rows
    finally:
        driver.close()


def apply_plan(target: KubeTarget, desc: Descriptor, config_text: str | None, plan: Plan, deadline_s: float,
               log: Callable[[str], None] = lambda m: None, only: Iterable[str] | None = None) -> list[str]:
    """Carry out ``plan`` in its order (call from a flow): runs of non-workload objects in one task, each
    workload in its own rollout task, deletes last (in reverse apply order). Returns the identities changed."""
    wanted = set(only) if only is not None else None
    changed: list[str] = []
    batch: list[tuple[str, str | None]] = []

    def flush() -> None:
        if batch:
            results = apply_kube_objects(target, desc, config_text, list(batch))
            changed.extend(i for i, r in results.items() if r != "unchanged")
            batch.clear()

    for change in plan.changes:
        if change.action == "noop" or (wanted is not None and change.identity not in wanted):
            continue
        if change.action == "delete":
            flush()
            result = delete_kube_object(target, change.identity)
            log(f"{change.identity}: {result}")
            if result == "deleted":
                changed.append(change.identity)
        elif is_workload(change.identity):
            flush()
            roll_kube_workload(target, desc, config_text, change.identity, change.spec_hash, deadline_s,
                               take_back=change.drift)
            changed.append(change.identity)
        else:
            batch.append((change.identity, change.spec_hash))
    flush()
    return changed


@task(name="kubernetes-secret-and-consumers", timeout_seconds=3600, cache_policy=NO_CACHE)
def apply_secret_and_roll_consumers(target: KubeTarget, desc: Descriptor, config_text: str | None = None,
                                    services: list[str] | None = None, deadline_s: float = 180) -> dict[str, Any]:
    """The Kubernetes part of a secret rotation: write the blocks' current values into the ``helix-secrets``
    Secret, then roll exactly the workloads that read a changed value (their pod template's
    ``helix-ops/secret-checksum`` differs from the live one), one at a time, each gated on its rollout with a
    deadline and rolled back when it misses it. Workloads whose values did not change keep their pods.

    Call it after the new values are in the environment's Prefect blocks (and the servers accept them), under
    the environment lease, e.g. from rotate-helix-secrets' roll step::

        target = KubeTarget.for_descriptor(desc, kubeconfig=kubeconfig)
        report = apply_secret_and_roll_consumers(target, desc, helix_config_text(desc, path),
                                                 services=["dashboard"], deadline_s=180)

    The Secret carries the Neo4j user (``neo4j-user``) with ``neo4j-password``: after a Neo4j rotation step
    switched the Neo4j block's user and password (to the bridge user, or back), one call updates both keys
    in one apply and rolls exactly the Neo4j consumers (the app services, whose checksum covers both keys);
    a consumer never starts with the new user and the old password.

    ``services`` limits the rolls to those services (None: every consumer whose checksum changed).
    Returns ``{"secret": created|updated|unchanged, "rolled": [...], "kept": [...]}`` (no secret values).
    """
    from helix_ops.render.kubernetes import SECRET_CHECKSUM
    from helix_ops.stack import SECRET_NAME

    logger = get_run_logger()
    desired = _desired(desc, config_text)
    secret_id = f"Secret/{target.namespace}/{SECRET_NAME}"
    driver = target.driver()
    try:
        obj, manifest = desired[secret_id]
        secret_result = driver.apply(manifest, obj.spec_hash)
        logger.info("%s: %s", secret_id, secret_result)
        rolled, kept = [], []
        for identity, (obj, manifest) in desired.items():
            if not is_workload(identity):
                continue
            name = name_of(identity)
            checksum = (manifest["spec"]["template"]["metadata"].get("annotations") or {}).get(SECRET_CHECKSUM)
            if checksum is None:
                continue
            live = driver.pod_template_annotation(manifest["kind"], name, SECRET_CHECKSUM)
            if live == checksum or (services is not None and name not in services):
                kept.append(name)
                continue
            driver.roll(manifest, obj.spec_hash, deadline_s, log=logger.info)
            rolled.append(name)
        return {"secret": secret_result, "rolled": rolled, "kept": kept}
    finally:
        driver.close()


# --- deploy-helix's three steps on Kubernetes (tasks.target.deployer_for picks them by the target's kind) ----

def plan_deploy(target: KubeTarget, desc: Descriptor, config_text: str | None) -> Plan:
    """The deploy plan: the rendering against the live objects (see :func:`plan_kube`)."""
    return plan_kube(target, desc, config_text)


def apply_deploy(target: KubeTarget, desc: Descriptor, config_text: str | None, plan: Plan, deadline_s: float,
                 log: Callable[[str], None] = lambda m: None) -> list[str]:
    """Carry out ``plan`` (see :func:`apply_plan`)."""
    return apply_plan(target, desc, config_text, plan, deadline_s, log=log)


def deploy_status(target: KubeTarget, desc: Descriptor) -> list[dict[str, Any]]:
    """Per workload: image, ready/desired replicas, health, endpoint, and ``healthy`` (its rollout is complete)."""
    return [{**r, "healthy": r["health"] == "ready"} for r in kube_status(target)]


# --- rotate-helix-secrets' two steps on Kubernetes ------------------------------------------------------------

@contextmanager
def rotation_access(target: KubeTarget) -> Iterator[Callable[[], dict[str, Any]]]:
    """For the body: a function that (re)opens port-forwards to Redis and Neo4j through the API server and
    returns the rotation's endpoints (a roll replaces the pods, so each call forwards to the pods of the
    moment and closes the earlier forwards). Neo4j is ``None`` when no Neo4j pod is ready (only a Neo4j
    rotation needs it, and says so). No Sentinels on Kubernetes."""
    from helix_ops import guide

    stack = ExitStack()

    def find() -> dict[str, Any]:
        stack.close()
        redis = stack.enter_context(target.endpoint("redis", guide.REDIS_PORT))
        try:
            neo4j = stack.enter_context(target.endpoint("neo4j", guide.NEO4J_BOLT_PORT))
        except (WaitTimeout, KubeApiError) as exc:
            get_run_logger().info("no Neo4j endpoint for the rotation: %s", exc)
            neo4j = None
        return {"redis": [list(redis)], "redis_services": ["redis"], "sentinels": [], "sentinel_services": [],
                "neo4j": f"bolt://{neo4j[0]}:{neo4j[1]}" if neo4j else None}

    try:
        yield find
    finally:
        stack.close()


def roll_consumers(target: KubeTarget, descriptor: Descriptor, config_text: str | None, services: tuple[str, ...],
                   roll_id: str, health_timeout_s: float, parallelism: int = 1) -> list[dict[str, Any]]:
    """Write the blocks' values into the Secret and roll those of ``services`` whose values changed
    (:func:`apply_secret_and_roll_consumers`; ``roll_id`` and ``parallelism`` are the engine's: a workload's
    pod-template checksum decides here, and workloads roll one at a time)."""
    return [apply_secret_and_roll_consumers(target, descriptor, config_text, services=list(services),
                                            deadline_s=health_timeout_s)]


# --- upgrade-helix / scale-helix's steps on Kubernetes ----------------------------------------------------------

def running_images(target: KubeTarget) -> dict[str, str]:
    """Service → the image its Deployment/StatefulSet runs now."""
    return workload_images(read_kube_state(target))


def service_of(identity: str) -> str | None:
    """The workload a plan identity rolls, or None for any other object."""
    return name_of(identity) if is_workload(identity) else None


def is_rollout_failure(exc: Exception) -> bool:
    """Whether a failed roll is one the rollback answers: a missed rollout deadline (a refused or unreachable
    API changed nothing, and is raised as it is)."""
    from drivers.kube import RolloutFailed

    return isinstance(exc, RolloutFailed)


def roll_services(target: KubeTarget, desired: Descriptor, config_text: str | None, changes: list[Any],
                  health_timeout_s: float, drain_s: float = 0, parallel: bool = False
                  ) -> tuple[list[dict[str, Any]], list[str], dict[str, Exception]]:
    """Apply each changed workload and wait for its rollout (``health_timeout_s``), one at a time; a workload
    that misses its deadline is rolled back to its previous pod template by the driver and ends the walk.
    ``drain_s`` and ``parallel`` are the engine's. Returns (reports, workloads done, failures by workload)."""
    reports: list[dict[str, Any]] = []
    done: list[str] = []
    for change in changes:
        try:
            reports.append(roll_kube_workload(target, desired, config_text, change.identity, change.spec_hash,
                                              health_timeout_s))
        except Exception as exc:  # noqa: BLE001 - the caller rolls back and records
            return reports, done, {name_of(change.identity): exc}
        done.append(name_of(change.identity))
    return reports, done, {}


def roll_back(target: KubeTarget, previous: Descriptor, config_text: str | None, done: list[str],
              failures: Mapping[str, Exception], health_timeout_s: float, drain_s: float = 0) -> list[str]:
    """Apply ``previous``'s rendering again to the workloads done (newest first); the failing one was rolled
    back by the driver. Returns what could not be rolled back."""
    from drivers.kube import RolloutFailed

    by_name = {name_of(o.identity): o.identity
               for o in kubernetes_objects(render_for_cluster(previous, config_text, with_secrets=False))
               if is_workload(o.identity)}
    problems = []
    for name in reversed(done):
        try:
            roll_kube_workload(target, previous, config_text, by_name[name], None, health_timeout_s)
        except Exception as again:  # noqa: BLE001 - reported in the audit record
            problems.append(f"{name}: {again}")
    problems += [f"{name}: not rolled back" for name, exc in failures.items()
                 if isinstance(exc, RolloutFailed) and not exc.rolled_back]
    return problems
