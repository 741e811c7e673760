"""The whole test bed: real Neo4j, Redis, S3 storage, a container engine with the local images, and Prefect.

``Bed`` starts each part on first use (free loopback ports, fresh passwords, its own folder under
``.testbed/runs/<run id>``), waits for it with a deadline and stops everything in ``down()``. The command line
(``python -m testbed up|down|status``) and the pytest fixtures (``tests/conftest.py``) both use it.

A run folder holds ``owner.json`` (the pid that owns it) and the pid files of its servers, so a run that
crashed is cleaned up by the next one: its processes are stopped (after checking their command lines), its
containers removed and its folder deleted.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed import procs
from testbed.engine import TESTBED_LABEL, Engine
from testbed.images import ensure_images
from testbed.neo4j import Neo4jServer
from testbed.paths import NEO4J_LIB, S3PROXY_JAR, runs_dir
from testbed.prefect_server import PrefectServer
from testbed.redis_server import RedisServer
from testbed.s3proxy import S3Server
from testbed.tier import refuse_servers

PARTS = ("redis", "neo4j", "s3", "engine", "images", "prefect")
PROJECTS_FILE = "projects.json"
"""In a run's folder: the Helix projects (``[{"project", "environment"}]``) deployed on the run's engine that
``python -m testbed down`` removes whole (every container, network and volume with their labels, whoever
started them: a flow run by hand passes no bed label). The quickstart records its environment there."""
# Started only when named (``python -m testbed up kube``) or used: its first build takes tens of minutes.
OPTIONAL_PARTS = ("kube", "kube-node")


def new_password() -> str:
    # never a leading '-': neo4j-admin set-initial-password would read it as an option (exit 64, seen in CI)
    return "p" + secrets.token_urlsafe(24)


def live_owner(run_id: str) -> int | None:
    """The pid of the live process that owns test-bed run ``run_id`` (a pytest session), or None: a run of
    ``up`` or of the quickstart (owner pid 1), one whose owner is gone, or one with no folder here whose id's
    pid (``<date>-<time>-<pid>``, the creating process) is gone."""
    run = runs_dir() / run_id
    try:
        owner = int(json.loads((run / "owner.json").read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        if run.exists():
            return None
        tail = run_id.rsplit("-", 1)[-1]  # a run of another HELIX_TESTBED_HOME: its creator's pid, to be safe
        owner = int(tail) if tail.isdigit() else 1
    return owner if owner != 1 and procs.pid_alive(owner) else None


def owned_by_live_session(labels: dict[str, str]) -> bool:
    """True for an object (container, network, volume) labelled by the bed of a pytest session that still
    runs: ``down`` spares it (that session removes it when it ends)."""
    owner = labels.get(f"{TESTBED_LABEL}.owner")
    return bool(owner) and live_owner(owner) is not None


def recorded_projects(run_dir: Path) -> list[dict[str, str]]:
    """The projects a run recorded (:data:`PROJECTS_FILE`), ``[]`` when none or unreadable."""
    try:
        rows = json.loads((run_dir / PROJECTS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("project"), str)] \
        if isinstance(rows, list) else []


def reap_stale_runs(log=print) -> list[str]:
    """Stop and delete every run whose owner process is gone; return their ids."""
    reaped = []
    for run in sorted(runs_dir().iterdir()):
        try:
            owner = json.loads((run / "owner.json").read_text())["pid"]
        except (OSError, ValueError, KeyError):
            owner = None
        if owner is not None and procs.pid_alive(owner):
            continue
        from testbed.kube_node import clean_up_run

        clean_up_run(run, log)  # first: its pods' containers are gone only while containerd still runs
        for pidfile in run.rglob("*.pid"):
            if procs.reap_stale(pidfile):
                log(f"stopped a leftover {pidfile.stem} of run {run.name}")
        (run / "engine" / "podman.sock").unlink(missing_ok=True)
        shutil.rmtree(run, ignore_errors=True)
        reaped.append(run.name)
    return reaped


@dataclass
class Bed:
    """One test-bed run. Parts start lazily; ``down()`` stops the ones this run started."""

    run_dir: Path
    log: object = print
    _parts: dict[str, object] = field(default_factory=dict)
    _servers: list[Neo4jServer | RedisServer] = field(default_factory=list)  # new_neo4j/new_redis: down() stops them

    @classmethod
    def create(cls, owner_pid: int | None = None, log=print) -> Bed:
        refuse_servers("the test bed (testbed.bed.Bed)")
        reaped = reap_stale_runs(log)
        if reaped:
            log(f"cleaned up {len(reaped)} crashed test-bed run(s)")
        run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        run_dir = runs_dir() / run_id
        run_dir.mkdir(parents=True, mode=0o700)
        (run_dir / "owner.json").write_text(json.dumps({"pid": owner_pid or os.getpid()}))
        return cls(run_dir=run_dir, log=log)

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    def _timed(self, name: str, start) -> object:
        refuse_servers(f"the test bed's {name}")
        t0 = time.monotonic()
        part = start()
        self.log(f"{name} up in {time.monotonic() - t0:.1f}s")
        self._parts[name] = part
        return part

    def redis(self) -> RedisServer:
        if "redis" not in self._parts:
            def start():
                server = RedisServer(self.run_dir / "redis", procs.free_port(), new_password())
                server.start()
                return server
            self._timed("redis", start)
        return self._parts["redis"]

    def neo4j(self) -> Neo4jServer:
        if "neo4j" not in self._parts:
            self._timed("neo4j", lambda: self.new_neo4j("neo4j"))
        return self._parts["neo4j"]

    def new_neo4j(self, name: str, heap: str = "512m", pagecache: str = "128m") -> Neo4jServer:
        """A fresh Neo4j server of its own (for tests that stop it, e.g. dump and load). ``down()`` stops it
        too (also when its start timed out), so a failed test leaves no JVM behind."""
        _require(NEO4J_LIB, "the Neo4j jars")
        server = Neo4jServer(self.run_dir / name, procs.free_port(), new_password(), heap=heap,
                             pagecache=pagecache)
        self._servers.append(server)
        server.prepare()
        server.start()
        return server

    def new_redis(self, name: str) -> RedisServer:
        """A fresh Redis server of its own (a test that rotates its password or restores into it); ``down()``
        stops it too."""
        server = RedisServer(self.run_dir / name, procs.free_port(), new_password())
        self._servers.append(server)
        server.start()
        return server

    def s3(self) -> S3Server:
        if "s3" not in self._parts:
            def start():
                _require(S3PROXY_JAR, "the S3Proxy jar")
                server = S3Server(self.run_dir / "s3", procs.free_port(), "helix" + secrets.token_hex(6),
                                  new_password())
                server.start()
                return server
            self._timed("s3", start)
        return self._parts["s3"]

    def engine(self) -> Engine:
        if "engine" not in self._parts:
            def start():
                engine = Engine(self.run_dir / "engine")
                engine.start()
                return engine
            self._timed("engine", start)
        return self._parts["engine"]

    def images(self) -> dict[str, str]:
        """Build (or reuse, when their inputs did not change) the local images; key -> tag."""
        if "images" not in self._parts:
            def build():
                client = self.engine().client(timeout=900)
                try:
                    return ensure_images(client, log=self.log)
                finally:
                    client.close()
            self._timed("images", build)
        return self._parts["images"]

    def prefect(self) -> PrefectServer:
        if "prefect" not in self._parts:
            def start():
                # with its UI: the browser tests use it, and restarting a server that workers and flows of the
                # session talk to (to turn the UI on later) would cut them off
                server = PrefectServer(self.run_dir / "prefect", procs.free_port(), ui=True)
                server.start()
                return server
            self._timed("prefect", start)
        return self._parts["prefect"]

    def kube(self):
        """The local Kubernetes control plane (``testbed.kube.KubeCluster``), built first when it is missing."""
        if "kube" not in self._parts:
            def start():
                from testbed.kube import KubeCluster, ensure_built

                cluster = KubeCluster(self.run_dir / "kube", ensure_built(log=self.log), log=self.log)
                try:
                    cluster.start()
                except BaseException:
                    cluster.stop()
                    raise
                return cluster
            self._timed("kube", start)
        return self._parts["kube"]

    def kube_node(self):
        """One real Kubernetes node (``testbed.kube_node.RealNode``) on a control plane of its own without kwok
        (the kwok cluster's tests must not land pods on it); the images are loaded into its containerd."""
        if "kube-node" not in self._parts:
            def start():
                from testbed.kube import KubeCluster, ensure_built
                from testbed.kube_node import RealNode, machine_ready

                missing = machine_ready()
                if missing:
                    raise RuntimeError(f"the real Kubernetes node cannot start: {missing}")
                images = self.images()
                bin_dir = ensure_built(log=self.log)
                cluster = KubeCluster(self.run_dir / "kube-node", bin_dir, node_count=0, kwok=False, log=self.log)
                node = RealNode(cluster, bin_dir, log=self.log)
                try:
                    cluster.start()
                    node.start()
                    node.load_images(sorted(set(images.values())))
                except BaseException:
                    node.stop()
                    cluster.stop()
                    raise
                return _NodeAndCluster(node)
            self._timed("kube-node", start)
        return self._parts["kube-node"].node

    def record_project(self, project: str, environment: str) -> Path:
        """Record that ``project`` (environment ``environment``) lives on this run's engine: ``down`` removes
        all of it, also what flows started by hand (without :meth:`container_labels`) created."""
        rows = [r for r in recorded_projects(self.run_dir)
                if (r["project"], r.get("environment")) != (project, environment)]
        path = self.run_dir / PROJECTS_FILE
        path.write_text(json.dumps([*rows, {"project": project, "environment": environment}], indent=2))
        return path

    def container_labels(self) -> dict[str, str]:
        """Labels for every container a test starts, so ``down()`` (or the next run) removes it."""
        return {TESTBED_LABEL: "1", f"{TESTBED_LABEL}.owner": self.run_id}

    def up(self, parts: tuple[str, ...] = PARTS) -> None:
        for part in parts:
            getattr(self, part.replace("-", "_"))()
        self.write_state()

    def state(self) -> dict:
        """What is running, for ``python -m testbed status`` (passwords included: the file is mode 0600)."""
        out: dict[str, object] = {"run_id": self.run_id, "run_dir": str(self.run_dir)}
        if "redis" in self._parts:
            r = self._parts["redis"]
            out["redis"] = {"host": "127.0.0.1", "port": r.port, "password": r.password}
        if "neo4j" in self._parts:
            n = self._parts["neo4j"]
            out["neo4j"] = {"uri": n.uri, "user": n.user, "password": n.password}
        if "s3" in self._parts:
            s = self._parts["s3"]
            out["s3"] = {"endpoint": s.endpoint, "access_key": s.access_key, "secret_key": s.secret_key}
        if "engine" in self._parts:
            e = self._parts["engine"]
            out["engine"] = {"kind": e.kind, "base_url": e.base_url}
        if "images" in self._parts:
            out["images"] = self._parts["images"]
        if "prefect" in self._parts:
            out["prefect"] = {"api_url": self._parts["prefect"].api_url}
        if "kube" in self._parts:
            k = self._parts["kube"]
            out["kube"] = {"server": k.server, "kubeconfig": str(k.kubeconfig), "nodes": k.nodes}
        if "kube-node" in self._parts:
            node = self._parts["kube-node"].node
            out["kube-node"] = {"server": node.cluster.server, "kubeconfig": str(node.cluster.kubeconfig),
                                "node": node.name, "ip": node.ip}
        return out

    def write_state(self) -> Path:
        path = self.run_dir / "state.json"
        path.touch(mode=0o600)
        path.write_text(json.dumps(self.state(), indent=2))
        return path

    def logs(self) -> dict[str, str]:
        """The tail of every server log of this run (printed when a test fails)."""
        return {p.stem: "\n".join(p.read_text(errors="replace").splitlines()[-30:])
                for p in sorted(self.run_dir.rglob("*.log"))}

    def down(self) -> None:
        """Remove this run's containers, stop its servers (newest first) and delete its folder."""
        engine = self._parts.get("engine")
        if engine is not None:
            try:
                removed = engine.remove_labelled(owner=self.run_id)
                if removed:
                    self.log(f"removed {removed} container(s)")
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                self.log(f"could not remove containers: {exc}")
        for server in reversed(self._servers):
            server.stop()
        self._servers.clear()
        for name in reversed(list(self._parts)):
            stop = getattr(self._parts[name], "stop", None)
            if stop is not None:
                stop()
        self._parts.clear()
        shutil.rmtree(self.run_dir, ignore_errors=True)


@dataclass
class _NodeAndCluster:
    """The bed's "kube-node" part: stopping it stops the node, then its control plane."""

    node: object

    def stop(self) -> None:
        self.node.stop()
        self.node.cluster.stop()


def _require(path: Path, what: str) -> None:
    if not path.exists():
        raise RuntimeError(f"{what} are missing at {path}: run `make deps` (it runs Maven) first")
