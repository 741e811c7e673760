"""Pre-flight checks for provision-helix, pure: versions, memory against the resource table, ports, volumes.

``tasks/provision.py`` gathers the facts (engine version, memory, which host ports are taken, which volumes
exist and who owns them); the functions here decide and say what to fix. Every :class:`Check` that fails
carries a ``fix``.

Engine versions: the guide asks for Docker 24 (Engine API 1.43) and Compose 2.20. Podman serves the Docker
API too, but reports its *own* version (``4.3.1``) and a compat API version that lags Docker's (Podman 4.3
reports API ``1.41``, Docker 20.10's level). helix-ops' engine driver uses only calls that exist in API 1.41
(containers, networks, volumes, archives, exec), so Podman is accepted from 4.3 on by its own version, and
the report says so rather than pretending it is Docker 24.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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
