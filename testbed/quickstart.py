"""The local quickstart: Helix deployed on this machine through Prefect, the way an operator would.

Brings up the test bed's container engine, images and a Prefect server (in the background), creates the
``local`` environment's credential blocks, registers the ``local`` deployments of ``prefect.yaml`` (never
staging's or prod's schedules) on a process work pool, starts a worker on the pool's ``local`` work queue, and
runs ``prefect deployment run deploy-helix/local``. Everything stays up until ``make down``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

from helix_ops.schedules import deployments_of
from testbed import procs
from testbed.bed import Bed
from testbed.paths import REPO


ENV = "local"


def main() -> int:
    bin_dir = Path(sys.executable).parent
    descriptor = yaml.safe_load((REPO / "deployments" / "local.yaml").read_text())
    host_port = descriptor["services"]["nginx"]["host_port"]
    if procs.port_open(host_port):
        print(f"quickstart: port {host_port} is taken (services.nginx.host_port in deployments/local.yaml): "
              "free it or run `make down` first", file=sys.stderr)
        return 2
    say = lambda m: print(f"[quickstart] {m}", flush=True)  # noqa: E731
    bed = Bed.create(owner_pid=1, log=say)  # lives on after this command; `make down` ends it
    try:
        engine, prefect = bed.engine(), bed.prefect()
        bed.images()
        bed.write_state()
        env = {**prefect.env(), "DOCKER_HOST": engine.base_url, "HELIX_OPS_HOME": str(REPO),
               "PREFECT_WORKER_QUERY_SECONDS": "2"}
        names = [a for name in deployments_of(yaml.safe_load((REPO / "prefect.yaml").read_text()), ENV)
                 for a in ("--name", name)]
        steps = [
            ("credential blocks", [str(bin_dir / "python"), "-m", "blocks.bootstrap", "--env", ENV]),
            ("work pool", [str(bin_dir / "prefect"), "work-pool", "create", "helix-ops", "--type", "process",
                           "--overwrite"]),
            (f"{len(names) // 2} deployments of {ENV}", [str(bin_dir / "prefect"), "--no-prompt", "deploy", *names]),
        ]
        for what, argv in steps:
            say(f"{what}: {' '.join(argv[-4:])}")
            procs.run(argv, env=env, cwd=REPO, timeout_s=600)
        procs.start("worker", [str(bin_dir / "prefect"), "worker", "start", "--pool", "helix-ops", "--work-queue",
                               ENV], bed.run_dir, env=env)
        params = json.dumps({"container_labels": bed.container_labels()})
        say("prefect deployment run deploy-helix/local --watch")
        t0 = time.monotonic()
        out = procs.run([str(bin_dir / "prefect"), "deployment", "run", "deploy-helix/local", "--params", params,
                         "--watch", "--watch-timeout", "1200"], env=env, cwd=REPO, timeout_s=1300, check=False)
        print(out.stdout[-2000:])
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            say(f"deploy failed; logs: {bed.run_dir}/worker.log; `make down` cleans up")
            return 1
        say(f"Helix is up in {time.monotonic() - t0:.0f}s: dashboard (load balancer) on http://127.0.0.1:{host_port}/")
        say(f"Prefect API: {prefect.api_url}  (export PREFECT_API_URL={prefect.api_url})")
        say("stop everything with `make down`")
        return 0
    except Exception:
        say("quickstart failed; `make down` cleans up")
        raise


if __name__ == "__main__":
    sys.exit(main())
