"""Tasks of provision-helix: pre-flight facts from the engine and this machine, then networks, volumes and
the environment's secrets. The decisions (versions, memory, ports, volumes) are ``helix_ops.preflight``'s.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from helix_ops import preflight
from helix_ops.descriptor import Descriptor
from helix_ops.errors import HelixOpsError
from helix_ops.preflight import Check, VolumeFact


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


@task(name="preflight-checks", timeout_seconds=120, cache_policy=NO_CACHE)
def preflight_checks(descriptor: Descriptor, engine_url: str | None,
                     memory_available: int | None = None) -> list[Check]:
    """Every pre-flight check of ``descriptor``'s environment; failed checks carry their fix.

    ``memory_available`` overrides the measured free memory (bytes).
    """
    from drivers.engine import PROJECT_LABEL, SERVICE_LABEL, EngineDriver
    from helix_ops.render.compose import render_compose
    from helix_ops.stack import build_stack

    stack = build_stack(descriptor)
    checks: list[Check] = []
    if descriptor.target == "kubernetes":
        checks.append(preflight.check_kubernetes(None, descriptor))
        return checks
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


@task(name="provision-engine-objects", retries=2, retry_delay_seconds=2, timeout_seconds=120, cache_policy=NO_CACHE)
def provision_engine_objects(descriptor: Descriptor, engine_url: str | None,
                             extra_labels: Mapping[str, str] | None = None) -> list[str]:
    """Create the project's networks and volumes (kept when they exist), labelled as deploy-helix expects."""
    from drivers.engine import EngineDriver
    from helix_ops.plan import compose_objects
    from helix_ops.render.compose import render_compose
    from helix_ops.stack import build_stack

    driver = EngineDriver.connect(engine_url, descriptor.project, descriptor.environment, extra_labels)
    out = []
    for obj in compose_objects(render_compose(build_stack(descriptor))):
        kind, name = obj.identity.split("/", 1)
        if kind == "network":
            out.append(driver.ensure_network(name, obj.spec, obj.spec_hash))
        elif kind == "volume":
            out.append(driver.ensure_volume(name, obj.spec_hash))
    return out


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
