"""Benchmark: a rolling upgrade by upgrade-helix against a naive recreate (stop the old container, start the
new one, as `compose up -d` does for a changed tag), both under the same constant load through the load
balancer (about 50 requests per second from another process).

    .venv/bin/python bench/upgrade_bench.py [--rps 50]

Upgrades the dashboard and the five MCP servers from v1 to v2 with each method on a fresh copy of the local
stack and prints failed requests and wall time side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.bed import Bed  # noqa: E402
from testbed.helix import LoadLoop, local_descriptor  # noqa: E402
from testbed.prefect_server import QUIET  # noqa: E402

APP = ["dashboard", "mcp-graph", "mcp-discovery", "mcp-derivation", "mcp-cascade", "mcp-verification"]


def naive_recreate(engine_url: str, descriptor_path: Path, labels: dict) -> None:
    """What `compose up -d` does for a changed tag: per service, stop and remove the old containers, then
    create the new ones (no surge, no load-balancer hand-over); health is awaited only so the next service
    starts on a ready one, like depends_on: service_healthy."""
    from drivers.engine import EngineDriver, container_plans
    from drivers.engine_health import http_check
    from helix_ops.changes import with_images
    from helix_ops.descriptor import load_descriptor
    from helix_ops.plan import compose_objects, template_hash
    from helix_ops.render.compose import render_compose
    from helix_ops.stack import build_stack
    from tasks.engine import secret_env

    desc = with_images(load_descriptor(descriptor_path), {s: "v2" for s in APP})
    driver = EngineDriver.connect(engine_url, desc.project, desc.environment, labels)
    specs = {o.identity.split("/", 1)[1]: o.spec for o in compose_objects(render_compose(build_stack(desc)))}
    secrets = secret_env(desc)
    for name in APP:
        spec = specs[f"{name}"]
        port = build_stack(desc).service(name).port
        driver.remove(driver.containers(name), grace_s=10)
        for plan in container_plans(driver.project, desc.environment, name, spec, template_hash(spec), {}, port,
                                    labels):
            c = driver.create_container(plan, secrets)
            host, hp = driver.probe_address(c, port)
            driver.wait_healthy(c, http_check(host, hp, "/api/health"), name, 120)
    # the balancer resolves the dashboard by its new replica names
    from tasks.engine import balancer_conf, dashboard_members

    driver.update_load_balancer(balancer_conf(desc, dashboard_members(driver)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=50)
    args = parser.parse_args()
    bed = Bed.create(log=lambda m: print(f"[bed] {m}", file=sys.stderr))
    rows = []
    try:
        engine, server = bed.engine(), bed.prefect()
        bed.images()
        os.environ.update({**QUIET, **server.env()})
        from blocks.bootstrap import main as bootstrap
        from drivers.engine import EngineDriver
        from flows.deploy import deploy_helix
        from flows.upgrade import upgrade_helix

        for method in ("upgrade-helix (rolling)", "naive recreate"):
            workdir = Path(tempfile.mkdtemp())
            project = f"bu{len(rows)}{bed.run_id.split('-')[-1]}"
            path = local_descriptor(workdir / "local.yaml", project, rate_limit_rps=1000)
            assert bootstrap(["--descriptor", str(path)]) == 0
            common = dict(env="local", descriptor=str(path), engine_url=engine.base_url,
                          container_labels=bed.container_labels())
            assert deploy_helix(**common)["unhealthy"] == []
            import yaml

            port = yaml.safe_load(path.read_text())["services"]["nginx"]["host_port"]
            load = LoadLoop(f"http://127.0.0.1:{port}/", workdir, rps=args.rps)
            time.sleep(2)
            t0 = time.perf_counter()
            try:
                if method.startswith("upgrade"):
                    upgrade_helix(images={s: "v2" for s in APP}, backup_first=False, **common)
                else:
                    naive_recreate(engine.base_url, path, bed.container_labels())
                wall = time.perf_counter() - t0
            finally:
                traffic = load.stop()
            rows.append((method, traffic["sent"], traffic["failed"], wall))
            EngineDriver.connect(engine.base_url, project, "local").remove_project()
        print()
        print(f"| method (dashboard x2 + 5 MCP servers, v1 -> v2, {args.rps:.0f} rps) | requests | failed | wall time (s) |")
        print("|---|---|---|---|")
        for method, sent, failed, wall in rows:
            print(f"| {method} | {sent} | {failed} | {wall:.1f} |")
        print(f"\nratio of wall times: {rows[0][3] / rows[1][3]:.2f}x (goal <= 1.5x)")
        return 0
    finally:
        bed.down()


if __name__ == "__main__":
    sys.exit(main())
