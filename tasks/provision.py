"""Tasks of provision-helix: pre-flight facts from the target, then its objects and the environment's secrets.
The decisions (versions, memory, ports, volumes, RBAC, storage, node capacity) are ``helix_ops.preflight``'s.

Each target kind has one pre-flight and one provisioning implementation; :func:`preflight_checks` and
:func:`provision_objects` pick them from ``PREFLIGHTS`` / ``PROVISIONERS`` by ``target.kind``, the one place that
does. On the engine: the engine's version and memory, this machine's Compose, the host port, the volumes; then
networks and volumes. On Kubernetes, through the API server: its version, the namespace, every verb of
``deployments/rbac/role.yaml`` (SelfSubjectAccessReviews), the PVCs' StorageClass, the schedulable nodes'
allocatable memory and CPU; nothing is created (deploy-helix applies the namespace and the objects).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from prefect import task
from prefect.cache_policies import NO_CACHE

from helix_ops import preflight
from helix_ops.descriptor import Descriptor
from helix_ops.errors import HelixOpsError
from helix_ops.preflight import AccessNeed, Check, NodeFact, StorageClassFact, VolumeFact

if TYPE_CHECKING:
    from drivers.kube import KubeDriver
    from drivers.target import Target
    from drivers.target_engine import EngineTarget
    from drivers.target_kube import KubeTarget

REPO = Path(__file__).resolve().parents[1]


def _local_engine(engine_url: str | None) -> bool:
    return engine_url is None or engine_url.startswith(("unix://", "npipe://"))


def mem_available() -> int | None:
    """MemAvailable of this machine from /proc/meminfo (bytes), None where there is no such file."""
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def port_bindable(port: int) -> bool:
    """Whether this machine can bind ``port`` on all addresses (nothing listens on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def compose_version() -> str | None:
    """``docker compose version --short`` on this machine, or None when there is no docker CLI."""
    docker = shutil.which("docker")
    if not docker:
        return None
    try:
        out = subprocess.run([docker, "compose", "version", "--short"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@task(name="preflight-checks", timeout_seconds=180, cache_policy=NO_CACHE)
def preflight_checks(descriptor: Descriptor, target: Target, memory_available: int | None = None) -> list[Check]:
    """Every pre-flight check of ``descriptor``'s environment on ``target``; failed checks carry their fix.

    ``memory_available`` overrides the engine host's measured free memory (bytes); on Kubernetes the nodes'
    allocatable memory is read instead.
    """
    return PREFLIGHTS[target.kind](descriptor, target, memory_available)


@task(name="provision-objects", retries=2, retry_delay_seconds=2, timeout_seconds=120, cache_policy=NO_CACHE)
def provision_objects(descriptor: Descriptor, target: Target) -> list[str]:
    """Create what the target needs before the first deploy (one line each): the engine's networks and volumes;
    nothing on Kubernetes (deploy-helix applies the namespace and every object)."""
    return PROVISIONERS[target.kind](descriptor, target)


# --- engine ---------------------------------------------------------------------------------------------------


def engine_preflight(descriptor: Descriptor, target: EngineTarget, memory_available: int | None) -> list[Check]:
    """The engine's pre-flight: reachable, version, Compose, memory, the load balancer's host port, volumes."""
    from drivers.engine import PROJECT_LABEL, SERVICE_LABEL, EngineDriver
    from helix_ops.render.compose import render_compose
    from helix_ops.stack import build_stack

    engine_url = target.base_url
    stack = build_stack(descriptor)
    checks: list[Check] = []
    try:
        driver = EngineDriver.connect(engine_url, descriptor.project, descriptor.environment, timeout=20)
    except HelixOpsError as exc:
        checks.append(Check("engine reachable", "fail", str(exc).split(" (hint")[0],
                            "start the engine (dockerd, or `podman system service`), or pass the right engine_url "
                            "(the engine block's base_url)"))
        return checks
    checks.append(Check("engine reachable", "pass", f"{engine_url or 'DOCKER_HOST / default socket'} answers"))
    info = driver.client.version()
    component = (info.get("Components") or [{}])[0].get("Name", "Docker Engine")
    checks.append(preflight.check_engine(component, info.get("Version", ""), info.get("ApiVersion", "")))
    checks.append(preflight.check_compose(compose_version()))
    total = driver.client.info().get("MemTotal")
    available = memory_available if memory_available is not None else (
        mem_available() if _local_engine(engine_url) else None)
    checks.append(preflight.check_memory(stack, available, total))

    host_port = descriptor.services.nginx.host_port
    taken: dict[int, str] = {}
    ours = False
    for c in driver.client.containers.list():
        for bindings in (c.attrs.get("NetworkSettings", {}).get("Ports") or {}).values():
            for b in bindings or []:
                if int(b.get("HostPort") or 0) == host_port:
                    if c.labels.get(PROJECT_LABEL) == descriptor.project and c.labels.get(SERVICE_LABEL) == "nginx":
                        ours = True
                    else:
                        taken[host_port] = f"container {c.name}"
    if host_port not in taken and not ours and _local_engine(engine_url) and not port_bindable(host_port):
        taken[host_port] = "a process on this machine"
    checks += preflight.check_ports({"services.nginx.host_port": host_port}, taken)

    doc = render_compose(stack)
    existing = [VolumeFact(v.name, (v.attrs.get("Labels") or {}).get(PROJECT_LABEL))
                for v in driver.client.volumes.list()]
    checks += preflight.check_volumes(descriptor.project, doc.get("volumes", {}), existing)
    return checks


def engine_objects(descriptor: Descriptor, target: EngineTarget) -> list[str]:
    """Create the project's networks and volumes (kept when they exist), labelled as deploy-helix expects."""
    from helix_ops.plan import compose_objects
    from helix_ops.render.compose import render_compose
    from helix_ops.stack import build_stack

    driver = target.driver()
    out = []
    for obj in compose_objects(render_compose(build_stack(descriptor))):
        kind, name = obj.identity.split("/", 1)
        if kind == "network":
            out.append(driver.ensure_network(name, obj.spec, obj.spec_hash))
        elif kind == "volume":
            out.append(driver.ensure_volume(name, obj.spec_hash))
    return out


# --- Kubernetes -----------------------------------------------------------------------------------------------


def kube_preflight(descriptor: Descriptor, target: KubeTarget, memory_available: int | None = None) -> list[Check]:
    """The cluster's pre-flight through its API server: reachable and ≥ 1.28, the namespace, the Role file's
    verbs, the PVCs' StorageClass, the schedulable nodes' allocatable memory and CPU. ``memory_available`` is
    not used (the nodes say)."""
    from helix_ops.render.kubernetes import render_kubernetes
    from helix_ops.stack import build_stack

    manifests = render_kubernetes(build_stack(descriptor))
    namespace = descriptor.kubernetes.namespace
    fix = ("start the cluster, or pass the right kubeconfig / kube_context / cluster_block (check with: kubectl "
           "--kubeconfig <file> version)")
    try:
        driver = target.driver()
    except HelixOpsError as exc:
        return [Check("kubernetes API server reachable", "fail", str(exc).split(" (hint")[0], fix)]
    try:
        try:
            version = driver.version()
        except HelixOpsError as exc:
            return [Check("kubernetes API server reachable", "fail", str(exc).split(" (hint")[0], fix)]
        checks = [Check("kubernetes API server reachable", "pass", f"{driver.server} answers ({target.where()})"),
                  preflight.check_kubernetes(version.get("gitVersion") or "?", descriptor)]

        try:
            exists = kube_namespace_exists(driver, namespace)
            may_create = access_allowed(driver, AccessNeed("create", "", "namespaces")) if exists is False else None
            checks.append(preflight.check_namespace(namespace, exists, may_create))
            try:
                needs = preflight.rbac_needs(yaml.safe_load_all((REPO / preflight.ROLE_FILE).read_text()),
                                             namespace)
            except (OSError, yaml.YAMLError, ValueError) as exc:
                checks.append(Check("rbac", "fail", f"cannot read {preflight.ROLE_FILE}: {exc}",
                                    "run from a helix-ops checkout with a valid deployments/rbac/role.yaml"))
            else:
                checks += preflight.check_access(needs, {n: access_allowed(driver, n) for n in needs})
            checks += preflight.check_storage(preflight.volume_claims(manifests), kube_storage_classes(driver))
            checks += preflight.check_capacity(preflight.pod_requests(manifests), kube_nodes(driver))
        except HelixOpsError as exc:
            checks.append(Check("kubernetes API", "fail", str(exc).split(" (hint")[0],
                                "check the kubeconfig's credentials (a valid, unexpired client certificate or "
                                "token) and that the API server stays up"))
        return checks
    finally:
        driver.close()


def kube_objects(descriptor: Descriptor, target: KubeTarget) -> list[str]:
    """Nothing: deploy-helix applies the namespace and every object by server-side apply."""
    return []


def _kube_call(driver: KubeDriver, fn: Callable[[], Any]) -> tuple[Any, int]:
    """``(value, 200)``, or ``(None, HTTP code)`` when the API server refuses (403, 404, …); a 401 and a lost
    connection raise (:class:`helix_ops.errors.DriverError`)."""
    import httpx2
    from lightkube import ApiError

    from drivers.kube import KubeApiError, KubeUnreachable

    try:
        return fn(), 200
    except ApiError as exc:
        code = int(getattr(exc.status, "code", 0) or exc.response.status_code)
        if code == 401:
            raise KubeApiError("authenticate", "-", None, 401, exc.status.message or "Unauthorized") from None
        return None, code
    except httpx2.TransportError as exc:
        raise KubeUnreachable(driver.server, f"{type(exc).__name__}: {exc}") from None


def kube_namespace_exists(driver: KubeDriver, namespace: str) -> bool | None:
    """True / False; ``None`` when this identity may not read it."""
    from lightkube.resources.core_v1 import Namespace

    _, code = _kube_call(driver, lambda: driver.client.get(Namespace, namespace))
    if code in (200, 404):
        return code == 200
    if code == 403:
        return None
    raise HelixOpsError(f"reading namespace {namespace}: HTTP {code}")


def access_allowed(driver: KubeDriver, need: AccessNeed) -> bool | None:
    """A SelfSubjectAccessReview of ``need``: allowed or not; ``None`` when the review itself was refused."""
    from lightkube.models.authorization_v1 import ResourceAttributes, SelfSubjectAccessReviewSpec
    from lightkube.resources.authorization_v1 import SelfSubjectAccessReview

    attrs = ResourceAttributes(verb=need.verb, group=need.group, resource=need.resource,
                               subresource=need.subresource or None, namespace=need.namespace,
                               name=need.name or None)
    review = SelfSubjectAccessReview(spec=SelfSubjectAccessReviewSpec(resourceAttributes=attrs))
    answer, _ = _kube_call(driver, lambda: driver.client.create(review))
    if answer is None or answer.status is None:
        return None
    return bool(answer.status.allowed) and not answer.status.denied


def kube_storage_classes(driver: KubeDriver) -> list[StorageClassFact] | None:
    """The cluster's StorageClasses; ``None`` when this identity may not list them."""
    from lightkube.resources.storage_v1 import StorageClass

    items, code = _kube_call(driver, lambda: list(driver.client.list(StorageClass)))
    if items is None:
        if code == 403:
            return None
        raise HelixOpsError(f"listing StorageClasses: HTTP {code}")
    return [StorageClassFact(sc.metadata.name, preflight.is_default_class(sc.metadata.annotations))
            for sc in items]


def kube_nodes(driver: KubeDriver) -> list[NodeFact] | None:
    """Every node's allocatable and schedulability; ``None`` when this identity may not list nodes."""
    from lightkube.resources.core_v1 import Node

    items, code = _kube_call(driver, lambda: list(driver.client.list(Node)))
    if items is None:
        if code == 403:
            return None
        raise HelixOpsError(f"listing nodes: HTTP {code}")
    return [preflight.node_fact(n.to_dict()) for n in items]


PREFLIGHTS: dict[str, Callable[[Descriptor, Any, int | None], list[Check]]] = {
    "engine": engine_preflight, "kubernetes": kube_preflight}
PROVISIONERS: dict[str, Callable[[Descriptor, Any], list[str]]] = {
    "engine": engine_objects, "kubernetes": kube_objects}


@task(name="provision-secrets", timeout_seconds=120, cache_policy=NO_CACHE)
def provision_secrets(descriptor: Descriptor, env_file: str | None = None) -> list[str]:
    """Create the environment's credential blocks that are missing (generated secrets; existing blocks are
    kept), and write the Compose ``.env`` (mode 0600) when ``env_file`` is given. Returns one line per block."""
    from blocks.provision import bootstrap
    from blocks.secrets import compose_env, load_environment_secrets, write_env_file

    lines = [o.line() for o in bootstrap(descriptor, {})]
    if env_file:
        write_env_file(env_file, compose_env(load_environment_secrets(descriptor)))
        lines.append(f"wrote {env_file} (0600)")
    return lines


def summary(checks: list[Check]) -> dict[str, Any]:
    return {"checks": [{"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix} for c in checks],
            "failed": [c.name for c in checks if c.failed]}
