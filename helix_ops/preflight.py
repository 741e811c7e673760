"""Pre-flight checks for provision-helix, pure: versions, memory against the resource table, ports, volumes.

``tasks/provision.py`` gathers the facts (engine version, memory, which host ports are taken, which volumes
exist and who owns them); the functions here decide and say what to fix. Every :class:`Check` that fails
carries a ``fix``.

Engine versions: the guide asks for Docker 24 (Engine API 1.43) and Compose 2.20. Podman serves the Docker
API too, but reports its *own* version (``4.3.1``) and a compat API version that lags Docker's (Podman 4.3
reports API ``1.41``, Docker 20.10's level). helix-ops' engine driver uses only calls that exist in API 1.41
(containers, networks, volumes, archives, exec), so Podman is accepted from 4.3 on by its own version, and
the report says so rather than pretending it is Docker 24.

Length (about 520 lines): one module on purpose. Each target's checks share the same small vocabulary
(:class:`Check`, the memory arithmetic, the version parsing), and a reader checking "why did pre-flight refuse"
should find every rule in one place; the Kubernetes half is the later third.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from helix_ops.descriptor import Descriptor
from helix_ops.quantities import memory_bytes
from helix_ops.stack import Stack

MIN_DOCKER = (24, 0)
MIN_DOCKER_API = (1, 43)
MIN_PODMAN = (4, 3)
MIN_PODMAN_API = (1, 41)
MIN_COMPOSE = (2, 20)
MIN_KUBERNETES = (1, 28)

CheckStatus = Literal["pass", "fail", "warn"]


@dataclass(frozen=True)
class Check:
    """One pre-flight check: ``name``, ``status``, what was seen and, unless it passed, how to fix it."""

    name: str
    status: CheckStatus
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def line(self) -> str:
        text = f"[{self.status}] {self.name}: {self.detail}"
        return f"{text} — fix: {self.fix}" if self.status != "pass" and self.fix else text


def version_tuple(text: str) -> tuple[int, ...]:
    """``"24.0.7"`` → (24, 0, 7); ``"v1.29.3+k3s1"`` → (1, 29, 3); ``"4.3.1-dev"`` → (4, 3, 1).

    Raises ValueError when ``text`` holds no version."""
    match = re.match(r"^v?(\d+(?:\.\d+)*)", text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a version")
    return tuple(int(p) for p in match.group(1).split("."))


def at_least(version: Sequence[int], minimum: Sequence[int]) -> bool:
    """Compare versions numerically (``1.9 < 1.28``), padding the shorter with zeros."""
    n = max(len(version), len(minimum))
    return tuple(version) + (0,) * (n - len(version)) >= tuple(minimum) + (0,) * (n - len(minimum))


def _fmt(v: Sequence[int]) -> str:
    return ".".join(map(str, v))


def check_engine(engine: str, version: str, api_version: str) -> Check:
    """The engine's own version against the guide's minimum (Docker 24; Podman 4.3 by its own scale)."""
    name = "engine version"
    try:
        have = version_tuple(version)
        api = version_tuple(api_version) if api_version else ()
    except ValueError:
        return Check(name, "fail", f"{engine} reported an unreadable version {version!r}",
                     "check the engine address; it should answer GET /version")
    if "podman" in engine.lower():
        if not at_least(have, MIN_PODMAN):
            return Check(name, "fail", f"Podman {version} (API {api_version}) is older than {_fmt(MIN_PODMAN)}",
                         f"upgrade Podman to {_fmt(MIN_PODMAN)} or later, or use Docker {_fmt(MIN_DOCKER)}+")
        note = (f"Podman {version} serves Docker API {api_version}, below Docker 24's "
                f"{_fmt(MIN_DOCKER_API)}; accepted: the engine driver only uses calls from API {_fmt(MIN_PODMAN_API)}")
        if api and not at_least(api, MIN_PODMAN_API):
            return Check(name, "fail", f"Podman {version} serves Docker API {api_version} < {_fmt(MIN_PODMAN_API)}",
                         "upgrade Podman")
        return Check(name, "pass", note)
    if not at_least(have, MIN_DOCKER):
        return Check(name, "fail", f"Docker {version} (API {api_version}) is older than the guide's {_fmt(MIN_DOCKER)}",
                     f"upgrade Docker Engine to {_fmt(MIN_DOCKER)} or later (API {_fmt(MIN_DOCKER_API)})")
    return Check(name, "pass", f"Docker {version} (API {api_version}) ≥ {_fmt(MIN_DOCKER)}")


def check_compose(version: str | None) -> Check:
    """Docker Compose ≥ 2.20 when an operator runs the rendered Compose file by hand (``None``: not found)."""
    if version is None:
        return Check("compose version", "warn", "docker compose not found on this machine",
                     f"install Docker Compose {_fmt(MIN_COMPOSE)}+ if you run the rendered compose file by hand; "
                     "helix-ops itself talks to the engine API")
    try:
        ok = at_least(version_tuple(version), MIN_COMPOSE)
    except ValueError:
        return Check("compose version", "warn", f"unreadable Compose version {version!r}", "")
    if not ok:
        return Check("compose version", "fail", f"Docker Compose {version} < {_fmt(MIN_COMPOSE)}",
                     f"upgrade Docker Compose to {_fmt(MIN_COMPOSE)} or later")
    return Check("compose version", "pass", f"Docker Compose {version}")


def check_kubernetes(server_version: str | None, descriptor: Descriptor) -> Check:
    """The cluster's version (``None``: render-only, the descriptor's ``kubernetes.version`` is checked)."""
    name = "kubernetes version"
    text = server_version or descriptor.kubernetes.version
    source = "cluster" if server_version else "descriptor (render only: no cluster contacted)"
    try:
        ok = at_least(version_tuple(text), MIN_KUBERNETES)
    except ValueError:
        return Check(name, "fail", f"unreadable Kubernetes version {text!r}", "check the cluster's /version")
    if not ok:
        return Check(name, "fail", f"Kubernetes {text} ({source}) < {_fmt(MIN_KUBERNETES)}",
                     f"upgrade the cluster to {_fmt(MIN_KUBERNETES)} or later")
    return Check(name, "pass", f"Kubernetes {text} ({source}) ≥ {_fmt(MIN_KUBERNETES)}")


def memory_needed(stack: Stack) -> dict[str, int]:
    """Service → bytes reserved (memory request × replicas), from the descriptor and the guide's table."""
    return {svc.name: memory_bytes(svc.resources.request_memory) * svc.replicas for svc in stack.services}


def _mem(n_bytes: int) -> str:
    return f"{n_bytes / (1 << 30):.1f}Gi"


def check_memory(stack: Stack, available_bytes: int | None, total_bytes: int | None) -> Check:
    """The stack's memory requests against what the engine's host has free (or its total when free is unknown)."""
    needed = memory_needed(stack)
    total_needed = sum(needed.values())
    biggest = ", ".join(f"{n} {_mem(b)}" for n, b in sorted(needed.items(), key=lambda x: -x[1])[:3])
    have, what = (available_bytes, "available") if available_bytes is not None else (total_bytes, "total")
    if have is None:
        return Check("memory", "warn", f"the engine did not report its memory; the stack requests "
                     f"{_mem(total_needed)}", "check the host's free memory by hand")
    if total_needed > have:
        return Check("memory", "fail",
                     f"the stack requests {_mem(total_needed)} but the host has {_mem(have)} {what} "
                     f"(largest: {biggest})",
                     "add memory to the host, stop other workloads, or lower services.<name>.resources.requests "
                     "(not below the guide's minimums) in the descriptor")
    return Check("memory", "pass", f"requests {_mem(total_needed)} of {_mem(have)} {what}")


def check_ports(wanted: Mapping[str, int], taken: Mapping[int, str]) -> list[Check]:
    """Each host port the stack publishes (``what`` → port) must be free; ``taken`` says who holds a port."""
    out = []
    for what, port in sorted(wanted.items()):
        if port in taken:
            out.append(Check(f"host port {port}", "fail", f"{what} wants port {port}, held by {taken[port]}",
                             f"stop what holds port {port}, or set services.nginx.host_port to a free port"))
        else:
            out.append(Check(f"host port {port}", "pass", f"{what}: port {port} is free"))
    return out


@dataclass(frozen=True)
class VolumeFact:
    """An existing engine volume: its name and the helix-ops project that labelled it (``None``: unlabelled)."""

    name: str
    project: str | None


def check_volumes(project: str, wanted: Iterable[str], existing: Iterable[VolumeFact]) -> list[Check]:
    """A volume the stack needs must be absent (created here) or ours; another owner's volume is a failure."""
    by_name = {v.name: v for v in existing}
    out = []
    for short in sorted(wanted):
        full = f"{project}_{short}"
        vol = by_name.get(full)
        if vol is None:
            out.append(Check(f"volume {full}", "pass", "absent: will be created"))
        elif vol.project == project:
            out.append(Check(f"volume {full}", "pass", "exists and belongs to this project: kept (data survives)"))
        else:
            owner = f"project {vol.project}" if vol.project else "something outside helix-ops"
            out.append(Check(f"volume {full}", "fail", f"exists and belongs to {owner}",
                             f"remove or rename volume {full} (check its data first), or choose another `project`"))
    return out


# --- Kubernetes: the cluster itself (facts gathered through the API server by tasks/provision.py) -----------

ROLE_FILE = "deployments/rbac/role.yaml"
ROLE_TEMPLATE_NAMESPACE = "helix"
"""The namespace the Role file is written for; its Role and ``resourceNames`` stand for the environment's."""
DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                             "storageclass.beta.kubernetes.io/is-default-class")


@dataclass(frozen=True)
class AccessNeed:
    """One verb helix-ops needs: ``verb`` on ``group``/``resource`` (``/subresource``), in ``namespace``
    (``None``: cluster scope), on the object ``name`` only when set: a SelfSubjectAccessReview's attributes."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str | None = None
    name: str = ""

    @property
    def resource_text(self) -> str:
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        res = f"{res}.{self.group}" if self.group else res
        return f"{res} {self.name}" if self.name else res

    def text(self) -> str:
        where = f"in namespace {self.namespace}" if self.namespace else "(cluster scope)"
        return f"{self.verb} {self.resource_text} {where}"

    def can_i(self) -> str:
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        res = f"{res}.{self.group}" if self.group else res
        res = f"{res}/{self.name}" if self.name else res
        return f"kubectl auth can-i {self.verb} {res}" + (f" -n {self.namespace}" if self.namespace else "")


def rbac_needs(documents: Iterable[Mapping | None], namespace: str) -> list[AccessNeed]:
    """Every verb the Role file's Roles and ClusterRoles grant, for the environment's ``namespace``.

    ``documents``: the file's YAML documents. A Role's rules apply in ``namespace`` (whatever namespace the file
    names: it is written for ``helix``); a ClusterRole's at cluster scope, where a ``resourceNames`` entry equal to
    the file's namespace stands for ``namespace``. Bindings are skipped (who gets the rights is the operator's
    choice). Raises ValueError on a rule without verbs or resources (the file is then not a Role file)."""
    docs = [d for d in documents if isinstance(d, Mapping)]
    template_ns = next((d.get("metadata", {}).get("namespace") for d in docs if d.get("kind") == "Role"
                        and d.get("metadata", {}).get("namespace")), ROLE_TEMPLATE_NAMESPACE)
    out: dict[AccessNeed, None] = {}
    for doc in docs:
        kind = doc.get("kind")
        if kind not in ("Role", "ClusterRole"):
            continue
        for rule in doc.get("rules") or []:
            if rule.get("nonResourceURLs"):
                continue
            groups, resources, verbs = rule.get("apiGroups") or [""], rule.get("resources"), rule.get("verbs")
            if not resources or not verbs:
                raise ValueError(f"{kind} {doc.get('metadata', {}).get('name')}: a rule without resources or verbs")
            names = [namespace if n == template_ns else n for n in rule.get("resourceNames") or []] or [""]
            for group in groups:
                for res in resources:
                    base, _, sub = str(res).partition("/")
                    for verb in verbs:
                        for name in names:
                            out[AccessNeed(str(verb), str(group), base, sub,
                                           namespace if kind == "Role" else None, name)] = None
    return list(out)


def check_access(needs: Sequence[AccessNeed], allowed: Mapping[AccessNeed, bool | None],
                 role_file: str = ROLE_FILE) -> list[Check]:
    """Each needed verb must be allowed (``allowed``: a SelfSubjectAccessReview's answer, ``None``: no answer).

    One failed check per missing verb, naming it and the Role file to apply; one passing check when all are
    allowed."""
    if not needs:
        return [Check("rbac", "fail", f"{role_file} grants nothing", f"restore {role_file} from the repository")]
    out = []
    for need in needs:
        answer = allowed.get(need)
        if answer:
            continue
        scope = f" -n {need.namespace}" if need.namespace else ""
        ns = need.namespace or "the environment's namespace"
        fix = (f"apply {role_file} with its namespace set to {ns} and its "
               f"subjects set to this identity (kubectl apply -f {role_file}{scope}); check with: {need.can_i()}")
        if answer is None:
            out.append(Check(f"rbac {need.verb} {need.resource_text}", "warn",
                             f"could not ask whether this identity may {need.text()}", fix))
        else:
            out.append(Check(f"rbac {need.verb} {need.resource_text}", "fail",
                             f"this identity may not {need.text()}", fix))
    if not out:
        namespaces = sorted({n.namespace for n in needs if n.namespace})
        out.append(Check("rbac", "pass", f"all {len(needs)} verbs of {role_file} allowed "
                                         f"(namespace {', '.join(namespaces) or '-'} and cluster scope)"))
    return out


def check_namespace(namespace: str, exists: bool | None, may_create: bool | None,
                    role_file: str = ROLE_FILE) -> Check:
    """The environment's namespace exists, or this identity may create it (deploy-helix applies it then).

    ``exists`` ``None``: the identity may not read it; ``may_create``: a SelfSubjectAccessReview's answer."""
    name = f"namespace {namespace}"
    if exists:
        return Check(name, "pass", "exists")
    if exists is None:
        return Check(name, "warn", f"this identity may not read namespace {namespace}, so whether it exists is "
                                   "unknown",
                     f"apply the ClusterRole of {role_file} (get, patch on namespaces/{namespace}); check with: "
                     f"kubectl auth can-i get namespaces/{namespace}")
    if may_create:
        return Check(name, "pass", "absent: this identity may create it (deploy-helix applies it)")
    return Check(name, "fail", f"namespace {namespace} does not exist and this identity may not create it",
                 f"have an admin run: kubectl create namespace {namespace}, then kubectl apply -f {role_file} "
                 f"(its namespace set to {namespace}); or set kubernetes.namespace to an existing namespace")


@dataclass(frozen=True)
class StorageClassFact:
    """A StorageClass of the cluster and whether it is marked the default."""

    name: str
    default: bool = False


def is_default_class(annotations: Mapping[str, str] | None) -> bool:
    return any((annotations or {}).get(a, "").lower() == "true" for a in DEFAULT_CLASS_ANNOTATIONS)


def volume_claims(manifests: Iterable[Mapping]) -> list[tuple[str, str | None]]:
    """``("<StatefulSet>/<claim>", storageClassName or None)`` for every volumeClaimTemplate of the rendering."""
    out = []
    for obj in manifests:
        if obj.get("kind") != "StatefulSet":
            continue
        for claim in obj.get("spec", {}).get("volumeClaimTemplates") or []:
            out.append((f"{obj['metadata']['name']}/{claim['metadata']['name']}",
                        (claim.get("spec") or {}).get("storageClassName")))
    return out


def check_storage(claims: Sequence[tuple[str, str | None]],
                  classes: Sequence[StorageClassFact] | None) -> list[Check]:
    """Each PVC's StorageClass must exist; a PVC without one needs a default StorageClass.

    ``classes`` ``None``: the identity may not list StorageClasses."""
    if not claims:
        return [Check("storage class", "pass", "the rendering has no PersistentVolumeClaims")]
    wanted: dict[str | None, list[str]] = {}
    for claim, cls in claims:
        wanted.setdefault(cls, []).append(claim)
    known = ", ".join(sorted(c.name for c in classes or ())) or "none"
    out = []
    for cls, users in sorted(wanted.items(), key=lambda x: x[0] or ""):
        name = f"storage class {cls}" if cls else "default storage class"
        for_ = f"for {', '.join(users)}"
        if classes is None:
            out.append(Check(name, "warn", f"this identity may not list StorageClasses; needed {for_}",
                             "check by hand: kubectl get storageclass (or grant list on storageclasses)"))
        elif cls:
            if any(c.name == cls for c in classes):
                out.append(Check(name, "pass", f"exists ({for_})"))
            else:
                out.append(Check(name, "fail", f"StorageClass {cls} does not exist (needed {for_}; the cluster "
                                               f"has: {known})",
                                 f"create StorageClass {cls}, or set kubernetes.storage_class to one of: {known}"))
        else:
            defaults = sorted(c.name for c in classes if c.default)
            if defaults:
                note = " (several are marked default: the newest wins)" if len(defaults) > 1 else ""
                out.append(Check(name, "pass", f"{', '.join(defaults)} is the default ({for_}){note}"))
            else:
                pick = known.split(", ")[0] if classes else "<name>"
                out.append(Check(name, "fail", f"no StorageClass is marked default and the PVCs name none (needed "
                                               f"{for_}; the cluster has: {known})",
                                 "set kubernetes.storage_class to one of the cluster's StorageClasses, or mark one "
                                 f"default: kubectl annotate storageclass {pick} "
                                 f"{DEFAULT_CLASS_ANNOTATIONS[0]}=true"
                                 + ("" if classes else " (install a storage provisioner first)")))
    return out


_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$")
_SUFFIX = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60,
           "n": Fraction(1, 10 ** 9), "u": Fraction(1, 10 ** 6), "m": Fraction(1, 1000), "": 1, "k": 10 ** 3,
           "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18}


def quantity(text: str | int | float) -> Fraction:
    """A Kubernetes resource quantity as a number: ``"256Gi"``, ``"16318976Ki"``, ``"3800m"``, ``"32"``,
    ``"1e3"``, ``"1.5G"``. Raises ValueError for anything else."""
    if isinstance(text, int | float):
        return Fraction(text)
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, exponent, suffix = match.groups()
    value = Fraction(number)
    return value * 10 ** int(exponent[1:]) if exponent else value * _SUFFIX[suffix or ""]


@dataclass(frozen=True)
class PodRequest:
    """What one replica of a workload requests (CPU millicores, memory bytes), and how many replicas."""

    workload: str
    replicas: int
    cpu_millis: int
    memory_bytes: int


def pod_requests(manifests: Iterable[Mapping]) -> list[PodRequest]:
    """The resource requests of every Deployment and StatefulSet of the rendering (containers summed)."""
    out = []
    for obj in manifests:
        if obj.get("kind") not in ("Deployment", "StatefulSet"):
            continue
        spec = obj.get("spec", {})
        cpu = mem = Fraction(0)
        for c in spec.get("template", {}).get("spec", {}).get("containers") or []:
            req = (c.get("resources") or {}).get("requests") or {}
            cpu += quantity(req.get("cpu", 0)) * 1000
            mem += quantity(req.get("memory", 0))
        out.append(PodRequest(f"{obj['kind']}/{obj['metadata']['name']}", int(spec.get("replicas", 1)),
                              math.ceil(cpu), math.ceil(mem)))
    return out


@dataclass(frozen=True)
class NodeFact:
    """A node's allocatable CPU (millicores) and memory (bytes), and why pods cannot go there (``""``: they can)."""

    name: str
    cpu_millis: int
    memory_bytes: int
    unschedulable: str = ""


def node_fact(node: Mapping) -> NodeFact:
    """A Node object (as a dict) → :class:`NodeFact`. Not schedulable for the rendering's pods (which carry no
    tolerations): cordoned, a NoSchedule/NoExecute taint, or not Ready."""
    meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    alloc = status.get("allocatable") or {}
    why = []
    if spec.get("unschedulable"):
        why.append("cordoned")
    for taint in spec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and taint.get("key") != "node.kubernetes.io/unschedulable":
            why.append(f"taint {taint.get('key')}:{taint.get('effect')}")
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    if not ready or ready[0].get("status") != "True":
        why.append("not Ready")
    return NodeFact(meta.get("name", "?"), math.floor(quantity(alloc.get("cpu", 0)) * 1000),
                    math.floor(quantity(alloc.get("memory", 0))), ", ".join(why))


def _cpu(millis: int) -> str:
    return f"{millis / 1000:g}"


def check_capacity(requests: Sequence[PodRequest], nodes: Sequence[NodeFact] | None) -> list[Check]:
    """The rendering's summed requests (the guide's resource table, or the descriptor's) against the allocatable
    memory and CPU of the schedulable nodes; and each pod must fit on one node.

    ``nodes`` ``None``: the identity may not list nodes. Allocatable is the nodes' capacity for pods, before
    the requests of what already runs there."""
    fix_rbac = "check by hand: kubectl describe nodes (or grant list on nodes with a ClusterRole)"
    if nodes is None:
        need_mem = sum(r.memory_bytes * r.replicas for r in requests)
        need_cpu = sum(r.cpu_millis * r.replicas for r in requests)
        return [Check("cluster memory", "warn", f"this identity may not list nodes; the stack requests "
                                                f"{_mem(need_mem)}", fix_rbac),
                Check("cluster cpu", "warn", f"this identity may not list nodes; the stack requests "
                                             f"{_cpu(need_cpu)} CPU", fix_rbac)]
    usable = [n for n in nodes if not n.unschedulable]
    skipped = [f"{n.name} ({n.unschedulable})" for n in nodes if n.unschedulable]
    aside = f"; not counted: {', '.join(skipped)}" if skipped else ""
    out = []
    for name, unit, get_req, get_node, fmt in (
            ("cluster memory", "memory", lambda r: r.memory_bytes, lambda n: n.memory_bytes, _mem),
            ("cluster cpu", "CPU", lambda r: r.cpu_millis, lambda n: n.cpu_millis, lambda v: f"{_cpu(v)} CPU")):
        total = sum(get_req(r) * r.replicas for r in requests)
        have = sum(get_node(n) for n in usable)
        largest = sorted(requests, key=lambda r: -get_req(r) * r.replicas)[:3]
        biggest = ", ".join(f"{r.workload} {r.replicas}×{fmt(get_req(r))}" for r in largest)
        lower = ("lower services.<name>.resources.requests (not below the guide's minimums) or replicas in the "
                 "descriptor")
        if not usable:
            out.append(Check(name, "fail", f"no schedulable node{aside}",
                             "add nodes, uncordon them (kubectl uncordon <node>) or remove their NoSchedule taints"))
            continue
        if total > have:
            out.append(Check(name, "fail", f"the stack requests {fmt(total)} {unit} but the schedulable nodes "
                                           f"have {fmt(have)} allocatable (largest: {biggest}){aside}",
                             f"add nodes or larger nodes, or {lower}"))
            continue
        pod = max(requests, key=get_req, default=None)
        node_max = max(get_node(n) for n in usable)
        if pod is not None and get_req(pod) > node_max:
            out.append(Check(name, "fail", f"a pod of {pod.workload} requests {fmt(get_req(pod))} {unit} but the "
                                           f"largest schedulable node has {fmt(node_max)} allocatable{aside}",
                             f"add a node with more than {fmt(get_req(pod))} {unit}, or {lower}"))
            continue
        out.append(Check(name, "pass", f"requests {fmt(total)} of {fmt(have)} allocatable on {len(usable)} "
                                       f"schedulable node(s){aside}"))
    return out


def failures(checks: Iterable[Check]) -> list[Check]:
    return [c for c in checks if c.failed]


def markdown(environment: str, checks: Sequence[Check], actions: Sequence[str] = ()) -> str:
    """The pre-flight report as a markdown artifact."""
    failed = failures(checks)
    verdict = "ready" if not failed else f"{len(failed)} check(s) failed"
    lines = [f"# Pre-flight for `{environment}`: {verdict}", "", "| check | status | seen | fix |", "|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c.name} | {c.status} | {' '.join(c.detail.split())} | {c.fix if c.status != 'pass' else ''} |")
    if actions:
        lines += ["", "## Done", "", *(f"- {a}" for a in actions)]
    return "\n".join(lines) + "\n"
