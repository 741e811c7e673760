"""A mixed request load for the upgrade benchmark, run as its own process (so the flow under test does not share
its interpreter):

    python bench/mixed_load.py --url http://127.0.0.1:8080/ --keepalive-clients 1 --new-clients 1 --rps 10 \
        --stop-file F --out R.json

Two kinds of client, each sending GET requests one after another at ``--rps`` (to this machine only: loopback or
an address of one of its own interfaces, such as the test bed's Kubernetes node bridge):

* keep-alive: one ``httpx.Client`` per client, reused, so its requests share one persistent HTTP/1.1
  connection (a new one only when the server closed it; the number of connections opened is reported);
* new-connection: ``Connection: close`` on every request, so each request opens its own connection.

A request fails when it gets no answer (connect error, reset, timeout of 5 s) or a status other than 200.
A 429 (the load balancer's rate limit) is counted apart and is not a failure. No request is retried.
Writes per kind ``{sent, ok, failed, rate_limited, errors, connections, max_latency_s, failures_at,
error_samples}`` (failure times in seconds since the load started; the first five failures' messages, with their
cause's errno) and ``started_at`` (time.time()) to ``--out``.
"""

from __future__ import annotations

import argparse
import collections
import ipaddress
import json
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

KINDS = ("keepalive", "new")


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()
        self.errors: collections.Counter = collections.Counter()
        self.failures_at: list[float] = []
        self.error_samples: list[str] = []
        self.max_latency = 0.0

    def add(self, outcome: str, why: str | None, at: float, latency: float, connects: int,
            detail: str | None = None) -> None:
        with self.lock:
            self.counts["sent"] += 1
            self.counts[outcome] += 1
            self.counts["connections"] += connects
            self.max_latency = max(self.max_latency, latency)
            if outcome == "failed":
                self.errors[why] += 1
                if len(self.failures_at) < 200:
                    self.failures_at.append(round(at, 2))
                if detail and len(self.error_samples) < 5:  # the errno tells refused, reset and unreachable apart
                    self.error_samples.append(f"{round(at, 2)}s {detail}"[:300])

    def as_dict(self) -> dict:
        return {"sent": self.counts["sent"], "ok": self.counts["ok"], "failed": self.counts["failed"],
                "rate_limited": self.counts["rate_limited"], "errors": dict(self.errors),
                "connections": self.counts["connections"], "max_latency_s": round(self.max_latency, 3),
                "failures_at": self.failures_at, "error_samples": self.error_samples}


def client_loop(kind: str, url: str, rps: float, offset: float, start: float, stop: threading.Event,
                tally: Tally) -> None:
    if kind == "keepalive":
        client = httpx.Client(timeout=5, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1,
                                                             keepalive_expiry=60))
    else:
        client = httpx.Client(timeout=5, headers={"Connection": "close"},
                              limits=httpx.Limits(max_keepalive_connections=0))
    sent = 0
    try:
        while not stop.is_set():
            delay = start + offset + sent / rps - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            sent += 1
            connects = 0

            def trace(event: str, _info: dict) -> None:
                nonlocal connects
                if event == "connection.connect_tcp.complete":
                    connects += 1

            t0 = time.monotonic()
            detail = None
            try:
                r = client.get(url, extensions={"trace": trace})
                code = r.status_code
                outcome = "ok" if code == 200 else "rate_limited" if code == 429 else "failed"
                why = f"HTTP {code}"
            except httpx.HTTPError as exc:
                outcome, why = "failed", type(exc).__name__
                cause = exc.__cause__ or exc.__context__
                detail = f"{why}: {exc}" + (f" ({type(cause).__name__}: {cause})" if cause and str(cause) != str(exc) else "")
            tally.add(outcome, why, t0 - start, time.monotonic() - t0, connects, detail)
    finally:
        client.close()


def on_this_machine(host: str) -> bool:
    """Whether ``host`` is loopback or an address this machine holds (a socket can bind to it); no name lookup
    beyond ``localhost``."""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    with socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, 0))
        except OSError:
            return False
    return True


def run(url: str, keepalive_clients: int, new_clients: int, rps: float, max_seconds: float,
        stop_file: Path | None) -> dict:
    host = urlparse(url).hostname or ""
    if not on_this_machine(host):
        raise SystemExit(f"refusing to send load to {host!r}: only to this machine (loopback or an address of one "
                         "of its interfaces)")
    tallies = {k: Tally() for k in KINDS}
    stop = threading.Event()
    started_at, start = time.time(), time.monotonic()
    clients = [("keepalive", i) for i in range(keepalive_clients)] + [("new", i) for i in range(new_clients)]
    threads = []
    for n, (kind, _) in enumerate(clients):  # spread the clients' send times over one interval
        t = threading.Thread(target=client_loop, args=(kind, url, rps, n / (rps * len(clients)), start, stop,
                                                       tallies[kind]), daemon=True)
        t.start()
        threads.append(t)
    while time.monotonic() - start < max_seconds and not (stop_file and stop_file.exists()):
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    return {"started_at": started_at, "seconds": round(time.monotonic() - start, 2), "rps_per_client": rps,
            "clients": {"keepalive": keepalive_clients, "new": new_clients},
            **{k: tallies[k].as_dict() for k in KINDS}}


class MixedLoad:
    """This file in another process, started and stopped around a block of work."""

    def __init__(self, url: str, workdir: Path, keepalive_clients: int = 1, new_clients: int = 1,
                 rps: float = 10, max_seconds: float = 900) -> None:
        import subprocess
        import sys

        self.stop_file = workdir / "mixed-load.stop"
        self.out = workdir / "mixed-load.json"
        self.stop_file.unlink(missing_ok=True)
        self.out.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, __file__, "--url", url, "--rps", str(rps),
                                      "--keepalive-clients", str(keepalive_clients),
                                      "--new-clients", str(new_clients), "--max-seconds", str(max_seconds),
                                      "--stop-file", str(self.stop_file), "--out", str(self.out)])

    def stop(self) -> dict:
        self.stop_file.touch()
        code = self.proc.wait(timeout=60)
        if code != 0 or not self.out.exists():
            raise RuntimeError(f"the load process ended with exit code {code} and wrote no figures (its output is "
                               "above); nothing was measured")
        return json.loads(self.out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description="keep-alive and new-connection GET loops against a loopback URL")
    p.add_argument("--url", required=True)
    p.add_argument("--keepalive-clients", type=int, default=1)
    p.add_argument("--new-clients", type=int, default=1)
    p.add_argument("--rps", type=float, default=10, help="requests per second of each client")
    p.add_argument("--max-seconds", type=float, default=900)
    p.add_argument("--stop-file", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    a.out.write_text(json.dumps(run(a.url, a.keepalive_clients, a.new_clients, a.rps, a.max_seconds, a.stop_file)))


if __name__ == "__main__":
    main()
