"""Benchmark deploy-helix on the test bed: time from trigger to all-healthy for the full local stack, and the
time of a no-op redeploy, next to Prefect's own cost of running an empty flow on the same API.

    .venv/bin/python bench/deploy_bench.py [--runs 3]

Brings up its own engine, images and Prefect server, deploys a private copy of deployments/local.yaml, and
removes everything at the end. Prints one table; the README quotes it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.bed import Bed  # noqa: E402
from testbed.helix import local_descriptor  # noqa: E402
from testbed.prefect_server import QUIET  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="no-op redeploys to time (default 3)")
    args = parser.parse_args()
    bed = Bed.create(log=lambda m: print(f"[bed] {m}", file=sys.stderr))
    try:
        engine, server = bed.engine(), bed.prefect()
        bed.images()
        os.environ.update({**QUIET, **server.env()})
        from prefect import flow

        from blocks.bootstrap import main as bootstrap
        from flows.deploy import deploy_helix

        @flow(name="empty")
        def empty() -> int:
            return 1

        path = local_descriptor(Path(tempfile.mkdtemp()) / "local.yaml", f"bench{bed.run_id.split('-')[-1]}")
        assert bootstrap(["--descriptor", str(path)]) == 0
        kwargs = dict(env="local", descriptor=str(path), engine_url=engine.base_url,
                      container_labels=bed.container_labels())
        empty_times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            empty()
            empty_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        first = deploy_helix(**kwargs)
        fresh = time.perf_counter() - t0
        assert first["unhealthy"] == [], first["unhealthy"]
        noop_times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            again = deploy_helix(**kwargs)
            noop_times.append(time.perf_counter() - t0)
            assert again["changed"] == []
        med_empty, med_noop = statistics.median(empty_times), statistics.median(noop_times)
        print()
        print("| measure (local stack: 9 services, 10 containers) | seconds |")
        print("|---|---|")
        print(f"| fresh deploy, trigger to all healthy (incl. init-helix-db) | {fresh:.1f} |")
        print(f"| no-op redeploy, median of {args.runs} | {med_noop:.1f} |")
        print(f"| Prefect's own cost: an empty flow on the same API, median of {args.runs} | {med_empty:.1f} |")
        print(f"| no-op redeploy beyond Prefect's own cost (goal ≤ 2.5, issue 23) | {med_noop - med_empty:.1f} |")
        return 0
    finally:
        bed.down()


if __name__ == "__main__":
    sys.exit(main())
