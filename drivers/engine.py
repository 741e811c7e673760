"""The container-engine driver: applies a rendered Compose document through the Docker Engine API.

The same code drives Docker and Podman (its Docker-compatible API). It reads back what runs from container
labels, so the plan can be computed from the live state:

* ``helix-ops.project`` / ``helix-ops.environment`` / ``helix-ops.service`` — whose container it is;
* ``helix-ops.spec-hash`` — the hash of the rendered Compose service it was created from.

Secrets reach containers only as environment values at creation time (resolved from the ``${VAR}``
references of the rendering): they never appear in labels, names, logs or errors.

Health is probed from outside the container (HTTP, a Bolt login, Redis AUTH + PING), through the probe port
published on 127.0.0.1 only, since engines without systemd do not run image health checks periodically.
The checks and the wait for health live in ``drivers/engine_health.py``; throwaway containers outside any
project (``ScratchEngine``, a backup verification's) in ``drivers/engine_scratch.py``.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_fixed

from drivers.engine_health import wait_container_healthy
from helix_ops.errors import ConfigError, DriverError
from helix_ops.plan import HASH_LABEL, CurrentObject, CurrentState, engine_service_hash
from helix_ops.wait import wait_until

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


def _copier_broke(exc: BaseException) -> bool:
    """Podman's copy into a container runs a helper process; under load it can die as it starts, and the API
    answers 500 "passing bulk input to subprocess: write |1: broken pipe" (seen once in CI, 2026-12-04). The
    copy writes the same files again, so it is tried again; any other engine error is raised at once."""
    return (isinstance(exc, docker.errors.APIError) and exc.status_code == 500
            and "broken pipe" in str(exc.explanation or ""))


@retry(retry=retry_if_exception(_copier_broke), stop=stop_after_attempt(3), wait=wait_fixed(1), reraise=True)
def put_files(container: Container, files: Mapping[str, str]) -> None:
    """Write ``files`` (absolute path → text) into ``container`` (created or running)."""
    container.put_archive("/", _tar_of(files))


def _stop_each(containers: Iterable[Container], grace_s: int, remove: bool) -> list[str]:
    """Stop each container (and remove it when ``remove``); one already gone counts. Their names."""
    names = []
    for c in containers:
        try:
            c.stop(timeout=grace_s)
            if remove:
                c.remove(v=False)
        except docker.errors.NotFound:
            pass
        names.append(c.name)
    return names


_API_VERSIONS: dict[str, str] = {}
"""Engine address → the API version its first client negotiated. docker-py asks the engine's ``/version`` for
every new client unless given one, and Podman takes about 0.45 s to answer it: five clients made a no-op deploy
2 s slower (measured with cProfile). The version an engine speaks does not change under a running process."""


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
        key = base_url or os.environ.get("DOCKER_HOST") or "<default socket>"
        pinned = {"version": _API_VERSIONS[key]} if key in _API_VERSIONS else {}
        try:
            client = docker.DockerClient(base_url=base_url, timeout=timeout, **pinned) if base_url else \
                docker.from_env(timeout=timeout, **pinned)
            client.ping()
            _API_VERSIONS[key] = client.api.api_version
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
            put_files(container, plan.files)
        container.start()
        container.reload()
        return container

    def remove(self, containers: Iterable[Container], grace_s: int = 20) -> list[str]:
        """Stop (SIGTERM, then KILL after ``grace_s``) and remove containers; return their names."""
        return _stop_each(containers, grace_s, remove=True)

    def stop(self, containers: Iterable[Container], grace_s: int = 20) -> list[str]:
        """Stop (SIGTERM, then KILL after ``grace_s``) containers, keeping them; return their names."""
        return _stop_each(containers, grace_s, remove=False)

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
            put_files(c, {path: conf_text})
            result = c.exec_run(["nginx", "-t", "-q"])
            if result.exit_code != 0:
                raise DriverError(f"nginx -t in {c.name} failed: {result.output.decode(errors='replace')[-300:]}",
                                  hint="the rendered nginx.conf is refused by nginx")
            c.kill(signal="SIGHUP")  # what `nginx -s reload` sends the master (PID 1), without a second exec
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
