"""Health of a container, probed from outside it: the checks (HTTP, a Bolt login, Redis AUTH + PING, each a
callable that raises while unhealthy and returns a short status when healthy) and
:func:`wait_container_healthy`, which polls one until it passes or the deadline, fails early when the container
exits, and restarts a container once whose published port refused every connection for too long.

Used by :class:`drivers.engine.EngineDriver` (the deploy health gate), the scratch containers of a backup
verification and the tasks over them."""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable

import httpx
from docker.models.containers import Container

from helix_ops.errors import WaitTimeout
from helix_ops.wait import Deadline

REFUSED_RESTART_S = 45.0
"""How long a running container's published port may refuse every connection before it is restarted once.

Seen on the test bed (Podman 4.3, netavark, several containers started at once): a container that runs and
listens, whose loopback port refused connections for the whole 180 s deadline, while its neighbours were
fine. The engine had lost the port's forwarding rule (a refused connection on a published port means the
engine's reservation socket answered, not the process). A restart sets the forwarding up again."""


def _refused(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def wait_container_healthy(container: Container, check: Callable[[], str], what: str, deadline_s: float,
                           interval_s: float = 0.5, *, recheck: Callable[[], Callable[[], str]] | None = None,
                           refused_restart_s: float | None = None) -> str:
    """Call ``check`` (returns a short status, raises while unhealthy) until it passes or the deadline; fails
    early when ``container`` exits (the error carries its log tail).

    With ``recheck``: when every try for ``refused_restart_s`` was a refused connection while the container
    runs, the container is restarted once and ``check = recheck()`` (its published port may change); the
    deadline stays the same. ``refused_restart_s`` defaults to half the deadline (at least
    ``REFUSED_RESTART_S``), so a slow starter (a JVM opens its port last) is not restarted on its way up.
    Without ``recheck``, nothing is restarted."""
    if refused_restart_s is None:
        refused_restart_s = max(REFUSED_RESTART_S, deadline_s / 2)
    note = ""
    refused_since: float | None = None
    for poll in Deadline(deadline_s).polls(what, interval_s, seen="no answer yet"):
        container.reload()
        if container.status in ("exited", "dead"):
            logs = container.logs(tail=15).decode(errors="replace")
            raise WaitTimeout(what, f"container {container.name} {container.status}; log tail: {logs}")
        try:
            return check()
        except Exception as exc:  # noqa: BLE001 - unhealthy until it passes
            last = str(exc) or type(exc).__name__
            now = time.monotonic()
            if not _refused(exc):
                refused_since = None
            elif refused_since is None:
                refused_since = now
            elif recheck is not None and now - refused_since >= refused_restart_s:
                logging.getLogger(__name__).warning(
                    "%s: its port refused every connection for %.0fs while it runs; restarting it once",
                    container.name, now - refused_since)
                container.restart(timeout=5)
                check, recheck, refused_since = recheck(), None, None
                note = f" (restarted once after {refused_restart_s:.0f}s of refused connections)"
            poll.seen = last + note
    raise AssertionError("unreachable: a Poll ends by raising WaitTimeout")  # pragma: no cover


# --- health checks (raise while unhealthy, return a short status when healthy) ------------------------------


def http_check(host: str, port: int, path: str) -> Callable[[], str]:
    def check() -> str:
        r = httpx.get(f"http://{host}:{port}{path}", timeout=3)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
        return f"HTTP 200 {path}"
    return check


def bolt_check(host: str, port: int, user: str, password: str) -> Callable[[], str]:
    def check() -> str:
        import neo4j

        with neo4j.GraphDatabase.driver(f"bolt://{host}:{port}", auth=(user, password),
                                        connection_timeout=3, max_transaction_retry_time=0) as drv:
            drv.verify_connectivity()
        return "bolt login ok"
    return check


def redis_check(host: str, port: int, password: str) -> Callable[[], str]:
    def check() -> str:
        import redis

        with redis.Redis(host=host, port=port, password=password, socket_timeout=3,
                         socket_connect_timeout=3) as r:
            r.ping()
        return "redis AUTH + PING ok"
    return check
