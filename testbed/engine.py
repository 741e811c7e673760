"""A container engine with the Docker Engine API: a real Docker where one answers, else Podman's API service.

Podman runs with the settings known to work on these machines (runc, cgroupfs, no default ulimits, file
events logger): see ``../shared/design/testbed-notes.md``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from testbed import procs

CONTAINERS_CONF = """\
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
TESTBED_LABEL = "dev.helix-ops.testbed"


def docker_client(base_url: str, timeout: int = 120):
    import docker

    return docker.DockerClient(base_url=base_url, timeout=timeout)


def _answers(base_url: str) -> bool:
    try:
        client = docker_client(base_url, timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "no engine there"
        return False


def existing_docker() -> str | None:
    """The base URL of a Docker engine already running here (``DOCKER_HOST`` or the default socket)."""
    for url in (os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock"):
        if url and _answers(url):
            return url
    return None


@dataclass
class Engine:
    """The engine the bed uses: ``kind`` is ``docker`` or ``podman``; ``base_url`` is its API address."""

    home: Path
    kind: str = ""
    base_url: str = ""
    proc: procs.Proc | None = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        """Environment for podman/podman-compose commands that must use the same settings."""
        return {"CONTAINERS_CONF": str(self.home / "containers.conf")} if self.kind == "podman" else {}

    def start(self, deadline_s: float = 60) -> None:
        url = existing_docker()
        if url:
            self.kind, self.base_url = "docker", url
            return
        podman = shutil.which("podman")
        if podman is None:
            raise RuntimeError("no container engine: install podman and runc (apt-get install podman runc)")
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "containers.conf").write_text(CONTAINERS_CONF)
        sock = self.home / "podman.sock"
        sock.unlink(missing_ok=True)  # a stale socket from a crashed run
        self.kind, self.base_url = "podman", f"unix://{sock}"
        self.proc = procs.start("podman", [podman, "system", "service", "--time=0", self.base_url], self.home,
                                env=self.env())
        procs.wait_until(f"podman API on {self.base_url}", lambda: self._alive_and_answers(), deadline_s)

    def _alive_and_answers(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise RuntimeError(f"podman service exited; log tail:\n{self.proc.log_tail()}")
        return _answers(self.base_url)

    def client(self, timeout: int = 300):
        return docker_client(self.base_url, timeout=timeout)

    def remove_labelled(self, owner: str | None = None) -> int:
        """Remove the bed's containers, then its networks and volumes (all, or one owner's).

        Returns how many containers were removed.
        """
        label = f"{TESTBED_LABEL}.owner={owner}" if owner else TESTBED_LABEL
        client = self.client()
        try:
            gone = 0
            for c in client.containers.list(all=True, filters={"label": label}):
                c.remove(force=True, v=True)
                gone += 1
            for net in client.networks.list(filters={"label": label}):
                if not _attached(client, net):  # another owner's container still uses it
                    net.remove()
            for vol in client.volumes.list(filters={"label": label}):
                vol.remove(force=True)
            return gone
        finally:
            client.close()

    def remove_project(self, project: str, environment: str | None = None,
                       spare=lambda labels: False) -> dict[str, list[str]]:
        """Remove every container, then network and volume, labelled ``helix-ops.project=<project>`` (and
        ``helix-ops.environment=<environment>`` when given), whoever started them, except those for which
        ``spare(labels)`` is true (a live pytest session's). Returns the names removed, by kind."""
        from drivers.engine import ENV_LABEL, PROJECT_LABEL

        # One label filter, the rest checked here: Podman's Docker API ORs several label filters (Docker ANDs them)
        wanted = {PROJECT_LABEL: project, **({ENV_LABEL: environment} if environment else {})}
        filters = {"label": f"{PROJECT_LABEL}={project}"}

        def ours(labels: dict[str, str] | None) -> bool:
            labels = labels or {}
            return all(labels.get(k) == v for k, v in wanted.items()) and not spare(labels)

        removed: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}
        client = self.client()
        try:
            for c in client.containers.list(all=True, filters=filters):
                if ours(c.labels):
                    c.remove(force=True, v=True)
                    removed["containers"].append(c.name)
            for net in client.networks.list(filters=filters):
                # a network a spared container still uses stays (Podman would remove it from under the
                # container, whose DNS entry and bridge then outlive it)
                if ours(net.attrs.get("Labels")) and not _attached(client, net):
                    net.remove()
                    removed["networks"].append(net.name)
            for vol in client.volumes.list(filters=filters):
                if ours(vol.attrs.get("Labels")):
                    vol.remove(force=True)
                    removed["volumes"].append(vol.name)
            return removed
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


def _attached(client, net) -> list[str]:
    """Names of the containers (any state) attached to ``net``."""
    return [c.name for c in client.containers.list(all=True, filters={"network": net.name})]
