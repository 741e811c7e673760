"""The container-engine driver: applies a rendered Compose document through the Docker Engine API.

The same code drives Docker and Podman (its Docker-compatible API). It reads back what runs from container
labels, so the plan can be computed from the live state:

* ``helix-ops.project`` / ``helix-ops.environment`` / ``helix-ops.service`` — whose container it is;
* ``helix-ops.spec-hash`` — the hash of the rendered Compose service it was created from.

Secrets reach containers only as environment values at creation time (resolved from the ``${VAR}``
references of the rendering): they never appear in labels, names, logs or errors.

Health is probed from outside the container (HTTP, a Bolt login, Redis AUTH + PING), through the probe port
published on 127.0.0.1 only, since engines without systemd do not run image health checks periodically.
"""

from __future__ import annotations

import errno
import io
import logging
import re
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import docker
import docker.errors
import httpx
from docker.models.containers import Container

from drivers.storage import IterStream
from helix_ops.errors import ConfigError, DriverError, WaitTimeout
from helix_ops.plan import HASH_LABEL, CurrentObject, CurrentState, engine_service_hash
from helix_ops.wait import Deadline, wait_until

PROJECT_LABEL = "helix-ops.project"
ENV_LABEL = "helix-ops.environment"
SERVICE_LABEL = "helix-ops.service"
KIND_LABEL = "helix-ops.kind"
IMAGE_LABEL = "helix-ops.image"

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[?-][^}]*)?\}")


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose interpolation: ``${NAME}``, ``${NAME:?message}`` from ``variables``; ``$$`` is a literal ``$``.

    A missing variable is a ConfigError naming it (never an empty string).
    """

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        if name not in variables:
            raise ConfigError(f"environment.{name}", "is not set: its credentials block has no value for it")
        return variables[name]

    return _VAR.sub(sub, value)


def _memory_bytes(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = str(text).strip().lower().rstrip("b")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


@dataclass(frozen=True)
class ContainerPlan:
    """Everything needed to create one replica of a service (no secret values: those come at create time)."""

    service: str
    name: str
    image: str
    command: tuple[str, ...] | None
    entrypoint: tuple[str, ...] | None
    environment: Mapping[str, str]
    labels: Mapping[str, str]
    network: str
    aliases: tuple[str, ...]
    volumes: Mapping[str, Mapping[str, str]]
    ports: Mapping[str, Any]
    probe_port: int | None
    mem_limit: int | None
    nano_cpus: int | None
    files: Mapping[str, str] = field(default_factory=dict)


def probe_host_of(base_url: str | None) -> str:
    """Where this process reaches the ports an engine publishes: the host of a ``tcp://`` / ``http(s)://``
    engine address (its probe ports are published on that address), else loopback (a local socket; an
    ``ssh://`` engine publishes on its own loopback, reached through the tunnel of ``DOCKER_HOST``: not
    supported for probes; use ``tcp://`` with TLS)."""
    from urllib.parse import urlsplit

    if not base_url:
        return "127.0.0.1"
    parts = urlsplit(base_url)
    if parts.scheme in ("tcp", "http", "https") and parts.hostname and parts.hostname != "localhost":
        return parts.hostname
    return "127.0.0.1"


def container_plans(project: str, environment: str, name: str, spec: Mapping[str, Any], spec_hash: str,
                    files: Mapping[str, str], probe_port: int | None,
                    extra_labels: Mapping[str, str] | None = None,
                    probe_host: str = "127.0.0.1") -> list[ContainerPlan]:
    """The replicas of one Compose service as container plans (pure).

    ``spec_hash`` is the service's template hash (``helix_ops.plan.template_hash``): replicas are named
    ``<project>-<service>-<hash8>-<i>`` and labelled with it, so a scale keeps the replicas that run.

    ``files`` maps a container path to its text, for the service's bind-mounted config files (``./nginx.conf``):
    they are copied into the container before it starts, so the engine needs no access to this machine's disk.
    """
    replicas = int(spec.get("deploy", {}).get("replicas", 1))
    nets = spec.get("networks", ["default"])
    aliases: tuple[str, ...] = (name,)
    if isinstance(nets, Mapping):  # Compose's long form ({helix: {aliases: [redis-sentinel]}}): the Sentinels'
        [(net, opts)] = nets.items()
        aliases += tuple(a for a in (opts or {}).get("aliases", ()) if a != name)
    else:
        net = nets[0]
    network = f"{project}_{net}"
    volumes: dict[str, dict[str, str]] = {}
    copied: dict[str, str] = {}
    for entry in spec.get("volumes", []):
        source, target, *mode = entry.split(":")
        if source.startswith("./"):
            copied[target] = files[source[2:]]
        else:
            volumes[f"{project}_{source}"] = {"bind": target, "mode": mode[0] if mode else "rw"}
    ports: dict[str, Any] = {}
    for p in spec.get("ports", []):
        ports[f"{p['target']}/{p.get('protocol', 'tcp')}"] = int(p["published"])
    if probe_port is not None and f"{probe_port}/tcp" not in ports:
        ports[f"{probe_port}/tcp"] = (probe_host, None)  # an ephemeral port on the engine's address, for probes
    limits = spec.get("deploy", {}).get("resources", {}).get("limits", {})
    labels = {**spec.get("labels", {}), **(extra_labels or {}), PROJECT_LABEL: project, ENV_LABEL: environment,
              SERVICE_LABEL: name, KIND_LABEL: "service", HASH_LABEL: spec_hash, IMAGE_LABEL: spec["image"]}
    plans = []
    for i in range(1, replicas + 1):
        plans.append(ContainerPlan(
            service=name,
            name=f"{project}-{name}-{spec_hash[:8]}-{i}",
            image=spec["image"],
            command=tuple(spec["command"]) if "command" in spec else None,
            entrypoint=tuple(spec["entrypoint"]) if "entrypoint" in spec else None,
            environment=dict(spec.get("environment", {})),
            labels=labels,
            network=network,
            aliases=aliases,
            volumes=volumes,
            ports=ports,
            probe_port=probe_port,
            mem_limit=_memory_bytes(limits["memory"]) if "memory" in limits else None,
            nano_cpus=int(float(limits["cpus"]) * 1e9) if "cpus" in limits else None,
            files=copied,
        ))
    return plans


def _tar_of(files: Mapping[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class EngineDriver:
    """One project's containers, networks and volumes on one engine."""

    def __init__(self, client: docker.DockerClient, project: str, environment: str,
                 extra_labels: Mapping[str, str] | None = None) -> None:
        self.client = client
        self.project = project
        self.environment = environment
        self.extra_labels = dict(extra_labels or {})
        self.probe_host = probe_host_of(getattr(getattr(client, "api", None), "base_url", None))

    @classmethod
    def connect(cls, base_url: str | None, project: str, environment: str,
                extra_labels: Mapping[str, str] | None = None, timeout: int = 120) -> EngineDriver:
        """Connect to the engine at ``base_url`` (``None``: DOCKER_HOST or the default socket) and ping it."""
        try:
            client = docker.DockerClient(base_url=base_url, timeout=timeout) if base_url else docker.from_env(
                timeout=timeout)
            client.ping()
        except Exception as exc:  # docker raises several unrelated types here
            where = base_url or "DOCKER_HOST / the default socket"
            raise DriverError(f"container engine at {where} is not reachable: {type(exc).__name__}",
                              hint="start the engine (dockerd, or `podman system service`) or fix the engine "
                                   "block's base_url") from exc
        return cls(client, project, environment, extra_labels)

    def version(self) -> dict[str, str]:
        info = self.client.version()
        return {"engine": info.get("Components", [{}])[0].get("Name", "docker"), "version": info.get("Version", "")}

    # --- reading the current state -----------------------------------------------------------------------

    def _filters(self, **more: str) -> dict[str, list[str]]:
        return {"label": [f"{PROJECT_LABEL}={self.project}", *(f"{k}={v}" for k, v in more.items())]}

    def containers(self, service: str | None = None) -> list[Container]:
        more = {SERVICE_LABEL: service} if service else {}
        return self.client.containers.list(all=True, filters=self._filters(**more))

    def current_state(self) -> CurrentState:
        """What runs now, as the plan's CurrentState: one object per service, network and volume."""
        objects: list[CurrentObject] = []
        by_service: dict[str, list[Container]] = {}
        for c in self.containers():
            by_service.setdefault(c.labels.get(SERVICE_LABEL, "?"), []).append(c)
        for name, cs in sorted(by_service.items()):
            hashes = {c.labels.get(HASH_LABEL) for c in cs}
            running = [c for c in cs if c.status == "running"]
            # A service counts as unchanged only when every replica runs the same template.
            same = len(hashes) == 1 and len(running) == len(cs)
            fields: dict[str, Any] = {"image": cs[0].labels.get(IMAGE_LABEL) or cs[0].attrs["Config"]["Image"]}
            fields["replicas"] = len(running)
            identity_hash = engine_service_hash(hashes.pop(), len(running)) if same else None
            objects.append(CurrentObject(f"service/{name}", identity_hash, fields))
        for net in self.client.networks.list(filters=self._filters()):
            short = net.name.removeprefix(f"{self.project}_")
            objects.append(CurrentObject(f"network/{short}", net.attrs.get("Labels", {}).get(HASH_LABEL)))
        for vol in self.client.volumes.list(filters=self._filters()):
            short = vol.name.removeprefix(f"{self.project}_")
            objects.append(CurrentObject(f"volume/{short}", (vol.attrs.get("Labels") or {}).get(HASH_LABEL)))
        return CurrentState(tuple(objects))

    # --- applying ----------------------------------------------------------------------------------------

    def _labels(self, spec_hash: str, kind: str) -> dict[str, str]:
        return {**self.extra_labels, PROJECT_LABEL: self.project, ENV_LABEL: self.environment, KIND_LABEL: kind,
                HASH_LABEL: spec_hash}

    def ensure_network(self, name: str, spec: Mapping[str, Any], spec_hash: str) -> str:
        full = f"{self.project}_{name}"
        if self.client.networks.list(names=[full]):
            return f"network {full} exists"
        self.client.networks.create(full, driver=spec.get("driver", "bridge"), labels=self._labels(spec_hash, "network"))
        return f"network {full} created"

    def ensure_volume(self, name: str, spec_hash: str) -> str:
        full = f"{self.project}_{name}"
        try:
            self.client.volumes.get(full)
            return f"volume {full} exists"
        except docker.errors.NotFound:
            self.client.volumes.create(full, labels=self._labels(spec_hash, "volume"))
            return f"volume {full} created"

    def create_container(self, plan: ContainerPlan, variables: Mapping[str, str]) -> Container:
        """Create and start one replica; ``variables`` resolve the ``${VAR}`` secret references."""
        env = {k: interpolate(str(v), variables) for k, v in plan.environment.items()}
        # Compose's `$$` escapes stay literal `$` in argv; no value is ever interpolated into a command line.
        command = [interpolate(a, {}) for a in plan.command] if plan.command else None
        entrypoint = [interpolate(a, {}) for a in plan.entrypoint] if plan.entrypoint else None
        stale = self.client.containers.list(all=True, filters={"name": f"^{plan.name}$"})
        for c in stale:  # a half-created replica of an earlier, failed attempt
            c.remove(force=True)
        try:
            container = self.client.containers.create(
                plan.image, command=command, entrypoint=entrypoint, name=plan.name, environment=env, labels=dict(plan.labels),
                detach=True, network=plan.network, volumes={k: dict(v) for k, v in plan.volumes.items()},
                ports=dict(plan.ports), mem_limit=plan.mem_limit, nano_cpus=plan.nano_cpus,
                restart_policy={"Name": "unless-stopped"},
                networking_config={plan.network: self.client.api.create_endpoint_config(
                    aliases=list(plan.aliases))},
            )
        except docker.errors.ImageNotFound as exc:
            raise DriverError(f"image {plan.image} of {plan.service} is not on the engine",
                              hint="build or pull it first (the test bed builds localhost/ images)") from exc
        except docker.errors.APIError as exc:
            raise DriverError(f"creating {plan.name} failed: {exc.explanation}",
                              hint="check the engine's log") from exc
        if plan.files:
            container.put_archive("/", _tar_of(plan.files))
        container.start()
        container.reload()
        return container

    def remove(self, containers: Iterable[Container], grace_s: int = 20) -> list[str]:
        """Stop (SIGTERM, then KILL after ``grace_s``) and remove containers; return their names."""
        names = []
        for c in containers:
            try:
                c.stop(timeout=grace_s)
                c.remove(v=False)
            except docker.errors.NotFound:
                pass
            names.append(c.name)
        return names

    def remove_service(self, name: str) -> list[str]:
        return self.remove(self.containers(name))

    def stop_service(self, name: str, grace_s: int = 20) -> list[str]:
        """Stop (SIGTERM, KILL after ``grace_s``) every running replica of ``name``, keeping the containers;
        return the names of the replicas that were running (what :meth:`start_containers` should start again).
        A stopped container stays stopped (restart policy ``unless-stopped``) until started."""
        stopped = []
        for c in self.containers(name):
            if c.status != "running":
                continue
            try:
                c.stop(timeout=grace_s)
            except docker.errors.NotFound:
                continue
            stopped.append(c.name)
        return stopped

    def start_containers(self, names: Iterable[str], deadline_s: float = 120) -> list[str]:
        """Start the named containers of this project (e.g. those :meth:`stop_service` stopped) and wait until
        the engine reports each running; return their names."""
        wanted = set(names)
        started = []
        for c in self.containers():
            if c.name not in wanted:
                continue
            if c.status != "running":
                c.start()

            def running(c: Container = c) -> bool:
                c.reload()
                return c.status == "running"

            def described(c: Container = c) -> str:
                return f"status {c.status}; log tail: {c.logs(tail=10).decode(errors='replace')}"

            wait_until(f"{c.name} to run again", running, deadline_s, interval_s=0.2, describe=described,
                       retry_on=())  # an engine error (the container was removed) is not waited on
            started.append(c.name)
        missing = wanted - set(started)
        if missing:
            raise DriverError(f"cannot start {', '.join(sorted(missing))}: no such container in {self.project}",
                              hint="was it removed while stopped?")
        return started

    def network_addresses(self, names: list[str]) -> list[str]:
        """Each container's address on its project network (the name itself when the engine reports none).

        The load balancer's upstreams use addresses, not names: nginx resolves names when it loads a config,
        and on a busy Podman the DNS of a network has been seen to lose a running replica's name for more than
        30 s ("host not found in upstream"), which made a reload — and a roll — fail."""
        out = []
        for name in names:
            address = ""
            try:
                c = self.client.containers.get(name)
                nets = c.attrs.get("NetworkSettings", {}).get("Networks") or {}
                ours = [v for k, v in sorted(nets.items()) if k.startswith(f"{self.project}_")] or list(nets.values())
                address = next((n.get("IPAddress") for n in ours if n.get("IPAddress")), "")
            except docker.errors.NotFound:
                pass
            out.append(address or name)
        return out

    def probe_address(self, container: Container, port: int) -> tuple[str, int]:
        """The loopback host port where ``port`` of ``container`` is published."""
        container.reload()
        bindings = (container.attrs["NetworkSettings"].get("Ports") or {}).get(f"{port}/tcp") or []
        if not bindings:
            raise DriverError(f"{container.name} publishes no port for {port}", hint="the driver publishes the "
                                                                                  "probe port; was it created by "
                                                                                  "helix-ops?")
        return self.probe_host, int(bindings[0]["HostPort"])

    def wait_healthy(self, container: Container, check: Callable[[], str], what: str, deadline_s: float,
                     interval_s: float = 0.5, recheck: Callable[[], Callable[[], str]] | None = None) -> str:
        """Call ``check`` (returns a short status, raises while unhealthy) until it passes or the deadline.

        Fails early when the container exits; the error names the service and what was last seen. With
        ``recheck`` (a new check for the same container), a running container whose port refuses every
        connection for ``REFUSED_RESTART_S`` is restarted once (see :func:`wait_container_healthy`).
        """
        return wait_container_healthy(container, check, what, deadline_s, interval_s, recheck=recheck)

    def update_load_balancer(self, conf_text: str, service: str = "nginx",
                             path: str = "/etc/nginx/nginx.conf") -> list[str]:
        """Write ``conf_text`` into every running load balancer, check it, and reload gracefully.

        nginx's reload starts new workers with the new upstreams; old workers finish their in-flight requests.
        Returns the names of the reloaded containers (none when no load balancer runs yet).
        """
        reloaded = []
        for c in self.containers(service):
            if c.status != "running":
                continue
            c.put_archive("/", _tar_of({path: conf_text}))
            for argv in (["nginx", "-t", "-q"], ["nginx", "-s", "reload"]):
                result = c.exec_run(argv)
                if result.exit_code != 0:
                    raise DriverError(f"{' '.join(argv)} in {c.name} failed: "
                                      f"{result.output.decode(errors='replace')[-300:]}",
                                      hint="the rendered nginx.conf is refused by nginx")
            reloaded.append(c.name)
        return reloaded

    def remove_project(self) -> list[str]:
        """Remove every container, network and volume of the project (tests and `helix-ops destroy`)."""
        gone = self.remove(self.containers(), grace_s=5)
        for net in self.client.networks.list(filters=self._filters()):
            net.remove()
        for vol in self.client.volumes.list(filters=self._filters()):
            vol.remove(force=True)
        return gone


REFUSED_RESTART_S = 45.0
"""How long a running container's published port may refuse every connection before it is restarted once.

Seen on the test bed (Podman 4.3, netavark, several containers started at once): a container that runs and
listens, whose loopback port refused connections for the whole 180 s deadline, while its neighbours were
fine. The engine had lost the port's forwarding rule (a refused connection on a published port means the
engine's reservation socket answered, not the process). A restart sets the forwarding up again."""


def _refused(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def wait_container_healthy(container: Container, check: Callable[[], str], what: str, deadline_s: float,
                           interval_s: float = 0.5, *, recheck: Callable[[], Callable[[], str]] | None = None,
                           refused_restart_s: float | None = None) -> str:
    """Call ``check`` (returns a short status, raises while unhealthy) until it passes or the deadline; fails
    early when ``container`` exits (the error carries its log tail).

    With ``recheck``: when every try for ``refused_restart_s`` was a refused connection while the container
    runs, the container is restarted once and ``check = recheck()`` (its published port may change); the
    deadline stays the same. ``refused_restart_s`` defaults to half the deadline (at least
    ``REFUSED_RESTART_S``), so a slow starter (a JVM opens its port last) is not restarted on its way up.
    Without ``recheck``, nothing is restarted."""
    if refused_restart_s is None:
        refused_restart_s = max(REFUSED_RESTART_S, deadline_s / 2)
    note = ""
    refused_since: float | None = None
    for poll in Deadline(deadline_s).polls(what, interval_s, seen="no answer yet"):
        container.reload()
        if container.status in ("exited", "dead"):
            logs = container.logs(tail=15).decode(errors="replace")
            raise WaitTimeout(what, f"container {container.name} {container.status}; log tail: {logs}")
        try:
            return check()
        except Exception as exc:  # noqa: BLE001 - unhealthy until it passes
            last = str(exc) or type(exc).__name__
            now = time.monotonic()
            if not _refused(exc):
                refused_since = None
            elif refused_since is None:
                refused_since = now
            elif recheck is not None and now - refused_since >= refused_restart_s:
                logging.getLogger(__name__).warning(
                    "%s: its port refused every connection for %.0fs while it runs; restarting it once",
                    container.name, now - refused_since)
                container.restart(timeout=5)
                check, recheck, refused_since = recheck(), None, None
                note = f" (restarted once after {refused_restart_s:.0f}s of refused connections)"
            poll.seen = last + note
    raise AssertionError("unreachable: a Poll ends by raising WaitTimeout")  # pragma: no cover


# --- scratch containers (verify-helix-backup) ---------------------------------------------------------------

SCRATCH_LABEL = "helix-ops.scratch"
SCRATCH_PREFIX = "helix-scratch"
_OWNED_LABELS = (PROJECT_LABEL, ENV_LABEL, SERVICE_LABEL, KIND_LABEL, HASH_LABEL, IMAGE_LABEL)


@dataclass(frozen=True)
class OneOff:
    """What a one-off container did: exit code, its output (stdout + stderr), seconds it ran."""

    rc: int
    output: str
    seconds: float


@dataclass(frozen=True)
class ScratchFile:
    """A file copied into a scratch container before it starts: ``path`` absolute, content ``data`` (bytes, or
    a local file streamed from disk), owned by ``uid:gid``."""

    path: str
    data: bytes | Path
    uid: int = 0
    gid: int = 0
    mode: int = 0o600


def _tar_file_of(files: Iterable[ScratchFile]) -> BinaryIO:
    """A tar of ``files`` in an unnamed temporary file (large files are streamed, not held in memory)."""
    out = tempfile.TemporaryFile()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for f in files:
            info = tarfile.TarInfo(f.path.lstrip("/"))
            info.mode, info.mtime, info.uid, info.gid = f.mode, int(time.time()), f.uid, f.gid
            if isinstance(f.data, Path):
                info.size = f.data.stat().st_size
                with f.data.open("rb") as src:
                    tar.addfile(info, src)
            else:
                info.size = len(f.data)
                tar.addfile(info, io.BytesIO(f.data))
    out.seek(0)
    return out


class ScratchEngine:
    """Throwaway containers and volumes of one run (a backup verification): all named
    ``helix-scratch-<run>-<name>`` and labelled ``helix-ops.scratch=<run>``, **never** with the
    ``helix-ops.project`` / ``environment`` / ``service`` labels, so no project's state, plan, prune or
    inspection sees them. Ports are published on 127.0.0.1 only (ephemeral); containers join the engine's
    default network, not a project's. :meth:`cleanup` removes everything of the run (call it in a ``finally``).
    """

    def __init__(self, client: docker.DockerClient, run_id: str, extra_labels: Mapping[str, str] | None = None) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{2,40}", run_id):
            raise ConfigError("scratch.run_id", f"{run_id!r} is not a short lower-case name")
        owned = sorted(set(extra_labels or {}) & set(_OWNED_LABELS))
        if owned:
            raise ConfigError("scratch.labels", f"scratch containers must not carry project labels: {owned}")
        self.client = client
        self.run_id = run_id
        self.labels = {**(extra_labels or {}), SCRATCH_LABEL: run_id}

    @classmethod
    def connect(cls, base_url: str | None, run_id: str, extra_labels: Mapping[str, str] | None = None,
                timeout: int = 300) -> ScratchEngine:
        """Connect to the engine at ``base_url`` (``None``: DOCKER_HOST or the default socket) and ping it."""
        return cls(EngineDriver.connect(base_url, "scratch", "scratch", timeout=timeout).client, run_id, extra_labels)

    def name(self, short: str) -> str:
        return f"{SCRATCH_PREFIX}-{self.run_id}-{short}"

    def volume(self, short: str) -> str:
        """Create the run's volume ``short`` (labelled); returns its full name."""
        full = self.name(short)
        self.client.volumes.create(full, labels=dict(self.labels))
        return full

    def _create(self, short: str, image: str, *, command: list[str] | None, entrypoint: list[str] | None,
                environment: Mapping[str, str] | None, volumes: Mapping[str, str] | None, ports: Iterable[int],
                user: str | None, mem_limit: int | None) -> Container:
        try:
            return self.client.containers.create(
                image, command=command, entrypoint=entrypoint, name=self.name(short), detach=True,
                environment=dict(environment or {}), labels=dict(self.labels), user=user, mem_limit=mem_limit,
                volumes={v: {"bind": path, "mode": "rw"} for v, path in (volumes or {}).items()},
                ports={f"{p}/tcp": ("127.0.0.1", None) for p in ports})
        except docker.errors.ImageNotFound as exc:
            raise DriverError(f"image {image} for the scratch container {short} is not on the engine",
                              hint="build or pull the environment's image on this engine first") from exc
        except docker.errors.APIError as exc:
            raise DriverError(f"creating scratch container {self.name(short)} failed: {exc.explanation}",
                              hint="check the engine's log") from exc

    def start(self, short: str, image: str, *, command: list[str] | None = None,
              entrypoint: list[str] | None = None, environment: Mapping[str, str] | None = None,
              volumes: Mapping[str, str] | None = None, ports: Iterable[int] = (),
              files: Iterable[ScratchFile] = (), user: str | None = None, mem_limit: int | None = None) -> Container:
        """Create a scratch container (``volumes``: full volume name -> mount path; ``ports`` published on a
        loopback ephemeral port each), copy ``files`` into it, start it. Secrets go in ``environment`` only."""
        container = self._create(short, image, command=command, entrypoint=entrypoint, environment=environment,
                                 volumes=volumes, ports=ports, user=user, mem_limit=mem_limit)
        files = list(files)
        if files:
            with _tar_file_of(files) as tar:
                container.put_archive("/", tar)
        container.start()
        container.reload()
        return container

    def run_once(self, short: str, image: str, command: list[str], *, volumes: Mapping[str, str] | None = None,
                 deadline_s: float = 1800, environment: Mapping[str, str] | None = None) -> OneOff:
        """Run ``command`` in a one-off container (image entrypoint kept) until it exits or ``deadline_s``;
        return exit code and output. The container is removed afterwards, also on timeout."""
        container = self._create(short, image, command=command, entrypoint=None, environment=environment,
                                 volumes=volumes, ports=(), user=None, mem_limit=None)
        t0 = time.monotonic()
        try:
            container.start()
            try:
                status = container.wait(timeout=deadline_s)
            except Exception as exc:  # requests' ReadTimeout / ConnectionError when the deadline passes
                tail = container.logs(tail=10).decode(errors="replace")
                raise WaitTimeout(f"{' '.join(command[:3])} in {container.name} to finish", f"still running after "
                                  f"{deadline_s:.0f}s ({type(exc).__name__}); log tail: {tail}") from exc
            output = container.logs(stdout=True, stderr=True).decode(errors="replace")
            return OneOff(int(status.get("StatusCode", -1)), output, round(time.monotonic() - t0, 2))
        finally:
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass

    def run_to_exit(self, short: str, image: str, command: list[str], *, volumes: Mapping[str, str] | None = None,
                    files: Iterable[ScratchFile] = (), deadline_s: float = 1800,
                    environment: Mapping[str, str] | None = None) -> tuple[Container, OneOff]:
        """Like :meth:`run_once`, with ``files`` copied in before it starts (not onto a mounted volume: the
        engine copies into the container's own filesystem), and the exited container **kept** so files can be
        read out of it (:meth:`read_file`); :meth:`cleanup` removes it. On a timeout it is killed."""
        container = self._create(short, image, command=command, entrypoint=None, environment=environment,
                                 volumes=volumes, ports=(), user=None, mem_limit=None)
        files = list(files)
        if files:
            with _tar_file_of(files) as tar:
                container.put_archive("/", tar)
        t0 = time.monotonic()
        container.start()
        try:
            status = container.wait(timeout=deadline_s)
        except Exception as exc:  # requests' ReadTimeout / ConnectionError when the deadline passes
            tail = container.logs(tail=10).decode(errors="replace")
            try:
                container.kill()
            except docker.errors.APIError:
                pass
            raise WaitTimeout(f"{' '.join(command[:3])} in {container.name} to finish", f"still running after "
                              f"{deadline_s:.0f}s ({type(exc).__name__}); log tail: {tail}") from exc
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
        return container, OneOff(int(status.get("StatusCode", -1)), output, round(time.monotonic() - t0, 2))

    @staticmethod
    def read_file(container: Container, path: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The bytes of the regular file ``path`` of ``container`` (running or exited; a mounted volume's files
        too), streamed out of the engine's tar archive in chunks: constant memory whatever its size."""
        stream, _stat = container.get_archive(path, chunk_size=chunk_size)
        with tarfile.open(fileobj=io.BufferedReader(IterStream(stream), chunk_size), mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                f = tar.extractfile(member)
                assert f is not None
                while chunk := f.read(chunk_size):
                    yield chunk
                return
        raise DriverError(f"{path} in {container.name} is not a regular file", hint="did the command write it?")

    def exec(self, container: Container, argv: list[str]) -> OneOff:
        """Run ``argv`` inside a running scratch container; exit code and output."""
        t0 = time.monotonic()
        result = container.exec_run(argv)
        return OneOff(int(result.exit_code), result.output.decode(errors="replace"), round(time.monotonic() - t0, 2))

    @staticmethod
    def loopback_port(container: Container, port: int) -> tuple[str, int]:
        """The ``(127.0.0.1, host port)`` where ``port`` of ``container`` is published."""
        container.reload()
        bindings = (container.attrs["NetworkSettings"].get("Ports") or {}).get(f"{port}/tcp") or []
        if not bindings:
            raise DriverError(f"{container.name} publishes no port for {port}",
                              hint="scratch containers publish their ports on 127.0.0.1 when created")
        return "127.0.0.1", int(bindings[0]["HostPort"])

    def require_images(self, images: Iterable[str]) -> list[str]:
        """Fail fast (before any scratch object exists) when an image is not on the engine; returns the ids."""
        ids = []
        for image in images:
            try:
                ids.append(self.client.images.get(image).id)
            except docker.errors.ImageNotFound as exc:
                raise DriverError(f"image {image} is not on the engine for the scratch restore",
                                  hint="build or pull the environment's image on this engine first") from exc
        return ids

    def stop(self, container: Container, grace_s: int = 120) -> float:
        """Stop gracefully (SIGTERM, KILL after ``grace_s``); returns the seconds it took."""
        t0 = time.monotonic()
        container.stop(timeout=grace_s)
        return round(time.monotonic() - t0, 2)

    def leftovers(self) -> dict[str, list[str]]:
        """Containers and volumes of this run that still exist."""
        flt = {"label": [f"{SCRATCH_LABEL}={self.run_id}"]}
        return {"containers": sorted(c.name for c in self.client.containers.list(all=True, filters=flt)),
                "volumes": sorted(v.name for v in self.client.volumes.list(filters=flt))}

    def cleanup(self) -> dict[str, list[str]]:
        """Remove every container (with its anonymous volumes) and volume of this run; returns what went.
        Safe to call twice, and after a partial start."""
        flt = {"label": [f"{SCRATCH_LABEL}={self.run_id}"]}
        gone: dict[str, list[str]] = {"containers": [], "volumes": []}
        for c in self.client.containers.list(all=True, filters=flt):
            try:
                c.remove(force=True, v=True)
                gone["containers"].append(c.name)
            except docker.errors.NotFound:
                pass
        for v in self.client.volumes.list(filters=flt):
            try:
                v.remove(force=True)
                gone["volumes"].append(v.name)
            except docker.errors.NotFound:
                pass
        return gone


def scratch_leftovers(client: docker.DockerClient, labels: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """Every scratch container and volume on the engine (any run; ``labels``: only those carrying these labels
    too): what a crashed verification left."""
    flt = {"label": [SCRATCH_LABEL]}  # one label per query: Podman ORs several label filters on volumes
    want = dict(labels or {})

    def mine(have: Mapping[str, str] | None) -> bool:
        return SCRATCH_LABEL in (have or {}) and all((have or {}).get(k) == v for k, v in want.items())

    return {"containers": sorted(c.name for c in client.containers.list(all=True, filters=flt) if mine(c.labels)),
            "volumes": sorted(v.name for v in client.volumes.list(filters=flt) if mine(v.attrs.get("Labels")))}


# --- health checks (raise while unhealthy, return a short status when healthy) ------------------------------


def http_check(host: str, port: int, path: str) -> Callable[[], str]:
    def check() -> str:
        r = httpx.get(f"http://{host}:{port}{path}", timeout=3)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
        return f"HTTP 200 {path}"
    return check


def bolt_check(host: str, port: int, user: str, password: str) -> Callable[[], str]:
    def check() -> str:
        import neo4j

        with neo4j.GraphDatabase.driver(f"bolt://{host}:{port}", auth=(user, password),
                                        connection_timeout=3, max_transaction_retry_time=0) as drv:
            drv.verify_connectivity()
        return "bolt login ok"
    return check


def redis_check(host: str, port: int, password: str) -> Callable[[], str]:
    def check() -> str:
        import redis

        with redis.Redis(host=host, port=port, password=password, socket_timeout=3,
                         socket_connect_timeout=3) as r:
            r.ping()
        return "redis AUTH + PING ok"
    return check
