"""The local quickstart: Helix deployed on this machine through Prefect, the way an operator would.

Starts a Prefect server with its UI on http://127.0.0.1:4200 (``HELIX_UI_PORT`` to change the port) first, so
the UI answers while the rest comes up, then the test bed's container engine and images (in the background), creates the
``local`` environment's credential blocks, registers the ``local`` deployments of ``prefect.yaml`` (never
staging's or prod's schedules) on a process work pool, starts a worker on the pool's ``local`` work queue, and
runs ``prefect deployment run deploy-helix/local``. Everything stays up until ``make down``, which removes the
``local`` environment's project whole (recorded in the run's folder, ``testbed.bed.PROJECTS_FILE``), whoever
started its containers.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import yaml

from helix_ops.schedules import deployments_of
from testbed import procs
from testbed.bed import Bed
from testbed.paths import REPO
from testbed.prefect_server import PrefectServer

ENV = "local"
UI_PORT_ENV = "HELIX_UI_PORT"
DEFAULT_UI_PORT = 4200


def ui_port() -> int:
    """The Prefect UI's port: ``$HELIX_UI_PORT`` or 4200 (Prefect's usual one)."""
    raw = os.environ.get(UI_PORT_ENV, "").strip() or str(DEFAULT_UI_PORT)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SystemExit(f"quickstart: {UI_PORT_ENV}={raw!r} is not a TCP port (1-65535)")
    return int(raw)


def main() -> int:
    t_start = time.monotonic()
    bin_dir = Path(sys.executable).parent
    descriptor = yaml.safe_load((REPO / "deployments" / "local.yaml").read_text())
    host_port = descriptor["services"]["nginx"]["host_port"]
    port = ui_port()
    taken = [(p, why) for p, why in ((port, f"the Prefect UI's port ({UI_PORT_ENV}, default {DEFAULT_UI_PORT})"),
                                     (host_port, "services.nginx.host_port in deployments/local.yaml"))
             if procs.port_open(p)]
    for p, why in taken:
        print(f"quickstart: port {p} is taken ({why}): free it, run `make down` if an earlier quickstart holds it"
              + (f", or choose another with {UI_PORT_ENV}=PORT make quickstart" if p == port else ""),
              file=sys.stderr)
    if taken:
        return 2
    say = lambda m: print(f"[quickstart] {m}", flush=True)  # noqa: E731
    bed = Bed.create(owner_pid=1, log=say)  # lives on after this command; `make down` ends it
    try:
        # the UI first: it answers while the engine, the images and the deployments come up. Its pid file is in
        # the run's folder, so `make down` stops it with the rest.
        prefect = PrefectServer(bed.run_dir / "prefect", port, ui=True)
        prefect.start()
        say(f"Prefect UI: {prefect.ui_url}  (up {time.monotonic() - t_start:.0f}s after start; the deployments "
            "appear there in a few minutes, then run deploy-helix/local from its page)")
        # `make down` removes this environment whole (containers, networks, volumes), also what a flow run by
        # hand (`prefect deployment run upgrade-helix/local`, without the bed's labels) created
        bed.record_project(descriptor["project"], descriptor["environment"])
        engine = bed.engine()
        bed.write_state()  # the engine, for `make down`, before the minutes of the images
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
        say(f"Prefect UI: {prefect.ui_url}  (Deployments → deploy-helix/local → Run → Quick run deploys again)")
        say(f"Prefect API: {prefect.api_url}  (export PREFECT_API_URL={prefect.api_url})")
        say("stop everything with `make down`")
        return 0
    except Exception:
        say("quickstart failed; `make down` cleans up")
        raise


if __name__ == "__main__":
    sys.exit(main())
