"""``drivers.engine_health.wait_container_healthy``: a running container whose port refuses every connection for the
restart threshold is restarted once (the engine lost its port forwarding; seen on the test bed), and only then.
Fakes stand in for the container: what is tested is the waiting logic, not the engine."""

from __future__ import annotations

import pytest

from drivers.engine_health import wait_container_healthy
from helix_ops.errors import WaitTimeout


class FakeContainer:
    name = "p-mcp-graph-1"

    def __init__(self) -> None:
        self.status = "running"
        self.restarts = 0

    def reload(self) -> None:
        pass

    def restart(self, timeout: int = 10) -> None:
        self.restarts += 1


def refused() -> str:
    raise ConnectionRefusedError(111, "Connection refused")


def test_refused_for_the_threshold_restarts_once_and_rechecks():
    c = FakeContainer()
    rechecks = []

    def recheck():
        rechecks.append(c.restarts)
        return lambda: "HTTP 200 /health"

    status = wait_container_healthy(c, refused, "mcp-graph to be healthy", deadline_s=5, interval_s=0.01,
                                    recheck=recheck, refused_restart_s=0.2)
    assert status == "HTTP 200 /health"
    assert c.restarts == 1 and rechecks == [1]  # the new check was made after the restart


def test_restarted_once_only_then_the_deadline():
    c = FakeContainer()
    with pytest.raises(WaitTimeout, match=r"Connection refused.*\(restarted once after 0s of refused connections\)"):
        wait_container_healthy(c, refused, "mcp-graph to be healthy", deadline_s=0.6, interval_s=0.01,
                               recheck=lambda: refused, refused_restart_s=0.1)
    assert c.restarts == 1


@pytest.mark.parametrize("recheck, error", [
    (None, ConnectionRefusedError(111, "Connection refused")),  # no recheck: never restarted
    (lambda: refused, RuntimeError("HTTP 503: starting")),  # answering, just unhealthy: not a lost port
    (lambda: refused, TimeoutError("timed out")),
])
def test_no_restart_without_recheck_or_for_other_failures(recheck, error):
    c = FakeContainer()

    def check() -> str:
        raise error

    with pytest.raises(WaitTimeout):
        wait_container_healthy(c, check, "x to be healthy", deadline_s=0.4, interval_s=0.01, recheck=recheck,
                               refused_restart_s=0.05)
    assert c.restarts == 0


def test_the_default_threshold_leaves_slow_starters_alone():
    """A JVM opens its port last: with the default threshold (half the deadline) a refused port for less than
    that is waited for, not restarted."""
    c = FakeContainer()
    calls = []

    def slow() -> str:
        calls.append(1)
        if len(calls) < 30:
            raise ConnectionRefusedError(111, "Connection refused")
        return "bolt ok"

    assert wait_container_healthy(c, slow, "neo4j", deadline_s=2, interval_s=0.02, recheck=lambda: slow) == "bolt ok"
    assert c.restarts == 0
