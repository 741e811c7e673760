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


def listening_inside(container: Container) -> bool | None:
    """Whether every TCP port ``container`` publishes has a listening socket inside the container (read from
    its ``/proc/net/tcp*``); None when that cannot be told (no published port, no ``cat`` in the image, an
    engine error). A refused published port whose process does listen is the engine's lost forwarding; one
    whose process does not listen yet is a slow start."""
    ports = {int(k.split("/")[0]) for k, v in (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).items()
             if v and k.endswith("/tcp")}
    if not ports:
        return None
    try:
        _rc, out = container.exec_run(["cat", "/proc/net/tcp", "/proc/net/tcp6"])
    except Exception:  # noqa: BLE001 - an engine or image that cannot tell
        return None
    text = (out or b"").decode(errors="replace")
    if "local_address" not in text:  # not the kernel's table: cannot tell
        return None
    listening = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[0].endswith(":") and parts[3] == "0A":  # 0A: TCP_LISTEN
            listening.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports <= listening


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
    try:
        for poll in Deadline(deadline_s).polls(what, interval_s, seen="no answer yet"):
            container.reload()
            if container.status in ("exited", "dead"):
                raise WaitTimeout(what, f"container {container.name} {container.status}; log tail: "
                                        f"{_log_tail(container, 15)}")
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
                    if listening_inside(container) is False:  # still starting (a JVM opens its ports last)
                        refused_since, note = now, " (its ports are not open inside the container yet)"
                    else:
                        logging.getLogger(__name__).warning(
                            "%s: its port refused every connection for %.0fs while it runs and listens inside; "
                            "restarting it once", container.name, now - refused_since)
                        container.restart(timeout=5)
                        check, recheck, refused_since = recheck(), None, None
                        note = f" (restarted once after {refused_restart_s:.0f}s of refused connections)"
                poll.seen = last + note
    except WaitTimeout as exc:
        if "log tail" in str(exc.last_seen):
            raise
        raise WaitTimeout(what, f"{exc.last_seen}; log tail of {container.name}: {_log_tail(container, 8)}") \
            from None
    raise AssertionError("unreachable: a Poll ends by raising WaitTimeout")  # pragma: no cover


def _log_tail(container: Container, lines: int) -> str:
    try:
        return " | ".join(container.logs(tail=lines).decode(errors="replace").strip().splitlines())
    except Exception as exc:  # noqa: BLE001 - the timeout is the error; its log tail only helps
        return f"(no logs: {type(exc).__name__})"


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
