"""Scratch containers and volumes on the container engine: throwaway ones of one run (a backup verification,
an offline Neo4j tool run), named ``helix-scratch-<run>-<name>`` and labelled ``helix-ops.scratch=<run>``, never
with a project's labels, so no project's state, plan or prune sees them.

Holds :class:`ScratchEngine` (start, run once, run to exit, exec, read a file, stop, clean up), what a one-off
container did (:class:`OneOff`), the files copied in before a start (:class:`ScratchFile`) and
:func:`scratch_leftovers` (what a crashed run left)."""

from __future__ import annotations

import io
import re
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import docker
import docker.errors
from docker.models.containers import Container

from drivers.engine import ENV_LABEL, IMAGE_LABEL, KIND_LABEL, PROJECT_LABEL, SERVICE_LABEL, EngineDriver
from drivers.storage import IterStream
from helix_ops.errors import ConfigError, DriverError, WaitTimeout
from helix_ops.plan import HASH_LABEL

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
