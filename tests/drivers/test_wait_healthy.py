"""``drivers.engine_health.wait_container_healthy``: a running container whose port refuses every connection for the
restart threshold is restarted once (the engine lost its port forwarding; seen on the test bed), and only then.
Fakes stand in for the container: what is tested is the waiting logic, not the engine."""

from __future__ import annotations

import pytest

from drivers.engine_health import wait_container_healthy
from helix_ops.errors import WaitTimeout


PROC_NET_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000  7474        0 1 1
   1: 0100007F:A5C2 0100007F:1E61 01 00000000:00000000 00:00000000 00000000     0        0 2 1
"""


class FakeContainer:
    """A running container publishing 7687; ``listens`` says whether its process has opened it
    (None: ``cat`` is not in the image)."""

    name = "p-mcp-graph-1"

    def __init__(self, listens: bool | None = True) -> None:
        self.status = "running"
        self.restarts = 0
        self.listens = listens
        self.attrs = {"NetworkSettings": {"Ports": {"7687/tcp": [{"HostPort": "40001"}]}}}

    def reload(self) -> None:
        pass

    def restart(self, timeout: int = 10) -> None:
        self.restarts += 1

    def exec_run(self, argv):
        if self.listens is None:
            raise RuntimeError("executable file `cat` not found")
        return 0, PROC_NET_TCP.format(port=7687 if self.listens else 7474).encode()

    def logs(self, tail: int = 10) -> bytes:
        return b"Starting...\nRemote interface available at http://localhost:7474/\n"


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


@pytest.mark.parametrize("listens", [True, None], ids=["listens inside", "cannot tell"])
def test_a_port_that_listens_inside_or_cannot_be_told_is_restarted(listens):
    c = FakeContainer(listens)
    wait_container_healthy(c, refused, "x to be healthy", deadline_s=5, interval_s=0.01,
                           recheck=lambda: (lambda: "ok"), refused_restart_s=0.1)
    assert c.restarts == 1


def test_a_slow_starter_whose_port_is_not_open_inside_yet_is_not_restarted():
    """Neo4j under load: its JVM has not opened Bolt yet, so the refusals are not the engine's lost forwarding;
    a restart would only start it over (what failed CI runs). The timeout says why and shows its log tail."""
    c = FakeContainer(listens=False)
    with pytest.raises(WaitTimeout) as err:
        wait_container_healthy(c, refused, "neo4j to be healthy", deadline_s=0.6, interval_s=0.01,
                               recheck=lambda: refused, refused_restart_s=0.1)
    assert c.restarts == 0
    assert "not open inside the container yet" in str(err.value)
    assert "log tail of p-mcp-graph-1: Starting... | Remote interface available" in str(err.value)


def test_listening_inside_reads_a_real_container(engine, images):
    """On the bed's engine: a Redis whose server starts 3 s late publishes its port at once, but is listening
    inside only once the server runs (what tells a slow start from a lost port forwarding)."""
    import time

    import docker

    from drivers.engine_health import listening_inside

    client = docker.DockerClient(base_url=engine.base_url)
    c = client.containers.run("localhost/helix-redis:7", detach=True, ports={"6379/tcp": ("127.0.0.1", None)},
                              entrypoint=["sh", "-c", "sleep 3; exec redis-server --port 6379"])
    try:
        c.reload()
        assert listening_inside(c) is False
        end = time.monotonic() + 60
        while not listening_inside(c):
            assert time.monotonic() < end, "redis never listened"
            time.sleep(0.5)
            c.reload()
    finally:
        c.remove(force=True)
