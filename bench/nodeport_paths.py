"""New connections to one NodePort Service through two addresses of this machine, side by side: 127.0.0.1
(kube-proxy's ``localhostNodePorts``) and the real node's address (the bed's bridge). Prints how many requests each
sent and failed, and the first five failures of each, with the conntrack ``invalid`` counter around them.

Needs the bed's real node: ``make kube-node`` (or ``python -m testbed up kube-node``), then::

    .venv/bin/python bench/nodeport_paths.py --kubeconfig "$(ls -t .testbed/runs/*/kube-node/kubeconfigs/helix-admin.yaml | head -1)" --seconds 300

``make bed-down`` stops the node. The refusals this looks for are rare (about 1 in 10^4-10^5 on a loaded machine,
2026-12-04): run it beside other work (a clean-clone CI) for minutes, not seconds. Their cause was the wait
before the load (testbed.kube_node.forget_untranslated); the bench now deletes what the wait left, so a refusal
here is a new finding. ``--keep-stale`` leaves those entries, to see the refusals come back.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.mixed_load import run as run_load  # noqa: E402
from helix_ops.wait import wait_until  # noqa: E402
from testbed.kube_node import NODE_IP, forget_untranslated  # noqa: E402

NAMESPACE = "nodeport-paths"


def conntrack_invalid() -> int:
    """The sum over CPUs of /proc/net/stat/nf_conntrack's ``invalid`` column."""
    rows = Path("/proc/net/stat/nf_conntrack").read_text().split("\n")[1:]
    return sum(int(r.split()[4], 16) for r in rows if r.strip())


def deploy(kubeconfig: str, keep_stale: bool) -> int:
    """A 2-replica probe Deployment and a NodePort Service in front of it; returns the node port once it answers."""
    from lightkube import Client, KubeConfig, codecs
    from lightkube.resources.core_v1 import Service

    client = Client(KubeConfig.from_file(kubeconfig), field_manager="bench")
    labels = {"app": "probe"}
    for obj in (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "probe", "namespace": NAMESPACE},
         "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels},
                  "spec": {"containers": [{"name": "probe", "image": "localhost/helix-probe:v1",
                                           "imagePullPolicy": "IfNotPresent", "ports": [{"containerPort": 3000}],
                                           "readinessProbe": {"httpGet": {"path": "/", "port": 3000},
                                                              "periodSeconds": 2}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "probe", "namespace": NAMESPACE},
         "spec": {"type": "NodePort", "selector": labels, "ports": [{"port": 80, "targetPort": 3000}]}},
    ):
        client.apply(codecs.from_dict(obj), field_manager="bench", force=True)
    port = client.get(Service, "probe", namespace=NAMESPACE).spec.ports[0].nodePort

    def answers() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until("the probe answering on its node port", answers, 180, interval_s=1)
    # the wait's attempts before kube-proxy routed the port left untranslated entries; a load connection reusing
    # one of their source ports within 120 s would be refused by the node itself (testbed.kube_node)
    if keep_stale:
        return port
    forgotten = forget_untranslated("127.0.0.1", port)
    print(f"{forgotten} untranslated conntrack entries of the wait deleted")
    return port


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--clients", type=int, default=4, help="new-connection clients per address")
    p.add_argument("--rps", type=float, default=50, help="requests per second per client")
    p.add_argument("--keep-stale", action="store_true",
                   help="leave the untranslated conntrack entries the wait made (to see the refusals they cause)")
    a = p.parse_args()
    port = deploy(a.kubeconfig, a.keep_stale)
    targets = {"127.0.0.1": f"http://127.0.0.1:{port}/", "node": f"http://{NODE_IP}:{port}/"}
    stop = threading.Event()
    samples: list[tuple[float, int]] = []
    results: dict[str, dict] = {}

    def sampler() -> None:
        while not stop.is_set():
            samples.append((time.time(), conntrack_invalid()))
            time.sleep(0.05)

    def load(name: str, url: str) -> None:  # bench/mixed_load.py's new-connection clients, one load per address
        results[name] = run_load(url, keepalive_clients=0, new_clients=a.clients, rps=a.rps, max_seconds=a.seconds,
                                 stop_file=None)

    threads = [threading.Thread(target=sampler)] + [threading.Thread(target=load, args=kv) for kv in targets.items()]
    for t in threads[1:] + threads[:1]:
        t.start()
    for t in threads[1:]:
        t.join()
    stop.set()
    threads[0].join()
    print(f"{'address':<10} {'sent':>9} {'failed':>7}")
    for name in targets:
        print(f"{name:<10} {results[name]['new']['sent']:>9} {results[name]['new']['failed']:>7}")
    for name, r in results.items():
        for when, what in zip((r["started_at"] + t for t in r["new"]["failures_at"]), r["new"]["error_samples"]):
            before = [v for s, v in samples if s <= when - 0.2][-1:]
            after = [v for s, v in samples if s >= when + 0.2][:1]
            print(f"{time.strftime('%H:%M:%S', time.gmtime(when))} {name}: {what} (conntrack invalid {before} -> "
                  f"{after})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
