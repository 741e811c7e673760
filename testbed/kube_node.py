"""One real Kubernetes node for the test bed: Debian's containerd, the CNI bridge and host-local plugins, a kubelet
and kube-proxy (iptables) built with the control plane by ``testbed/kube/build.sh``, CoreDNS, and kube-router as
the NetworkPolicy firewall (iptables and ipset; no routing, no service proxy), joined to a
:class:`testbed.kube.KubeCluster` started without kwok. Pods run for real: Services route through kube-proxy,
``pods/portforward`` and ``pods/exec`` go to the real kubelet, readiness probes gate rollouts, NetworkPolicies are
enforced on the pods' ingress (traffic from the node itself is always let in, as kube-router does for probes).

Interface (``bed.kube_node()`` or the session fixture ``kube_node``)::

    node.cluster                   the KubeCluster it belongs to (``.kubeconfig``, ``.new_namespace()``, ...)
    node.name                      "helix-node"
    node.ip                        the node's address (the CNI bridge's gateway): pods reach the host here
    node.load_images(tags)         make podman's images ``tags`` (``localhost/...``) present in containerd
                                   (``podman save`` | ``ctr -n k8s.io images import``; skipped when present)
    node.started_s                 seconds from nothing to a Ready node with DNS and storage
    node.stop()                    pods deleted through the API (so CNI DEL runs), processes stopped, then only
                                   what the node added: KUBE-*/CNI-* iptables chains, netns mounts, veths, the
                                   bridge, the kubelet's mounts and cgroups, sysctls it changed

What it needs from the machine (``make apt``): containerd, containernetworking-plugins, runc, iptables, ipset,
conntrack. One real
node per machine (a lock file): its bridge and address range are fixed (``BRIDGE``, ``SUBNET``).

Set-up facts that were not obvious (testbed/kube/node/README.md has the exploration):
- containerd: ``restrict_oom_score_adj`` (runc may not lower the pause container's oom_score_adj here),
  ``netns_mounts_under_state_dir`` (Podman makes /run/netns a shared bind mount over itself), a local pause image;
- the kubelet: ``failCgroupV1: false`` (this machine mounts cgroup v1), started after containerd's socket answers;
- CoreDNS runs on the host, bound to the node's address, reading the API as the admin: pods need no API access;
- kube-router runs on the host too, as the admin (``--kubeconfig``), firewall only: the bridge plugin enforces no
  NetworkPolicy. The sigs project kube-network-policies cannot run here: this kernel lacks nftables' ``queue``
  (``CONFIG_NFT_QUEUE``); kube-router v2.1.0 is the only version the Go module proxy serves here;
- volumes: a default StorageClass without a provisioner and a pool of pre-made host folders (mode 0777), since
  the host-path provisioner makes root-owned 0750 folders that non-root pods (Neo4j's uid 7474) cannot write;
- the API server's client identity towards the kubelet is in system:masters (the kubelet authorizes by webhook).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed import procs
from testbed.kube import KubeCluster
from testbed.kube_setup import SERVICE_CIDR, write_secret

NODE_NAME = "helix-node"
BRIDGE = "helixbr0"
SUBNET = "10.227.0.0/24"
NODE_IP = "10.227.0.1"
CNI_BIN = Path("/usr/lib/cni")
PAUSE_IMAGE = "localhost/helix-pause:1"
LOCK_FILE = Path("/run/lock/helix-ops-real-node.lock")
STATE_FILE = "node.json"  # what a later clean-up needs: the binaries' folder, the sysctls as they were
VOLUME_POOL = 24
NAMESPACE = "k8s.io"
SYSCTLS = ("net.ipv4.ip_forward", "net.ipv4.conf.all.route_localnet")


def machine_ready() -> str | None:
    """None when this machine can run the node, else what is missing (and how to get it)."""
    tools = ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "iptables", "podman", "conntrack", "ipset")
    missing = [p for p in tools if shutil.which(p) is None]
    missing += [str(CNI_BIN / p) for p in ("bridge", "host-local", "portmap", "loopback")
                if not (CNI_BIN / p).exists()]
    if missing:
        return (f"missing {', '.join(missing)}: run `make apt` (containerd, containernetworking-plugins, runc, "
                f"conntrack, ipset)")
    if os.geteuid() != 0:
        return "the real node needs root (network bridge, iptables, mounts)"
    return None


@dataclass
class RealNode:
    cluster: KubeCluster | None  # None: a leftover node being cleaned up (:meth:`leftover`)
    bin: Path
    log: object = print
    name: str = NODE_NAME
    ip: str = NODE_IP
    kubelet_port: int = field(default_factory=procs.free_port)
    kubelet_healthz_port: int = field(default_factory=procs.free_port)
    proxy_healthz_port: int = field(default_factory=procs.free_port)
    proxy_metrics_port: int = field(default_factory=procs.free_port)
    started_s: float = 0.0
    _procs: dict[str, procs.Proc] = field(default_factory=dict, repr=False)
    _lock: object = field(default=None, repr=False)
    _sysctls: dict[str, str] = field(default_factory=dict, repr=False)
    home: Path | None = None

    def __post_init__(self) -> None:
        if self.home is None:
            self.home = self.cluster.home / "node"

    @classmethod
    def leftover(cls, home: Path, log=print) -> RealNode:
        """The node whose folder is ``home``, of a run whose process is gone: :meth:`stop` then removes what it
        left (its processes by their pid files, its pods' containers, iptables chains, mounts, bridge, sysctls)."""
        state = json.loads((home / STATE_FILE).read_text())
        node = cls(None, Path(state["bin"]), log=log, home=home)
        node._sysctls = state.get("sysctls", {})
        return node

    @property
    def socket(self) -> Path:
        return self.home / "containerd" / "containerd.sock"

    # --- public

    def start(self, deadline_s: float = 180) -> None:
        t0 = time.monotonic()
        self._take_lock()
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._remember_sysctls()
        (self.home / STATE_FILE).write_text(json.dumps({"bin": str(self.bin), "sysctls": self._sysctls}))
        for key in SYSCTLS:
            _sysctl(key, "1")
        self._bridge_up()
        kubelet_kubeconfig = self._write_configs()
        self._start("containerd", ["containerd", "--config", str(self.home / "containerd.toml")])
        self._wait("containerd's socket", lambda: self._ctr("version", check=False).returncode == 0, 60)
        self.load_images([PAUSE_IMAGE])
        self._start("kubelet", self._kubelet_argv(kubelet_kubeconfig))
        self._wait(f"node {self.name} Ready", self._node_ready, deadline_s)
        self._start("kube-proxy", [str(self.bin / "kube-proxy"), f"--config={self.home / 'kube-proxy.yaml'}",
                                   "--v=2"])  # v2: each rule sync's time (tests/kube/timeline.py reads it)
        self._start("coredns", [str(self.bin / "coredns"), "-conf", str(self.home / "Corefile")])
        self._start("kube-router", [str(self.bin / "kube-router"), f"--kubeconfig={self.cluster.kubeconfig}",
                                    f"--hostname-override={self.name}", "--run-firewall=true", "--run-router=false",
                                    "--run-service-proxy=false", "--enable-cni=false", "--health-port=0",
                                    "--metrics-port=0", f"--service-cluster-ip-range={SERVICE_CIDR}"])
        self._storage()
        self._wait("CoreDNS on the node's address", lambda: procs.port_open(53, self.ip), 60)
        self._wait("kube-proxy healthy", self._proxy_healthy, 60)
        self.started_s = time.monotonic() - t0
        self.log(f"kube-node: {self.name} Ready with DNS and storage in {self.started_s:.1f}s")

    def load_images(self, tags: list[str]) -> None:
        """Make podman's images ``tags`` present in containerd's k8s.io namespace."""
        have = set(self._ctr("images", "ls", "-q").stdout.split())
        for tag in tags:
            if tag in have:
                continue
            save = subprocess.Popen(["podman", "save", tag], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL)
            try:
                imp = subprocess.run(self._ctr_argv("images", "import", "-"), stdin=save.stdout,
                                     capture_output=True, text=True, timeout=600)
            finally:
                save.stdout.close()
                err = save.stderr.read().decode(errors="replace")
                save.wait(timeout=60)
            if save.returncode != 0 or imp.returncode != 0:
                raise RuntimeError(f"importing {tag} into containerd failed: podman save exit {save.returncode} "
                                   f"{err[-500:]}; ctr import exit {imp.returncode} {imp.stderr[-500:]}")

    def stop(self) -> None:
        """Everything the node added, removed (best effort, each step guarded)."""
        steps = [self._delete_pods, self._stop_node_processes, self._remove_sandboxes, self._stop_containerd,
                 self._clean_iptables, self._clean_network, self._clean_mounts_and_cgroups,
                 self._restore_sysctls]
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - clean up as much as possible
                self.log(f"kube-node: {step.__name__} failed: {exc}")
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # --- start-up

    def _take_lock(self) -> None:
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        lock = open(LOCK_FILE, "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise RuntimeError(f"another real node runs on this machine ({LOCK_FILE} is locked): one at a time, "
                               f"since its bridge {BRIDGE} and range {SUBNET} are fixed") from None
        self._lock = lock

    def _remember_sysctls(self) -> None:
        for key in SYSCTLS:
            self._sysctls[key] = Path("/proc/sys", *key.split(".")).read_text().strip()

    def _bridge_up(self) -> None:
        if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0:
            procs.run(["ip", "link", "add", BRIDGE, "type", "bridge"])
            procs.run(["ip", "addr", "add", f"{self.ip}/{SUBNET.split('/')[1]}", "dev", BRIDGE])
        procs.run(["ip", "link", "set", BRIDGE, "up"])

    def _write_configs(self) -> Path:
        """Every configuration file of the node; returns the kubelet's kubeconfig."""
        h = self.home
        (h / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
        (h / "cni" / "net.d" / "10-helix.conflist").write_text(CNI_CONF.format(bridge=BRIDGE, subnet=SUBNET,
                                                                               ipam=h / "cni" / "ipam"))
        (h / "containerd.toml").write_text(CONTAINERD_TOML.format(home=h / "containerd", socket=self.socket,
                                                                  pause=PAUSE_IMAGE, cni=h / "cni" / "net.d",
                                                                  cni_bin=CNI_BIN))
        cert, key = self.cluster.issue(self.name, server=True, ips=[self.ip, "127.0.0.1"], dns=[self.name, "localhost"])
        write_secret(h / "kubelet-serving.crt", cert)
        write_secret(h / "kubelet-serving.key", key)
        kubelet_kc = self.cluster.kubeconfig_for(f"system:node:{self.name}", ["system:nodes"])
        proxy_kc = self.cluster.kubeconfig_for("system:kube-proxy")
        (h / "kubelet.yaml").write_text(KUBELET_CONFIG.format(
            socket=self.socket, ip=self.ip, port=self.kubelet_port, healthz=self.kubelet_healthz_port,
            cert=h / "kubelet-serving.crt", key=h / "kubelet-serving.key", ca=self.cluster.ca_file))
        (h / "kube-proxy.yaml").write_text(KUBE_PROXY_CONFIG.format(
            kubeconfig=proxy_kc, name=self.name, subnet=SUBNET, ip=self.ip, healthz=self.proxy_healthz_port,
            metrics=self.proxy_metrics_port))
        (h / "Corefile").write_text(COREFILE.format(ip=self.ip, kubeconfig=self.cluster.kubeconfig))
        return kubelet_kc

    def _kubelet_argv(self, kubeconfig: Path) -> list[str]:
        return [str(self.bin / "kubelet"), f"--config={self.home / 'kubelet.yaml'}",
                f"--kubeconfig={kubeconfig}", f"--root-dir={self.home / 'kubelet'}",
                f"--hostname-override={self.name}", f"--node-ip={self.ip}", "--v=1"]

    def _node_ready(self) -> bool:
        r = self.cluster.api("GET", f"/api/v1/nodes/{self.name}", timeout=5)
        if r.status_code != 200:
            return False
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in (r.json().get("status") or {}).get("conditions", []))

    def _proxy_healthy(self) -> bool:
        import httpx

        try:
            return httpx.get(f"http://127.0.0.1:{self.proxy_healthz_port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _storage(self) -> None:
        """The default StorageClass "standard" without a provisioner, and a pool of host folders as volumes."""
        c = self.cluster
        c._apply("/apis/storage.k8s.io/v1/storageclasses", {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "standard",
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "kubernetes.io/no-provisioner", "reclaimPolicy": "Retain",
            "volumeBindingMode": "WaitForFirstConsumer"})
        for i in range(VOLUME_POOL):
            path = self.home / "volumes" / f"pv-{i}"
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)
            c._apply("/api/v1/persistentvolumes", {
                "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"node-pv-{i}"},
                "spec": {"capacity": {"storage": "100Gi"}, "accessModes": ["ReadWriteOnce"],
                         "storageClassName": "standard", "persistentVolumeReclaimPolicy": "Retain",
                         "hostPath": {"path": str(path), "type": "Directory"}}})

    # --- helpers

    def _start(self, name: str, argv: list[str]) -> None:
        self._procs[name] = procs.start(name, argv, self.home, env={"GOMAXPROCS": "2"})

    def _wait(self, what: str, check, deadline_s: float) -> None:
        procs.wait_while_alive(what, check, deadline_s, self._procs, lambda m: self.log(f"kube-node: {m}"), self.home)

    def _ctr_argv(self, *args: str) -> list[str]:
        return ["ctr", "-a", str(self.socket), "-n", NAMESPACE, *args]

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return procs.run(self._ctr_argv(*args), timeout_s=60, check=check)

    # --- tear-down

    def _delete_pods(self) -> None:
        kubelet = self._procs.get("kubelet")
        if self.cluster is None or kubelet is None or not kubelet.alive() or not self.cluster.apiserver_up():
            return
        pods = self.cluster.api("GET", "/api/v1/pods").json().get("items", [])
        for pod in pods:
            meta = pod["metadata"]
            self.cluster.api("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                             {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 1})
        deadline = procs.Deadline(30)
        while self._ctr("tasks", "ls", "-q", check=False).stdout.split() and deadline.pause(0.5):
            pass

    def _stop_process(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is not None:
            proc.stop(grace_s=10)
        else:  # a leftover: by its pid file (checked against the process's start time)
            procs.reap_stale(self.home / f"{name}.pid")

    def _stop_node_processes(self) -> None:
        for name in ("kube-router", "coredns", "kube-proxy", "kubelet"):
            self._stop_process(name)

    def _remove_sandboxes(self) -> None:
        if not self.socket.exists() or self._ctr("version", check=False).returncode != 0:
            return
        tasks = self._ctr("tasks", "ls", "-q", check=False).stdout.split()
        for t in tasks:
            self._ctr("tasks", "kill", "-s", "KILL", t, check=False)
        for t in tasks:
            self._ctr("tasks", "delete", "-f", t, check=False)
        for c in self._ctr("containers", "ls", "-q", check=False).stdout.split():
            self._ctr("containers", "rm", c, check=False)

    def _stop_containerd(self) -> None:
        self._stop_process("containerd")
        # the runc shims of this containerd (their -address is this socket) run in sessions of their own
        out = subprocess.run(["pgrep", "-f", f"containerd-shim-runc-v2 .*-address {self.socket}"],
                             capture_output=True, text=True).stdout.split()
        for pid in out:
            procs.stop_group(int(pid), grace_s=5)

    def _clean_iptables(self) -> None:
        if (self.bin / "kube-proxy").exists():
            subprocess.run([str(self.bin / "kube-proxy"), "--cleanup"], capture_output=True, timeout=60)
        for ipt in ("iptables", "ip6tables"):
            for table in ("nat", "filter", "mangle"):
                rules = subprocess.run([ipt, "-t", table, "-S"], capture_output=True, text=True).stdout
                for line in rules.splitlines():
                    if re.match(r"^-A (PREROUTING|INPUT|OUTPUT|POSTROUTING|FORWARD) .*-j (KUBE-|CNI-)", line):
                        # shlex: kube-router's rules carry quoted comments with spaces
                        subprocess.run([ipt, "-t", table, "-D", *shlex.split(line)[1:]], capture_output=True)
                chains = [line.split()[1] for line in rules.splitlines() if re.match(r"^-N (KUBE-|CNI-)", line)]
                for flag in ("-F", "-X"):
                    for chain in chains:
                        subprocess.run([ipt, "-t", table, flag, chain], capture_output=True)
        # kube-router's ipsets (its policies' pod and peer sets), free once the rules above are gone
        names = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True).stdout.split()
        for name in names:
            if re.match(r"^(KUBE-|kube-router-)", name):
                subprocess.run(["ipset", "destroy", name], capture_output=True)

    def _clean_network(self) -> None:
        state = str(self.home / "containerd" / "state")
        for mount in _mounts_under(state):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        links = subprocess.run(["ip", "-o", "link", "show", "master", BRIDGE], capture_output=True,
                               text=True).stdout
        for line in links.splitlines():
            veth = line.split(":")[1].strip().split("@")[0]
            subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)

    def _clean_mounts_and_cgroups(self) -> None:
        for mount in sorted(_mounts_under(str(self.home)), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            for top in ("kubepods", "k8s.io"):
                root = hierarchy / top
                if root.is_dir():
                    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                                    reverse=True):
                        _rmdir(d)
                    _rmdir(root)

    def _restore_sysctls(self) -> None:
        for key, value in self._sysctls.items():
            if key == "net.ipv4.ip_forward" and subprocess.run(["pgrep", "-x", "conmon"],
                                                              capture_output=True).returncode == 0:
                continue  # Podman's containers need forwarding too
            _sysctl(key, value)


def forget_untranslated(host: str, port: int) -> int:
    """Delete this machine's conntrack entries of TCP connections to ``host:port`` that were never translated (their
    reply comes from ``host`` itself, not from a pod); returns how many were deleted.

    Why: a client on the node itself that connects to a NodePort before kube-proxy routes it has its SYN confirmed
    in conntrack on the output path, untranslated; kube-proxy's REJECT only comes later, in INPUT. The entry then
    lives in SYN_SENT for ``nf_conntrack_tcp_timeout_syn_sent`` (120 s), and a new connection that reuses its
    source port within that time matches it, skips the DNAT and is refused by the node's own stack. Waiting for a
    Service to answer leaves such entries; call this after the wait and before a load that counts refusals.
    (Found with ``conntrack -E`` and ``tcpdump`` beside bench/nodeport_paths.py, 2026-12-04: the one refused
    connection of 120,004 reused the source port of one of the wait's two untranslated entries, 86 s later.)"""
    return _conntrack_untranslated("-D", host, port)


def count_untranslated(host: str, port: int) -> int:
    """How many conntrack entries :func:`forget_untranslated` would delete now (``conntrack -L``)."""
    return _conntrack_untranslated("-L", host, port)


def _conntrack_untranslated(action: str, host: str, port: int) -> int:
    """``conntrack <action>`` (``-L`` lists, ``-D`` deletes) on the TCP entries to ``host:port`` whose reply comes
    from ``host`` itself; returns the count conntrack reports ("N flow entries have been shown/deleted")."""
    done = subprocess.run(["conntrack", action, "-p", "tcp", "--dport", str(port), "--reply-src", host],
                          capture_output=True, text=True, timeout=30)
    found = re.search(r"(\d+) flow entries have been (?:shown|deleted)", done.stderr)
    if found is None:  # exit 1 with "0 flow entries" is conntrack's "nothing matched"; anything else is an error
        raise RuntimeError(f"conntrack {action} for {host}:{port} failed (exit {done.returncode}): "
                           f"{done.stderr.strip()}")
    return int(found.group(1))


def clean_up_run(run: Path, log=print) -> None:
    """Remove what a real node of the test-bed run folder ``run`` left, when it has one (its owner is gone)."""
    for state in run.glob(f"*/node/{STATE_FILE}"):
        log(f"cleaning up the real Kubernetes node of run {run.name}")
        RealNode.leftover(state.parent, log).stop()


def _sysctl(key: str, value: str) -> None:
    Path("/proc/sys", *key.split(".")).write_text(value)


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _mounts_under(prefix: str) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == prefix or point.startswith(prefix.rstrip("/") + "/"):
            out.append(point)
    return sorted(set(out))


CNI_CONF = """{{
  "cniVersion": "0.4.0",
  "name": "helix-node",
  "plugins": [
    {{"type": "bridge", "bridge": "{bridge}", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {{"type": "host-local", "dataDir": "{ipam}", "ranges": [[{{"subnet": "{subnet}"}}]],
              "routes": [{{"dst": "0.0.0.0/0"}}]}}}},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}}},
    {{"type": "loopback"}}
  ]
}}
"""

# containerd 1.6 fills what is not set here with its defaults
CONTAINERD_TOML = """version = 2
root = "{home}/root"
state = "{home}/state"

[grpc]
  address = "{socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni}"
    max_conf_num = 1
"""

KUBELET_CONFIG = """apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://{socket}
failSwapOn: false
address: {ip}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
tlsCertFile: {cert}
tlsPrivateKeyFile: {key}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization:
  mode: Webhook
clusterDomain: cluster.local
clusterDNS: ["{ip}"]
resolvConf: /etc/resolv.conf
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
protectKernelDefaults: false
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
imageGCHighThresholdPercent: 100
serializeImagePulls: false
syncFrequency: 5s
nodeStatusUpdateFrequency: 5s
"""

KUBE_PROXY_CONFIG = """apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {{kubeconfig: {kubeconfig}}}
hostnameOverride: {name}
bindAddress: 127.0.0.1
clusterCIDR: {subnet}
healthzBindAddress: 127.0.0.1:{healthz}
metricsBindAddress: 127.0.0.1:{metrics}
nodePortAddresses: ["127.0.0.0/8", "{ip}/32"]
iptables: {{localhostNodePorts: true, masqueradeAll: false}}
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
"""

COREFILE = """.:53 {{
    bind {ip}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""
