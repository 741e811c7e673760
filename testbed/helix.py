"""Helpers for tests and benchmarks that deploy Helix on the test bed: a copy of the local descriptor with its
own project and host port, and the identity of every container of a project."""

from __future__ import annotations

from pathlib import Path

import yaml

from testbed import procs
from testbed.paths import REPO


def local_descriptor(dest: Path, project: str, rate_limit_rps: int | None = None, **service_tags: str) -> Path:
    """Write ``deployments/local.yaml`` with ``project``, a free host port and image tags overridden.

    ``rate_limit_rps`` raises the load balancer's per-client rate limit for load tests (one client, 50 rps).
    """
    data = yaml.safe_load((REPO / "deployments" / "local.yaml").read_text())
    data["project"] = project
    if rate_limit_rps is not None:
        data["ingress"]["rate_limit_rps"] = rate_limit_rps
    data["services"]["nginx"]["host_port"] = procs.free_port()
    for service, tag in service_tags.items():
        data["services"][service.replace("_", "-")]["image"]["tag"] = tag
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def container_ids(client, project: str) -> dict[str, str]:
    """Container name → (id, start time) of every container of ``project``."""
    out = {}
    for c in client.containers.list(all=True, filters={"label": f"helix-ops.project={project}"}):
        out[c.name] = (c.id, c.attrs["State"]["StartedAt"], c.status)
    return out


class LoadLoop:
    """``python -m testbed.load`` in another process, started and stopped around a block of work."""

    def __init__(self, url: str, workdir: Path, rps: float = 50, max_seconds: float = 600) -> None:
        import subprocess
        import sys

        self.stop_file = workdir / "load.stop"
        self.out = workdir / "load.json"
        self.stop_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "testbed.load", "--url", url, "--rps", str(rps),
                                      "--max-seconds", str(max_seconds), "--stop-file", str(self.stop_file),
                                      "--out", str(self.out)], cwd=REPO)

    def stop(self) -> dict:
        import json

        self.stop_file.touch()
        self.proc.wait(timeout=60)
        return json.loads(self.out.read_text())


class HealthSampler:
    """Samples, every ``interval_s``, whether each service has at least one healthy replica (HTTP probe)."""

    def __init__(self, client, project: str, services: dict[str, int], interval_s: float = 0.1) -> None:
        import threading

        self.client, self.project, self.services, self.interval_s = client, project, services, interval_s
        self.samples = 0
        self.gaps: dict[str, int] = {s: 0 for s in services}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _running(self):
        import docker.errors

        for _ in range(5):  # a container removed between listing and inspecting: list again
            try:
                return self.client.containers.list(filters={"label": f"helix-ops.project={self.project}"})
            except docker.errors.NotFound:
                continue
        raise RuntimeError("containers keep vanishing while listing")

    def _healthy(self, running, service: str, port: int) -> bool:
        import httpx

        for c in running:
            if c.labels.get("helix-ops.service") != service:
                continue
            bindings = (c.attrs["NetworkSettings"].get("Ports") or {}).get(f"{port}/tcp") or []
            try:
                # the same 3 s the deploy health gate allows (drivers.engine_health.http_check)
                if bindings and httpx.get(f"http://127.0.0.1:{bindings[0]['HostPort']}/api/health",
                                          timeout=3).status_code == 200:
                    return True
            except httpx.HTTPError:
                continue
        return False

    def _sample(self) -> None:
        running = self._running()
        for service, port in self.services.items():
            # The list is seconds old by the time the last service is probed on a loaded machine: a roll may
            # have started a new replica and stopped the listed old one since. A service counts as a gap only
            # if a fresh list has no healthy replica either.
            if not self._healthy(running, service, port) and not self._healthy(self._running(), service, port):
                self.gaps[service] += 1

    def _loop(self) -> None:
        import time

        while not self._stop.is_set():
            t0 = time.monotonic()
            self._sample()
            self.samples += 1
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - t0)))

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=10)
        return {"samples": self.samples, "gaps": self.gaps}
