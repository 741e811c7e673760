"""Test-only stand-ins for what the check tier cannot start: :class:`FakeTarget`, an in-memory
:class:`drivers.target.Target` (no engine, no cluster). It keeps the interface's contract as the real targets do
(``tests/core/test_fake_target.py`` checks both the signatures and the behaviour), so unit tests of code that
only talks to a ``Target`` can run without a server."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from drivers.target import OFFLINE_NEO4J_TOOLS
from helix_ops.errors import DriverError, WaitTimeout
from helix_ops.plan import CurrentObject, CurrentState


@dataclass
class FakeTarget:
    """An environment in memory: service → names of its running replicas, plus what each call did (``calls``).

    ``unreachable`` makes every call fail as an unreachable engine does; ``never_healthy`` names services whose
    resume times out; ``ports`` maps (service, port) to where :meth:`endpoint` says it is reached."""

    project: str = "helix"
    environment: str = "test"
    replicas: dict[str, list[str]] = field(default_factory=dict)
    ports: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    unreachable: bool = False
    never_healthy: frozenset[str] = frozenset()
    calls: list[tuple[str, str]] = field(default_factory=list)
    kind: ClassVar[str] = "fake"
    capabilities: ClassVar[frozenset[str]] = frozenset({OFFLINE_NEO4J_TOOLS})

    def _call(self, what: str, service: str = "") -> None:
        self.calls.append((what, service))
        if self.unreachable:
            raise DriverError(f"fake target {self.project}: unreachable")

    def where(self) -> str:
        return f"in memory ({self.project}/{self.environment})"

    def connect(self) -> dict[str, str]:
        self._call("connect")
        return {"version": "fake-1"}

    def live_state(self) -> CurrentState:
        self._call("live_state")
        return CurrentState(tuple(CurrentObject(f"service/{s}", None, {"replicas": len(r)})
                                  for s, r in sorted(self.replicas.items()) if r))

    @contextmanager
    def endpoint(self, service: str, port: int) -> Iterator[tuple[str, int]]:
        self._call("endpoint", service)
        if not self.replicas.get(service):
            raise DriverError(f"{service} has no running replica to reach port {port} on")
        yield self.ports.get((service, port), ("127.0.0.1", port))

    def running(self, service: str) -> list[str]:
        self._call("running", service)
        return sorted(self.replicas.get(service, []))

    def pause_record(self, service: str) -> dict[str, Any]:
        self._call("pause_record", service)
        return {"replicas": sorted(self.replicas.get(service, [])), "count": len(self.replicas.get(service, []))}

    def pause(self, service: str) -> dict[str, Any]:
        record = self.pause_record(service)
        self._call("pause", service)
        self.replicas[service] = []
        return record

    def resume(self, service: str, record: Mapping[str, Any], descriptor: Any, deadline_s: float = 180) -> list[str]:
        self._call("resume", service)
        if service in self.never_healthy:
            raise WaitTimeout(f"{service} to answer its health probe", "starting")
        running = set(self.replicas.get(service, []))
        back = [n for n in record.get("replicas", []) if n not in running]
        self.replicas[service] = sorted(running | set(back))
        return [f"{n}: started, healthy" for n in back]
