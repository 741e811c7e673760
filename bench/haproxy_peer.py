"""The start-first peer of the upgrade benchmark: HAProxy (Debian's haproxy 2.6) in front of the same probe
containers, rolled through HAProxy's runtime API the way kamal-proxy and docker-rollout roll a service.

Per replica, one at a time, service after service (the order upgrade-helix rolls them in):

1. start the new container (the same container plan upgrade-helix would create: image, environment, network,
   published probe port);
2. ``add server <backend>/<new> 127.0.0.1:<port> check`` (a new server starts in maintenance, so it takes no
   traffic yet) and ``enable health``; wait until HAProxy's own health check of it passes (``GET /api/health``
   every 500 ms, the interval upgrade-helix's health gate polls at);
3. ``set server <new> state ready``: it takes traffic;
4. ``set server <old> state drain``: no new requests go to the old one; wait until it has no session;
5. ``set server <old> state maint`` and ``del server <old>``;
6. stop and remove the old container (SIGTERM, like upgrade-helix).

HAProxy runs on this machine and reaches each container through its published loopback port. Its frontend
(loopback) sends every request to the dashboard backend; each MCP service has its own backend, rolled the same
way, like the load balancer of upgrade-helix which fronts the dashboard only.
"""

from __future__ import annotations

import csv
import io
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

HEALTH_PATH = "/api/health"
SERVER_OPTS = "check inter 500 rise 1 fall 2"


def haproxy_binary() -> str:
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if path is None:
        raise SystemExit("haproxy is not installed: apt-get install -y haproxy (it is in the Makefile's "
                         "APT_PACKAGES; `make apt`)")
    return path


def render_config(socket_path: Path, frontend_port: int, front_backend: str,
                  backends: Mapping[str, list[tuple[str, int]]]) -> str:
    """haproxy.cfg: a loopback frontend to ``front_backend``; one backend per service, servers by name → port.

    Like the Helix load balancer (nginx's ``proxy_next_upstream error timeout http_502 http_503``), a request
    that could not be sent, or got a 502/503, is retried once more on another server (idempotent GETs only)."""
    lines = [
        "global",
        f"    stats socket {socket_path} mode 600 level admin",
        "    maxconn 2000",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout http-keep-alive 30s",
        "    retries 2",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response 502 503",
        "frontend helix",
        f"    bind 127.0.0.1:{frontend_port}",
        f"    default_backend {front_backend}",
    ]
    for backend, servers in backends.items():
        lines += [f"backend {backend}", "    balance roundrobin", f"    option httpchk GET {HEALTH_PATH}",
                  "    http-check expect status 200"]
        lines += [f"    server {name} 127.0.0.1:{port} {SERVER_OPTS}" for name, port in servers]
    return "\n".join(lines) + "\n"


class HAProxy:
    """One haproxy process (foreground, ``-db``) and its runtime API."""

    def __init__(self, workdir: Path, frontend_port: int, front_backend: str,
                 backends: Mapping[str, list[tuple[str, int]]]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket_path = workdir / "haproxy.sock"
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(render_config(self.socket_path, frontend_port, front_backend, backends))
        self.log = (workdir / "haproxy.log").open("w")
        self.proc = subprocess.Popen([haproxy_binary(), "-f", str(self.config), "-db"], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {(workdir / 'haproxy.log').read_text()[-500:]}")
            try:
                self.cmd("show info")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def cmd(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace").strip()

    def ok(self, line: str, *expect: str) -> str:
        """Run a command whose answer must contain one of ``expect`` (or be empty when none is given)."""
        out = self.cmd(line)
        if (expect and not any(e in out for e in expect)) or (not expect and out):
            raise RuntimeError(f"haproxy: {line!r} answered {out!r}")
        return out

    def servers(self, backend: str) -> dict[str, dict[str, str]]:
        """``show servers state``: server name → its fields (srv_op_state 2 = running; srv_check_result 3 =
        passed)."""
        rows = [r for r in self.cmd(f"show servers state {backend}").splitlines() if r.strip()]
        header = rows[1].lstrip("# ").split()
        out = {}
        for row in rows[2:]:
            fields = dict(zip(header, row.split()))
            out[fields["srv_name"]] = fields
        return out

    def sessions(self, backend: str, server: str) -> int:
        """Current sessions plus queued requests of one server (``show stat``)."""
        text = self.cmd("show stat").lstrip("# ")
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("pxname") == backend and row.get("svname") == server:
                return int(row["scur"] or 0) + int(row["qcur"] or 0)
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def add_and_wait_healthy(hap: HAProxy, backend: str, name: str, port: int, deadline_s: float) -> float:
    """Add ``name`` (in maintenance), enable its health check, wait for a passing check, make it ready.
    Returns the seconds the health check took to pass."""
    t0 = time.monotonic()
    hap.ok(f"add server {backend}/{name} 127.0.0.1:{port} {SERVER_OPTS}", "New server registered")
    hap.ok(f"enable health {backend}/{name}")
    while True:
        state = hap.servers(backend).get(name, {})
        if state.get("srv_check_result") == "3":  # CHK_RES_PASSED
            break
        if time.monotonic() - t0 > deadline_s:
            raise RuntimeError(f"{backend}/{name} never passed its health check: {state}")
        time.sleep(0.05)
    healthy_after = time.monotonic() - t0
    hap.ok(f"set server {backend}/{name} state ready")
    if hap.servers(backend)[name]["srv_op_state"] != "2":
        raise RuntimeError(f"{backend}/{name} is not up after `state ready`")
    return healthy_after


def drain_and_delete(hap: HAProxy, backend: str, name: str, idle_deadline_s: float = 30) -> float:
    """Drain ``name`` until it has no session, then put it in maintenance and delete it; the drain's seconds."""
    t0 = time.monotonic()
    hap.ok(f"set server {backend}/{name} state drain")
    while hap.sessions(backend, name) > 0 and time.monotonic() - t0 < idle_deadline_s:
        time.sleep(0.05)
    drained = time.monotonic() - t0
    hap.ok(f"set server {backend}/{name} state maint")
    for _ in range(100):  # idle server-side connections still attached: they close on their own
        out = hap.cmd(f"del server {backend}/{name}")
        if "Server deleted" in out:
            return drained
        hap.cmd(f"shutdown sessions server {backend}/{name}")
        time.sleep(0.05)
    raise RuntimeError(f"haproxy refused to delete {backend}/{name}: {out}")


def peer_roll(hap: HAProxy, driver, services: list[str], plans_for: Callable[[str], list],
              probe_port: Mapping[str, int], secrets: Mapping[str, str], deadline_s: float = 120,
              log: Callable[[str], None] = lambda m: None) -> list[dict]:
    """Roll ``services`` (in order) to the container plans ``plans_for(service)`` gives, start-first through
    HAProxy (see the module doc). Returns per replica what it took."""
    steps = []
    for service in services:
        old = sorted((c for c in driver.containers(service) if c.status == "running"), key=lambda c: c.name)
        for plan in plans_for(service):
            t0 = time.monotonic()
            container = driver.create_container(plan, secrets)
            _, port = driver.probe_address(container, probe_port[service])
            started = time.monotonic() - t0
            healthy = add_and_wait_healthy(hap, service, plan.name, port, deadline_s)
            drained = 0.0
            if old:
                victim = old.pop(0)
                drained = drain_and_delete(hap, service, victim.name)
                driver.remove([victim])
            steps.append({"service": service, "replica": plan.name, "start_s": round(started, 2),
                          "health_s": round(healthy, 2), "drain_s": round(drained, 2),
                          "total_s": round(time.monotonic() - t0, 2)})
            log(f"peer: {service}: {plan.name} in {steps[-1]['total_s']}s")
        for victim in old:  # fewer replicas than before
            drain_and_delete(hap, service, victim.name)
            driver.remove([victim])
    return steps
