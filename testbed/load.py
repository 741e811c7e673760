"""A bounded request loop for rollout tests and benchmarks, run as its own process:

    python -m testbed.load --url http://127.0.0.1:8080/ --rps 50 --max-seconds 300 --stop-file F --out R.json

Sends GET requests at a fixed rate (to loopback only) until the stop file appears or ``--max-seconds``
pass, then writes ``{"sent", "ok", "failed", "errors", "seconds"}`` to ``--out``. A request fails when it
gets no answer or a status other than 200. Each request opens its own connection.
"""

from __future__ import annotations

import argparse
import collections
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import httpx


def run(url: str, rps: float, max_seconds: float, stop_file: Path | None) -> dict:
    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to send load to {host}: loopback only")
    counts = collections.Counter()
    errors: collections.Counter = collections.Counter()
    lock = threading.Lock()
    # A new connection per request: with keep-alive, nginx's graceful reload closes idle client connections,
    # and a request sent on one at that instant gets no answer; browsers retry those transparently, httpx
    # does not, so reusing connections would measure the client, not the rollout.
    client = httpx.Client(timeout=5, headers={"Connection": "close"}, limits=httpx.Limits(max_keepalive_connections=0))

    def one() -> None:
        try:
            r = client.get(url)
            ok, why = r.status_code == 200, f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            ok, why = False, type(exc).__name__
        with lock:
            counts["ok" if ok else "failed"] += 1
            if not ok:
                errors[why] += 1

    start = time.monotonic()
    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        while time.monotonic() - start < max_seconds and not (stop_file and stop_file.exists()):
            due = start + sent / rps
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one)
            sent += 1
    client.close()
    return {"sent": sent, "ok": counts["ok"], "failed": counts["failed"], "errors": dict(errors),
            "seconds": round(time.monotonic() - start, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description="bounded GET loop against a loopback URL")
    p.add_argument("--url", required=True)
    p.add_argument("--rps", type=float, default=50)
    p.add_argument("--max-seconds", type=float, default=300)
    p.add_argument("--stop-file", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    a.out.write_text(json.dumps(run(a.url, a.rps, a.max_seconds, a.stop_file)))


if __name__ == "__main__":
    main()
