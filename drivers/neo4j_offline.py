"""The physical backup of Neo4j (Community): offline ``neo4j-admin database dump`` / ``load`` while Neo4j is
stopped (:func:`dump_offline`, :func:`load_offline`), through an :class:`OfflineNeo4j`: where Neo4j runs, able
to stop, start and run ``neo4j-admin``. :class:`EngineNeo4j` is the environment's container on the engine
(also the importer restore's, :mod:`drivers.neo4j_import`); the test bed's host process is
:class:`testbed.neo4j.HostNeo4j`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drivers.plain import plain
from helix_ops.errors import BackupIntegrityError, DriverError, OfflineUnavailable

if TYPE_CHECKING:
    from pydantic import SecretStr


class OfflineNeo4j:
    """What the physical strategy needs from where Neo4j runs: stop, start (and wait), run ``neo4j-admin``.

    :class:`testbed.neo4j.HostNeo4j` drives a host process (the test bed's ``Neo4jServer`` and the bench);
    :class:`EngineNeo4j` drives the environment's container on the engine (stop it, run a one-off container
    of the same image on the same data volume, start it again).
    """

    def stop(self) -> None: raise NotImplementedError
    def start(self) -> None: raise NotImplementedError
    def dump(self, write: Callable[[bytes], Any], database: str = "neo4j") -> int: raise NotImplementedError
    def load(self, chunks: Iterable[bytes], size: int, database: str = "neo4j") -> None: raise NotImplementedError
    def import_csv(self, csvs: Any, database: str = "neo4j") -> None: raise NotImplementedError
    def swap_store(self, op: str, database: str = "neo4j") -> None: raise NotImplementedError  # see neo4j_store_swap_argv
    uri: str | None = None  # where Bolt answers after start(), when it may have moved


@dataclass
class PhysicalResult:
    downtime_s: float
    dump_bytes: int = 0


def dump_offline(target: OfflineNeo4j, write: Callable[[bytes], Any], database: str = "neo4j") -> PhysicalResult:
    """Stop Neo4j, ``neo4j-admin database dump`` into ``write``, start Neo4j again (always, even on failure).

    The downtime is measured from the stop to Neo4j answering again. The writer must be drained first.
    """
    t0 = time.monotonic()
    target.stop()
    try:
        size = target.dump(write, database)
    finally:
        target.start()
    return PhysicalResult(time.monotonic() - t0, size)


def load_offline(target: OfflineNeo4j, chunks: Iterable[bytes], size: int, database: str = "neo4j") -> PhysicalResult:
    """Stop Neo4j, ``neo4j-admin database load --overwrite-destination=true`` from ``chunks``, start again."""
    t0 = time.monotonic()
    target.stop()
    try:
        target.load(chunks, size, database)
    finally:
        target.start()
    return PhysicalResult(time.monotonic() - t0)


# --- physical on the container engine: the environment's Neo4j container --------------------------------------

IMPORT_JAVA_OPTS = "-Xmx1g"  # the importer's heap (its caches are off-heap): 96m ran out at one node, and at
# 512m it warns "may be too small" (it suggests 1 GiB)
ADMIN_DIR = "/backups"  # in the one-off container's own filesystem (the helix-neo4j image has it, owned by neo4j)


def _image_ids(client: Any, image: str) -> tuple[int, int]:
    """The numeric ``uid, gid`` ``image`` runs as (``Config.User`` ``"7474:7474"``; root when unset or a name)."""
    user = (client.images.get(image).attrs.get("Config") or {}).get("User") or "0:0"
    uid, _, gid = user.partition(":")
    return (int(uid), int(gid or uid)) if uid.isdigit() and (not gid or gid.isdigit()) else (0, 0)


class _ChunksReader:
    """A ``read(n)`` file object over an iterator of byte chunks (tarfile copies exactly ``size`` bytes)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""
        self._at = 0

    def read(self, n: int = -1) -> bytes:
        if self._at >= len(self._buf):
            self._buf, self._at = next(self._it, b""), 0
            while not self._buf:  # skip empty chunks; b"" at the end
                nxt = next(self._it, None)
                if nxt is None:
                    return b""
                self._buf = nxt
        end = len(self._buf) if n < 0 else min(len(self._buf), self._at + n)
        out = self._buf[self._at:end]
        self._at = end
        return bytes(out)

    def drain(self) -> None:
        """Read the source to its end (a checking source verifies its checksum there); more bytes are an error."""
        extra = len(self._buf) - self._at + sum(len(c) for c in self._it)
        if extra:
            raise BackupIntegrityError(f"the dump holds {extra} bytes more than its manifest says")


class EngineNeo4j(OfflineNeo4j):
    """The environment's Neo4j container on the engine, for the offline ``neo4j-admin`` dump and load.

    ``stop``: stop every running replica of ``service`` (graceful, ``stop_grace_s``), remembering them.
    ``dump`` / ``load``: a one-off container of the same image (or ``image``) mounts the stopped container's
    data volume at ``/data`` and runs ``neo4j-admin database dump`` / ``load --overwrite-destination=true``
    with the dump file in its own ``/backups`` (streamed out / in through the engine's archive API: nothing is
    held in memory). The one-off container is a :class:`drivers.engine_scratch.ScratchEngine` run (no project labels)
    and is removed in a ``finally``, also on failure or timeout.
    ``start``: start the remembered containers and wait for a Bolt login (``start_deadline_s``).

    The image is checked *before* Neo4j is stopped, so a missing image costs no downtime.
    """

    def __init__(self, driver: Any, user: str, password: SecretStr | str, *, service: str = "neo4j",
                 image: str | None = None, run_id: str | None = None, scratch_labels: dict[str, str] | None = None,
                 stop_grace_s: int = 120, start_deadline_s: float = 600, admin_deadline_s: float = 4 * 3600,
                 log: Callable[[str], None] = lambda m: None) -> None:
        import re
        import secrets as _secrets

        self.driver = driver
        self.user = user
        self.password = plain(password)
        self.service = service
        self.stop_grace_s = stop_grace_s
        self.start_deadline_s = start_deadline_s
        self.admin_deadline_s = admin_deadline_s
        self.scratch_labels = dict(scratch_labels or {})
        self.log = log
        self.stopped: list[str] = []
        self.uri: str | None = None  # the Bolt address after start() (a restart may publish another port)
        self.admin_seconds = 0.0
        self.health = ""
        containers = driver.containers(service)
        running = [c for c in containers if c.status == "running"]
        if len(running) != 1:
            raise OfflineUnavailable(f"{service} of {driver.project}: {len(running)} running container(s), the offline "
                              "dump/load needs exactly one", hint="a cluster uses the online backup (Enterprise); "
                                                                  "start a stopped Neo4j first (deploy-helix)")
        self.container = running[0]
        mounts = [m for m in self.container.attrs.get("Mounts") or [] if m.get("Destination") == "/data"]
        if not mounts or not mounts[0].get("Name"):
            raise OfflineUnavailable(f"{self.container.name} has no named volume on /data",
                              hint="helix-ops deploys Neo4j with its data volume on /data")
        self.data_volume = str(mounts[0]["Name"])
        self.image = image or self.container.labels.get("helix-ops.image") or self.container.attrs["Config"]["Image"]
        base = re.sub(r"[^a-z0-9-]", "-", str(driver.project).lower())[:24].strip("-") or "neo4j"
        self.run_id = run_id or f"{base}-admin-{_secrets.token_hex(3)}"

    def scratch(self) -> Any:
        from drivers.engine_scratch import ScratchEngine

        return ScratchEngine(self.driver.client, self.run_id, self.scratch_labels)

    def preflight(self) -> None:
        """The one-off image is on the engine (before anything is stopped)."""
        try:
            self.scratch().require_images([self.image])
        except DriverError as exc:
            raise OfflineUnavailable(f"image {self.image} for the one-off neo4j-admin container is not on the engine: "
                              f"{self.service} was not stopped", hint="build or pull the environment's Neo4j image "
                              "on this engine first") from exc

    def stop(self) -> None:
        self.preflight()
        self.stopped = [self.container.name]
        self.log(f"stopping {self.container.name} (grace {self.stop_grace_s}s)")
        try:
            self.container.stop(timeout=self.stop_grace_s)
        except Exception:
            self.start()  # dump_offline / load_offline only restart after a successful stop
            raise

    def start(self) -> None:
        from drivers.engine_health import bolt_check

        self.driver.start_containers(self.stopped or [self.container.name])
        host, port = self.driver.probe_address(self.container, 7687)
        self.uri = f"bolt://{host}:{port}"
        self.health = self.driver.wait_healthy(self.container, bolt_check(host, port, self.user, self.password),
                                               f"{self.container.name} to accept a Bolt login again",
                                               self.start_deadline_s, interval_s=1)
        self.log(f"{self.container.name} healthy again: {self.health}")

    def _run(self, short: str, argv: list[str], files: list[Any] = ()) -> tuple[Any, Any, Any]:
        from helix_ops.errors import CommandFailed

        eng = self.scratch()
        container, result = eng.run_to_exit(short, self.image, argv, volumes={self.data_volume: "/data"},
                                            files=files, deadline_s=self.admin_deadline_s)
        self.admin_seconds += result.seconds
        self.log(f"{' '.join(argv[:4])} in a one-off container: exit {result.rc} in {result.seconds:.1f}s")
        if result.rc != 0:
            raise CommandFailed(argv, result.rc, result.output[-2000:])
        return eng, container, result

    def dump(self, write: Callable[[bytes], Any], database: str = "neo4j") -> int:
        from helix_ops.backup_tools import neo4j_dump_argv

        eng = self.scratch()
        try:
            _, container, _ = self._run("dump", neo4j_dump_argv(database, ADMIN_DIR))
            size = 0
            for chunk in eng.read_file(container, f"{ADMIN_DIR}/{database}.dump"):
                write(chunk)
                size += len(chunk)
            return size
        finally:
            eng.cleanup()

    def load(self, chunks: Iterable[bytes], size: int, database: str = "neo4j") -> None:
        import tarfile

        from helix_ops.backup_tools import neo4j_load_argv

        def fill(tar: tarfile.TarFile, uid: int, gid: int) -> None:  # written while the chunks arrive: one copy on disk
            info = tarfile.TarInfo(f"{ADMIN_DIR.lstrip('/')}/{database}.dump")
            info.size, info.mode, info.uid, info.gid, info.mtime = size, 0o600, uid, gid, int(time.time())
            reader = _ChunksReader(chunks)
            tar.addfile(info, reader)
            reader.drain()  # the store checks the raw sha256 at the end of the stream

        self._run_with_files("load", neo4j_load_argv(database, ADMIN_DIR), fill)

    def import_csv(self, csvs: Any, database: str = "neo4j") -> None:
        """``neo4j-admin database import full`` in a one-off container on the data volume, the CSV files copied
        into its own ``/backups/import`` first."""
        import tarfile

        from helix_ops.backup_tools import neo4j_import_argv

        folder = f"{ADMIN_DIR}/import"

        def fill(tar: tarfile.TarFile, uid: int, gid: int) -> None:
            def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
                info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
                return info

            tar.add(csvs.folder, arcname=folder.lstrip("/"), filter=owned)

        argv = neo4j_import_argv(database, folder, csvs.nodes, csvs.relationships, multiline=csvs.multiline)
        self._run_with_files("import", argv, fill, environment={"JAVA_OPTS": IMPORT_JAVA_OPTS})

    def swap_store(self, op: str, database: str = "neo4j") -> None:
        """:func:`helix_ops.backup_tools.neo4j_store_swap_argv` in a one-off container on the data volume."""
        from helix_ops.backup_tools import neo4j_store_swap_argv

        self._run_with_files(f"swap-{op}", neo4j_store_swap_argv(op, "/data", database), lambda tar, uid, gid: None)

    def _run_with_files(self, short: str, argv: list[str], fill: Callable[[Any, int, int], None],
                        environment: dict[str, str] | None = None) -> None:
        """Run ``argv`` in a one-off container on the data volume, after copying in the files ``fill`` writes
        into a tar (given the image's neo4j uid and gid): one tar on local disk, then the archive API."""
        import tarfile
        import tempfile

        eng = self.scratch()
        uid, gid = _image_ids(self.driver.client, self.image)
        try:
            with tempfile.TemporaryFile() as tar_file:
                with tarfile.open(fileobj=tar_file, mode="w") as tar:
                    fill(tar, uid, gid)
                tar_file.seek(0)
                container = eng._create(short, self.image, command=argv, entrypoint=None, environment=environment,
                                        volumes={self.data_volume: "/data"}, ports=(), user=None, mem_limit=None)
                container.put_archive("/", tar_file)
            self._start_and_wait(eng, container, argv)
        finally:
            eng.cleanup()

    def _start_and_wait(self, eng: Any, container: Any, argv: list[str]) -> None:
        from helix_ops.errors import CommandFailed, WaitTimeout

        t0 = time.monotonic()
        container.start()
        try:
            status = container.wait(timeout=self.admin_deadline_s)
        except Exception as exc:  # noqa: BLE001 - requests' timeout types
            raise WaitTimeout(f"{' '.join(argv[:4])} in {container.name} to finish",
                              f"still running after {self.admin_deadline_s:.0f}s") from exc
        seconds = round(time.monotonic() - t0, 2)
        self.admin_seconds += seconds
        rc = int(status.get("StatusCode", -1))
        self.log(f"{' '.join(argv[:4])} in a one-off container: exit {rc} in {seconds:.1f}s")
        if rc != 0:
            raise CommandFailed(argv, rc, container.logs().decode(errors="replace")[-20000:])
