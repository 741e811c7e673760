"""Neo4j 5.26 Community as a real server process, from the jars Maven copied into ``testbed/maven/target``.

The server starts through Neo4j's own launcher (``org.neo4j.server.startup.Neo4jBoot console``); the admin
entry point (``Neo4jAdminBoot``) sets the initial password and runs ``database dump`` / ``database load``.
:class:`HostNeo4j` is a server as the physical backup's :class:`drivers.neo4j_offline.OfflineNeo4j`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.neo4j_offline import OfflineNeo4j
from helix_ops.backup_tools import neo4j_dump_argv, neo4j_import_argv, neo4j_load_argv, neo4j_store_swap_argv
from helix_ops.errors import CommandFailed
from testbed import procs
from testbed.paths import NEO4J_LIB

LAUNCHER = "org.neo4j.server.startup.Neo4jBoot"
ADMIN = "org.neo4j.server.startup.Neo4jAdminBoot"
VERSION = "5.26"


FAST_START = "-XX:TieredStopAtLevel=1"


def render_conf(home: Path, bolt_port: int, heap: str = "512m", pagecache: str = "128m") -> str:
    """neo4j.conf for a loopback-only, auth-on, HTTP-off server rooted at ``home``."""
    settings = {
        "server.default_listen_address": "127.0.0.1",
        "server.bolt.listen_address": f"127.0.0.1:{bolt_port}",
        "server.bolt.advertised_address": f"127.0.0.1:{bolt_port}",
        "server.http.enabled": "false",
        "server.https.enabled": "false",
        "dbms.security.auth_enabled": "true",
        # one server and one user serve the whole session: the audits' wrong-password checks (through
        # port-forwards too) would otherwise lock that user for 5 s after 3 failures (Neo4j's default), failing
        # whichever test logs in next with AuthenticationRateLimit
        "dbms.security.auth_max_failed_attempts": "0",
        "dbms.usage_report.enabled": "false",
        "server.directories.data": str(home / "data"),
        "server.directories.logs": str(home / "logs"),
        "server.directories.run": str(home / "run"),
        "server.directories.plugins": str(home / "plugins"),
        "server.directories.import": str(home / "import"),
        "server.directories.dumps.root": str(home / "data" / "dumps"),
        "server.directories.lib": str(NEO4J_LIB),
        "server.memory.heap.initial_size": heap,
        "server.memory.heap.max_size": heap,
        "server.memory.pagecache.size": pagecache,
        "db.tx_log.rotation.retention_policy": "1 files",
        # C1 only: the bed's servers start sooner and their workloads are small (see images/neo4j/docker-entrypoint.sh)
        "server.jvm.additional": FAST_START,
    }
    return "".join(f"{k}={v}\n" for k, v in settings.items())


@dataclass
class Neo4jServer:
    """One Neo4j instance on loopback with its own home folder."""

    home: Path
    bolt_port: int
    password: str
    user: str = "neo4j"
    heap: str = "512m"
    pagecache: str = "128m"
    proc: procs.Proc | None = field(default=None, repr=False)

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.bolt_port}"

    def _env(self) -> dict[str, str]:
        # No JAVA_OPTS: the launcher hands it to the server JVM *instead of* the heap in neo4j.conf (every server
        # of the bed ran with a 96 MiB heap while JAVA_OPTS=-Xmx96m was set here). The launcher JVM's own heap
        # is its argv's -Xmx (``_java``).
        return {"NEO4J_HOME": str(self.home), "NEO4J_CONF": str(self.home / "conf"), "JAVA_TOOL_OPTIONS": ""}

    def _java(self, main: str) -> list[str]:
        return [shutil.which("java") or "java", "-Xmx128m", FAST_START, "-cp", f"{NEO4J_LIB}/*", main]

    def admin_argv(self, *args: str) -> list[str]:
        """argv for ``neo4j-admin <args>`` through the admin entry point."""
        return [*self._java(ADMIN), *args]

    def admin(self, *args: str, timeout_s: float = 600) -> str:
        """Run ``neo4j-admin <args>``; return its output, raise CommandFailed on failure."""
        # the command's own JVM (the importer wants 1 GiB of heap; C2 kept: dumps, loads and imports are heavy)
        env = {**self._env(), "JAVA_OPTS": "-Xmx1g"}
        return procs.run(self.admin_argv(*args), env=env, cwd=self.home, timeout_s=timeout_s).stdout

    def prepare(self) -> None:
        """Create the folders and neo4j.conf, and set the initial password (before the first start)."""
        for sub in ("conf", "data", "logs", "run", "plugins", "import"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        (self.home / "conf" / "neo4j.conf").write_text(render_conf(self.home, self.bolt_port, heap=self.heap,
                                                                     pagecache=self.pagecache))
        self.admin("dbms", "set-initial-password", self.password)

    def start(self, deadline_s: float = 120) -> None:
        """Start the server through Neo4j's launcher and wait until Bolt accepts this password."""
        self.proc = procs.start("neo4j", self._java(LAUNCHER) + ["console"], self.home, env=self._env())
        self.wait_ready(deadline_s)

    def wait_ready(self, deadline_s: float) -> None:
        def ready() -> bool:
            if self.proc is not None and not self.proc.alive():
                raise RuntimeError(f"neo4j exited; log tail:\n{self.proc.log_tail()}")
            if not procs.port_open(self.bolt_port):
                return False
            self.query("RETURN 1")
            return True

        procs.wait_until(f"neo4j bolt on 127.0.0.1:{self.bolt_port}", ready, deadline_s, interval_s=0.5)

    def query(self, cypher: str, **params: object) -> list[dict]:
        """Run one auto-commit query and return the records as dicts (test helper)."""
        import neo4j

        with neo4j.GraphDatabase.driver(self.uri, auth=(self.user, self.password)) as driver:
            records, _, _ = driver.execute_query(cypher, params, database_="neo4j")
            return [r.data() for r in records]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace_s=30)
            self.proc = None

    def dump(self, to_dir: Path, database: str = "neo4j") -> Path:
        """``neo4j-admin database dump`` of a stopped server; returns the dump file."""
        to_dir.mkdir(parents=True, exist_ok=True)
        self.admin("database", "dump", database, f"--to-path={to_dir}", "--overwrite-destination=true")
        return to_dir / f"{database}.dump"

    def load(self, from_dir: Path, database: str = "neo4j") -> None:
        """``neo4j-admin database load --overwrite-destination`` into a stopped server."""
        self.admin("database", "load", database, f"--from-path={from_dir}", "--overwrite-destination=true")


class HostNeo4j(OfflineNeo4j):
    """:class:`Neo4jServer` (or any host process with ``stop()``, ``start()``, ``admin(*args)`` and ``home``) as
    the physical strategy's :class:`drivers.neo4j_offline.OfflineNeo4j`: ``neo4j-admin`` runs on this machine,
    the dump file in ``workdir`` (tests and the bench)."""

    def __init__(self, server: Any, workdir: Any) -> None:
        self.server = server
        self.workdir = Path(workdir)

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()

    def _admin(self, argv: list[str]) -> str:
        try:
            return self.server.admin(*argv[1:])
        except CommandFailed:
            raise
        except Exception as exc:  # the test bed's runner raises its own error type
            raise CommandFailed(argv, getattr(exc, "rc", 1), str(exc)) from exc

    def dump(self, write: Callable[[bytes], Any], database: str = "neo4j") -> int:
        folder = self.workdir / "dump"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            self._admin(neo4j_dump_argv(database, str(folder)))
            size = 0
            with open(folder / f"{database}.dump", "rb") as f:
                while chunk := f.read(1 << 20):
                    write(chunk)
                    size += len(chunk)
            return size
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def load(self, chunks: Iterable[bytes], size: int, database: str = "neo4j") -> None:
        folder = self.workdir / "load"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            with open(folder / f"{database}.dump", "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
            self._admin(neo4j_load_argv(database, str(folder)))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def import_csv(self, csvs: Any, database: str = "neo4j") -> None:
        self._admin(neo4j_import_argv(database, str(csvs.folder), csvs.nodes, csvs.relationships,
                                      multiline=csvs.multiline))

    def swap_store(self, op: str, database: str = "neo4j") -> None:
        argv = neo4j_store_swap_argv(op, str(self.server.home / "data"), database)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise CommandFailed(argv, done.returncode, done.stdout + done.stderr)
