"""The container-engine :class:`drivers.target.Target`: one project's containers on a Docker Engine API
(Docker or Podman)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from drivers.engine import EngineDriver
from drivers.engine_health import http_check
from drivers.target import OFFLINE_NEO4J_TOOLS
from helix_ops.errors import DriverError

if TYPE_CHECKING:
    from helix_ops.descriptor import Descriptor
    from helix_ops.plan import CurrentState


@dataclass(frozen=True)
class EngineTarget:
    """Where and as whom to act: engine address, project, environment, extra container labels."""

    base_url: str | None
    project: str
    environment: str
    extra_labels: Mapping[str, str] = field(default_factory=dict)

    kind: ClassVar[str] = "engine"
    capabilities: ClassVar[frozenset[str]] = frozenset({OFFLINE_NEO4J_TOOLS})

    def driver(self) -> EngineDriver:
        return EngineDriver.connect(self.base_url, self.project, self.environment, self.extra_labels)

    def where(self) -> str:
        return f"engine {self.base_url or 'DOCKER_HOST'}, project {self.project}"

    def connect(self) -> dict[str, str]:
        return self.driver().version()

    def live_state(self) -> CurrentState:
        return self.driver().current_state()

    def running(self, service: str) -> list[str]:
        return sorted(c.name for c in self.driver().containers(service) if c.status == "running")

    @contextmanager
    def endpoint(self, service: str, port: int) -> Iterator[tuple[str, int]]:
        """The published probe port of the first running replica of ``service``."""
        driver = self.driver()
        running = sorted((c for c in driver.containers(service) if c.status == "running"), key=lambda c: c.name)
        if not running:
            raise DriverError(f"no running {service} container in project {self.project} ({self.where()})",
                              hint=f"deploy the environment first: prefect deployment run "
                                   f"deploy-helix/{self.environment}")
        yield driver.probe_address(running[0], port)

    def pause_record(self, service: str) -> dict[str, Any]:
        """What :meth:`pause` would stop now: the running containers' names."""
        return {"replicas": self.running(service)}

    def pause(self, service: str) -> dict[str, Any]:
        """Stop every running replica of ``service`` (the containers are kept); the record names them."""
        return {"replicas": self.driver().stop_service(service)}

    def resume(self, service: str, record: Mapping[str, Any], descriptor: Descriptor,
               deadline_s: float = 180) -> list[str]:
        """Start the recorded containers that still exist and are stopped; wait until each answers its probe."""
        from helix_ops.stack import build_stack

        wanted = set(record.get("replicas") or record.get("containers") or [])
        driver = self.driver()
        present = {c.name: c for c in driver.containers(service)}
        to_start = sorted(n for n in wanted if n in present and present[n].status != "running")
        if not to_start:
            return []
        driver.start_containers(to_start)
        probe = build_stack(descriptor).service(service).probe
        lines = []
        for c in driver.containers(service):
            if c.name not in to_start:
                continue
            if probe.kind != "http":
                lines.append(f"{c.name}: running")
                continue
            host, port = driver.probe_address(c, probe.port)
            lines.append(f"{c.name}: " + driver.wait_healthy(c, http_check(host, port, probe.path or "/"),
                                                             f"{c.name} healthy again", deadline_s))
        return lines
