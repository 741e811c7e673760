"""Benchmark: a rolling upgrade by upgrade-helix (its default path, and the other mode of ``parallel``) against a
naive recreate and a start-first peer (HAProxy's runtime API, as kamal-proxy / docker-rollout do), all under the
same mixed load: keep-alive clients and new-connection clients.

    .venv/bin/python bench/upgrade_bench.py [--keepalive-clients 2] [--new-clients 2] [--rps 10] [--json out.json]
        [--methods default,alternate,naive,peer]   (a method may repeat: default,alternate,naive,peer,alternate)

Brings up its own engine (Podman's Docker API), images and Prefect server, deploys a private copy of
deployments/local.yaml (the load balancer's rate limit raised, so no 429 hides a failure), then rolls the
dashboard (2 replicas) and the four stateless MCP servers (mcp-discovery, -derivation, -cascade,
-verification: one replica each) between the probe image's v1 and v2, once per method, on that one stack:

* upgrade-helix, default path: the flow as ``prefect deployment run upgrade-helix/local -p images=...`` runs it
  (no ``parallel`` passed), called in-process; ``backup_first=False`` (the other methods take no backup);
* upgrade-helix with the other value of ``parallel`` (waves: the dashboard, then the four MCP servers at once);
* naive recreate: per service stop and remove the old containers, create the new ones, wait for health (what
  ``compose up -d`` does for a changed tag), the load balancer reloaded once the new dashboards are up;
* HAProxy peer (bench/haproxy_peer.py): the same container plans, rolled one replica at a time through HAProxy's
  runtime API (add server, wait for its health check, drain the old one, delete it once idle, stop it).

The load (bench/mixed_load.py, in its own process) goes through the Helix nginx load balancer for the first
three, through HAProxy for the peer; both front the dashboard only. mcp-graph (the single writer, stop-first)
is not rolled: the peer has no stop-first equivalent to compare with. Prints one table and the ratios to the
goals of issue 23 (wall time ≤ 2x naive, ≤ 1.5x peer, 0 failed requests), taken from each method's last row.
Needs Debian's haproxy (in the Makefile's APT_PACKAGES: `make apt`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.haproxy_peer import HAProxy, haproxy_binary, peer_roll  # noqa: E402
from bench.mixed_load import MixedLoad  # noqa: E402
from testbed import procs  # noqa: E402
from testbed.bed import Bed  # noqa: E402
from testbed.helix import local_descriptor  # noqa: E402
from testbed.prefect_server import QUIET  # noqa: E402

SERVICES = ["dashboard", "mcp-discovery", "mcp-derivation", "mcp-cascade", "mcp-verification"]
GOAL_NAIVE, GOAL_PEER = 2.0, 1.5


class Stack:
    """The deployed copy of the local stack: descriptor, driver, specs and secrets for a given image tag."""

    def __init__(self, engine_url: str, path: Path, labels: dict[str, str]) -> None:
        from drivers.engine import EngineDriver
        from helix_ops.descriptor import load_descriptor

        self.path, self.labels = path, labels
        self.desc = load_descriptor(path)
        self.driver = EngineDriver.connect(engine_url, self.desc.project, self.desc.environment, labels)

    def at(self, tag: str):
        """(descriptor, service → compose spec) with SERVICES at ``tag``."""
        from helix_ops.changes import with_images
        from helix_ops.plan import compose_objects
        from helix_ops.render.compose import render_compose
        from helix_ops.stack import build_stack

        desc = with_images(self.desc, {s: tag for s in SERVICES})
        specs = {o.identity.split("/", 1)[1]: o.spec for o in compose_objects(render_compose(build_stack(desc)))
                 if o.identity.startswith("service/")}
        return desc, specs

    def probe_ports(self) -> dict[str, int]:
        from helix_ops.stack import build_stack

        stack = build_stack(self.desc)
        return {s: stack.service(s).probe.port for s in SERVICES}

    def plans(self, service: str, spec) -> list:
        from drivers.engine import container_plans
        from helix_ops.plan import template_hash

        d = self.driver
        return container_plans(d.project, d.environment, service, spec, template_hash(spec), {},
                               self.probe_ports()[service], d.extra_labels, probe_host=d.probe_host)

    def images_now(self) -> dict[str, list[str]]:
        from drivers.engine import IMAGE_LABEL

        return {s: sorted(c.labels[IMAGE_LABEL].rsplit(":", 1)[1] for c in self.driver.containers(s)
                          if c.status == "running") for s in SERVICES}


def naive_recreate(stack: Stack, tag: str) -> None:
    """What ``compose up -d`` does for a changed tag: per service, stop and remove the old containers, then
    create the new ones (no surge, no hand-over); health is awaited only so the next service starts on a ready
    one (depends_on: service_healthy). The load balancer is pointed at the new dashboards once they are up."""
    from drivers.engine_health import http_check
    from tasks.engine import balancer_conf, dashboard_members, secret_env

    desc, specs = stack.at(tag)
    secrets = secret_env(desc)
    driver, ports = stack.driver, stack.probe_ports()
    for name in SERVICES:
        driver.remove(driver.containers(name))
        for plan in stack.plans(name, specs[name]):
            c = driver.create_container(plan, secrets)
            host, hp = driver.probe_address(c, ports[name])
            driver.wait_healthy(c, http_check(host, hp, "/api/health"), name, 120)
        if name == "dashboard":
            driver.update_load_balancer(balancer_conf(desc, driver.network_addresses(dashboard_members(driver))))


def repoint_nginx(stack: Stack) -> None:
    """Point the Helix load balancer at the dashboard replicas that run now (after the peer, which bypasses it)."""
    from tasks.engine import balancer_conf, dashboard_members

    d = stack.driver
    d.update_load_balancer(balancer_conf(stack.desc, d.network_addresses(dashboard_members(d))))


def start_haproxy(stack: Stack, workdir: Path) -> tuple[HAProxy, int]:
    """HAProxy in front of the containers that run now (one backend per service); its frontend's port."""
    ports = stack.probe_ports()
    backends = {}
    for s in SERVICES:
        running = sorted((c for c in stack.driver.containers(s) if c.status == "running"), key=lambda c: c.name)
        backends[s] = [(c.name, stack.driver.probe_address(c, ports[s])[1]) for c in running]
    port = procs.free_port()
    return HAProxy(workdir / "haproxy", port, "dashboard", backends), port


def peer(stack: Stack, hap: HAProxy, tag: str) -> list[dict]:
    from tasks.engine import secret_env

    desc, specs = stack.at(tag)
    return peer_roll(hap, stack.driver, SERVICES, lambda s: stack.plans(s, specs[s]), stack.probe_ports(),
                     secret_env(desc), log=lambda m: print(f"[bench] {m}", file=sys.stderr))


def wait_serving(url: str, seconds: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} does not answer 200")
        time.sleep(0.2)


def flow_timeline(flow_run_id, wall_s: float) -> str:
    """Where an upgrade-helix run's time went, from its task runs on the Prefect server: the flow run's own time,
    the time inside tasks (by task name: count, seconds) and the time in none (the flow's own code between
    tasks, and Prefect's orchestration)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    time.sleep(1)  # task run states reach the server through events
    with get_client(sync_client=True) as client:
        fr = client.read_flow_run(flow_run_id)
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    if fr.start_time is None or fr.end_time is None:
        return "no timeline (the flow run has no start or end time)"
    spans = sorted((r.start_time, r.end_time, r.name.rsplit("-", 1)[0]) for r in runs
                   if r.start_time is not None and r.end_time is not None)
    by_name: dict[str, list[float]] = {}
    covered, edge = 0.0, fr.start_time
    for start, end, name in spans:
        by_name.setdefault(name, []).append((end - start).total_seconds())
        if end > edge:
            covered += (end - max(start, edge)).total_seconds()
            edge = end
    flow_s = (fr.end_time - fr.start_time).total_seconds()
    tasks = ", ".join(f"{n} {len(v)}x {sum(v):.1f}" for n, v in sorted(by_name.items(), key=lambda kv: -sum(kv[1])))
    return (f"flow run {flow_s:.1f}s of the {wall_s:.1f}s call; inside tasks {covered:.1f}s, outside any task "
            f"{flow_s - covered:.1f}s; tasks (count, s): {tasks}")


def failed(row: dict) -> tuple[int, int]:
    return row["load"]["keepalive"]["failed"], row["load"]["new"]["failed"]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(rows: list[dict], args) -> str:
    out = [f"| method (dashboard x2 + 4 stateless MCP, {args.keepalive_clients} keep-alive + {args.new_clients} "
           f"new-connection clients at {args.rps:g} req/s each) | wall time (s) | failed keep-alive "
           f"| failed new-connection | keep-alive connections opened | 429s |", "|---|---|---|---|---|---|"]
    for r in rows:
        ka, new = r["load"]["keepalive"], r["load"]["new"]
        out.append(f"| {r['method']} | {r['wall_s']:.1f} | {ka['failed']} of {ka['sent']} | {new['failed']} of "
                   f"{new['sent']} | {ka['connections']} | {ka['rate_limited'] + new['rate_limited']} |")
    by = {r["key"]: r for r in rows}
    lines = ["", "\n".join(out), ""]
    for key in ("default", "alternate"):
        if key not in by:
            continue
        r = by[key]
        ka, new = failed(r)
        lines.append(f"{r['method']}: failed requests keep-alive {ka}, new-connection {new} "
                     f"(goal 0: {verdict(ka == 0 and new == 0)})")
        if "naive" in by:
            x = r["wall_s"] / by["naive"]["wall_s"]
            lines.append(f"  / naive recreate: {x:.2f}x (goal <= {GOAL_NAIVE:g}x: {verdict(x <= GOAL_NAIVE)})")
        if "peer" in by:
            x = r["wall_s"] / by["peer"]["wall_s"]
            lines.append(f"  / HAProxy peer:   {x:.2f}x (goal <= {GOAL_PEER:g}x: {verdict(x <= GOAL_PEER)})")
    for r in rows:
        errors = {k: r["load"][k]["errors"] for k in ("keepalive", "new") if r["load"][k]["errors"]}
        if errors:
            lines.append(f"{r['method']}: errors {errors}; failures at (s into the load) "
                         f"{ {k: r['load'][k]['failures_at'][:20] for k in ('keepalive', 'new')} }")
        if r.get("detail"):
            lines.append(f"{r['method']}: {r['detail']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keepalive-clients", type=int, default=2)
    parser.add_argument("--new-clients", type=int, default=2)
    parser.add_argument("--rps", type=float, default=10, help="requests per second of each client (default 10)")
    parser.add_argument("--methods", default="default,alternate,naive,peer",
                        help="which to run, in order: default, alternate, naive, peer")
    parser.add_argument("--settle", type=float, default=5, help="seconds of quiet before each method")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "peer" in methods:
        haproxy_binary()
    bed = Bed.create(log=lambda m: print(f"[bed] {m}", file=sys.stderr))
    rows: list[dict] = []
    stack = hap = None
    try:
        engine, server = bed.engine(), bed.prefect()
        bed.images()
        workdir = Path(tempfile.mkdtemp(prefix="upgrade-bench-"))
        os.environ.update({**QUIET, **server.env(), "HELIX_OPS_AUDIT_DIR": str(workdir / "audit")})
        import yaml

        from blocks.bootstrap import main as bootstrap
        from flows.deploy import deploy_helix
        from flows.upgrade import upgrade_helix

        default_parallel = inspect.signature(upgrade_helix.fn).parameters["parallel"].default
        names = {"default": f"upgrade-helix default (parallel={default_parallel})",
                 "alternate": f"upgrade-helix parallel={not default_parallel}",
                 "naive": "naive recreate (stop old, start new)", "peer": "HAProxy 2.6 peer (runtime API, start-first)"}
        project = f"ub{bed.run_id.split('-')[-1]}"
        path = local_descriptor(workdir / "local.yaml", project, rate_limit_rps=1000)
        assert bootstrap(["--descriptor", str(path)]) == 0
        common = dict(env="local", descriptor=str(path), engine_url=engine.base_url,
                      container_labels=bed.container_labels())
        t0 = time.perf_counter()
        assert deploy_helix(**common)["unhealthy"] == []
        print(f"[bench] deployed {project} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        stack = Stack(engine.base_url, path, bed.container_labels())
        nginx_url = f"http://127.0.0.1:{yaml.safe_load(path.read_text())['services']['nginx']['host_port']}/"
        tag = "v1"
        for key in methods:
            tag = "v2" if tag == "v1" else "v1"
            time.sleep(args.settle)
            url = nginx_url
            if key == "peer":
                hap, port = start_haproxy(stack, workdir)
                url = f"http://127.0.0.1:{port}/"
            wait_serving(url)
            load = MixedLoad(url, workdir, args.keepalive_clients, args.new_clients, args.rps)
            detail = ""
            try:
                time.sleep(2)  # the load runs before the change starts
                t0 = time.perf_counter()
                if key in ("default", "alternate"):
                    kw = {} if key == "default" else {"parallel": not default_parallel}
                    state = upgrade_helix(images={s: tag for s in SERVICES}, backup_first=False, return_state=True,
                                          **common, **kw)
                    result = state.result()
                    assert result["result"] == "succeeded", result
                elif key == "naive":
                    naive_recreate(stack, tag)
                elif key == "peer":
                    steps = peer(stack, hap, tag)
                    detail = "per replica (start / health / drain / total s): " + ", ".join(
                        f"{s['service']} {s['start_s']}/{s['health_s']}/{s['drain_s']}/{s['total_s']}"
                        for s in steps)
                else:
                    raise SystemExit(f"unknown method {key}")
                wall = time.perf_counter() - t0
                time.sleep(1)  # and a second after it ends
            finally:
                traffic = load.stop()
            if key in ("default", "alternate"):
                detail = "per service roll (s): " + ", ".join(
                    f"{r['service']} {r['wall_s']:.1f}" for r in result["reports"])
                try:
                    detail += "; " + flow_timeline(state.state_details.flow_run_id, wall)
                except Exception as exc:  # noqa: BLE001 - the timeline is a note, not the measurement
                    detail += f"; no timeline: {exc}"
            now = stack.images_now()
            assert all(v == [tag] * (2 if s == "dashboard" else 1) for s, v in now.items()), now
            rows.append({"key": key, "method": names[key], "wall_s": wall, "load": traffic, "detail": detail,
                         "to": tag})
            print(f"[bench] {names[key]}: {wall:.1f}s, failed keep-alive/new {failed(rows[-1])}", file=sys.stderr)
            if hap is not None:
                hap.stop()
                hap = None
                repoint_nginx(stack)  # the peer left nginx's upstreams on the replicas it removed
        return 0
    finally:
        if rows:
            print(report(rows, args))
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
        if hap is not None:
            hap.stop()
        if stack is not None:
            stack.driver.remove_project()
        bed.down()


if __name__ == "__main__":
    sys.exit(main())
