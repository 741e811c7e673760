"""A real local Kubernetes control plane for the test bed: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler (Kubernetes 1.36) and kwok, built from Go modules by ``testbed/kube/build.sh`` and started on
loopback. kwok plays the nodes: it keeps fake Node objects Ready and moves scheduled pods to Running/Ready, so
Deployments and StatefulSets roll out. No container runs: a pod is only its status.
This module holds the running cluster (:class:`KubeCluster`); what it is started from (the binaries, the
certificates and kubeconfigs, kwok's configuration) is in ``testbed/kube_setup.py``.

Interface (the Kubernetes driver's tests code against this; ``bed.kube()`` or the session fixture ``kube``)::

    cluster.server                 "https://127.0.0.1:<port>" (the API server, TLS with the cluster CA)
    cluster.kubeconfig             Path, mode 0600: the admin identity (user "helix-admin", group
                                   system:masters), context "helix-testbed" (current)
    cluster.ca_file                Path of the cluster CA certificate (PEM)
    cluster.kubeconfig_for(user, groups=())   -> Path (0600): a client-certificate identity signed by the
                                   cluster CA. It has no rights but those of system:authenticated (discovery,
                                   self-reviews): bind what a test needs with ``grant``.
    cluster.grant(user, namespace, rules, name=None)   a Role with ``rules`` (RBAC rule dicts, e.g.
                                   {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]})
                                   and a RoleBinding of it to ``user`` in ``namespace``
    cluster.new_namespace(prefix="t")  -> str: a fresh namespace (its "default" ServiceAccount exists)
    cluster.nodes                  names of the fake nodes (kwok), labelled type=kwok
    cluster.stop_apiserver()       stop kube-apiserver (etcd, the controllers and kwok keep running)
    cluster.start_apiserver()      start it again on the same port with the same certificates, restart the
                                   controllers, scheduler and kwok (so they reconnect at once) and wait until a
                                   canary Deployment is Available: the cluster works when it returns
    cluster.apiserver_up()         True when /readyz answers ok
    cluster.api(method, path, json=None)   -> httpx.Response: a raw admin request (for the bed's own checks)
    cluster.forward(namespace, service, port, to)   route ``port`` of the simulated pods of ``namespace`` to the
                                   real server ``to`` = (host, port): ``pods/portforward`` through the API server
                                   then reaches it (a kwok ClusterPortForward, read by kwok at runtime)
    cluster.allow_exec(namespace, workdir=None)   ``pods/exec`` into pods of ``namespace`` runs the command on
                                   this machine (a kwok ClusterExec with a local target)
    cluster.stop()                 stop everything (the bed does this in ``down()``)

Behaviour worth knowing in tests:
- Pods become Ready about a second after they are scheduled (kwok's "fast" stages). A pod whose image contains
  ``NEVER_READY`` ("never-ready", e.g. ``helix/graph:2.0-never-ready``) or whose annotations have
  ``testbed.helix/never-ready: "true"`` runs but never becomes Ready: the way to make a rollout fail.
- A default StorageClass "standard" (the controller manager's host-path provisioner) binds PersistentVolumeClaims
  at once, so StatefulSets with volumeClaimTemplates become ready; the provisioner makes empty folders under
  /tmp/hostpath_pv and removes them with their claims.
- Services get cluster IPs (10.96.0.0/16) but nothing routes them; pods get IPs from kwok (10.0.0.0/16).
- Jobs complete at once (kwok's pod-complete stage), with exit code 0.
- kwok is the nodes' kubelet: the fake nodes' InternalIP is 127.0.0.1 and their kubelet endpoint kwok's server
  (``kwok_port``, TLS with a certificate of the cluster CA); kube-apiserver reaches it for pods/portforward and
  pods/exec (``--kubelet-preferred-address-types=InternalIP``, ``--kubelet-certificate-authority``). With no
  ``forward``/``allow_exec`` for a pod, kwok answers "no forward found" / "no exec found". kwok's selectors match
  pods by namespace and name, not labels. Pods' hostIP is 127.0.0.1.
"""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed import procs
from testbed.kube_setup import (ADMIN_USER, CA, KWOK_CRDS, KWOK_GROUP, SERVICE_CIDR, pem_cert, pem_key,
                                 write_secret, kwok_config, kwok_crds, render_kubeconfig)
# the bed and the tests reach these as testbed.kube.<name>
from testbed.kube_setup import BUILD_DEADLINE_S as BUILD_DEADLINE_S
from testbed.kube_setup import NEVER_READY as NEVER_READY
from testbed.kube_setup import ensure_built as ensure_built
from testbed.kube_setup import is_built as is_built
from testbed.kube_setup import start_build_in_background as start_build_in_background

# ---------------------------------------------------------------------------------------------- the cluster

@dataclass
class KubeCluster:
    """One control plane on loopback, its state under ``home`` (certificates, etcd data, logs, kubeconfigs)."""

    home: Path
    bin: Path
    node_count: int = 2
    log: object = print
    # False: no kwok and no fake nodes (a real node joins: testbed/kube_node.py)
    kwok: bool = True
    api_port: int = field(default_factory=procs.free_port)
    etcd_port: int = field(default_factory=procs.free_port)
    etcd_peer_port: int = field(default_factory=procs.free_port)
    # kwok's kubelet server (pods/portforward, pods/exec): fixed for the cluster's life, since the fake nodes'
    # status (daemonEndpoints) records it once and kwok restarts with start_apiserver()
    kwok_port: int = field(default_factory=procs.free_port)
    _procs: dict[str, procs.Proc] = field(default_factory=dict, repr=False)
    _ca: CA | None = field(default=None, repr=False)
    nodes: list[str] = field(default_factory=list)

    # --- public interface

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def pki(self) -> Path:
        return self.home / "pki"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.home / "kubeconfigs" / f"{ADMIN_USER}.yaml"

    def kubeconfig_for(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig (mode 0600) for ``user`` in ``groups``: a client certificate signed by the cluster CA."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
        path = self.home / "kubeconfigs" / f"{safe}.yaml"
        cert, key = self._ca.issue(user, groups)
        write_secret(path, render_kubeconfig(self.server, pem_cert(self._ca.cert), user, cert, key))
        return path

    def issue(self, cn: str, orgs: Sequence[str] = (), **kwargs) -> tuple[bytes, bytes]:
        """A certificate and key signed by the cluster CA (``server=True, ips=[...], dns=[...]`` for a server)."""
        return self._ca.issue(cn, orgs, **kwargs)

    def grant(self, user: str, namespace: str, rules: list[dict], name: str | None = None) -> None:
        """A Role with ``rules`` in ``namespace`` and a RoleBinding of it to ``user``."""
        name = name or f"testbed-{''.join(c if c.isalnum() else '-' for c in user.lower())}"
        role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": name, "namespace": namespace}, "rules": rules}
        binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": name, "namespace": namespace},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}
        base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
        self._apply(f"{base}/roles", role)
        self._apply(f"{base}/rolebindings", binding)

    def forward(self, namespace: str, service: str, port: int, to: tuple[str, int]) -> str:
        """Route ``port`` of the simulated pods of ``namespace`` to the real server ``to`` (host, port): a kwok
        ClusterPortForward, picked up by kwok at runtime. A ``pods/portforward`` to such a pod's ``port`` then
        reaches ``to``. kwok selects pods by namespace and name only (no labels), so this applies to every pod
        of ``namespace`` asked for ``port``; ``service`` only names the object. Returns its name."""
        name = self._kwok_name(namespace, service, str(port))
        self._apply("/apis/kwok.x-k8s.io/v1alpha1/clusterportforwards", {
            "apiVersion": KWOK_GROUP, "kind": "ClusterPortForward", "metadata": {"name": name},
            "spec": {"selector": {"matchNamespaces": [namespace]},
                     "forwards": [{"ports": [int(port)], "target": {"address": to[0], "port": int(to[1])}}]}})
        return name

    def allow_exec(self, namespace: str, workdir: str | Path | None = None) -> str:
        """Let ``pods/exec`` into the simulated pods of ``namespace`` run the command on this machine (in
        ``workdir``, as the bed's user): a kwok ClusterExec with a local target. Returns its name."""
        name = self._kwok_name(namespace, "exec")
        local = {"workDir": str(workdir)} if workdir else {}
        self._apply("/apis/kwok.x-k8s.io/v1alpha1/clusterexecs", {
            "apiVersion": KWOK_GROUP, "kind": "ClusterExec", "metadata": {"name": name},
            "spec": {"selector": {"matchNamespaces": [namespace]}, "execs": [{"local": local}]}})
        return name

    def new_namespace(self, prefix: str = "t", deadline_s: float = 30) -> str:
        name = f"{prefix}-{secrets.token_hex(4)}"
        self._check(self.api("POST", "/api/v1/namespaces",
                             {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
        procs.wait_until(f"the default ServiceAccount of namespace {name}",
                         lambda: self.api("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")
                         .status_code == 200, deadline_s)
        return name

    def apiserver_up(self) -> bool:
        try:
            r = self.api("GET", "/readyz", timeout=3)
        except Exception:  # noqa: BLE001
            return False
        return r.status_code == 200 and r.text.strip() == "ok"

    def stop_apiserver(self) -> None:
        proc = self._procs.pop("kube-apiserver", None)
        if proc is not None:
            proc.stop()
        procs.wait_until("the API server port to close", lambda: not procs.port_open(self.api_port), 30)

    def start_apiserver(self, deadline_s: float = 180) -> None:
        """Start the API server again, then restart the controller manager, the scheduler and kwok (their watches
        would otherwise reconnect only after client-go's back-off: a pod took ~50 s to become Ready after a 30 s
        outage) and wait until a canary Deployment is Available again: the cluster works when this returns."""
        t0 = time.monotonic()
        self._start_apiserver_process(deadline_s)
        for name, argv in (("kube-controller-manager", self._kcm_argv()), ("kube-scheduler", self._scheduler_argv()),
                           ("kwok", self._kwok_argv())):
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop(grace_s=10)
                self._start(name, argv)
        self._canary(max(30.0, deadline_s - (time.monotonic() - t0)))

    def _start_apiserver_process(self, deadline_s: float) -> None:
        self._start("kube-apiserver", self._apiserver_argv())
        self._wait("kube-apiserver /readyz", self.apiserver_up, deadline_s)

    def _canary(self, deadline_s: float) -> None:
        """A one-replica Deployment in namespace testbed-system becomes Available (controllers, scheduler and kwok
        all work), then is deleted."""
        ns, name = "testbed-system", f"canary-{secrets.token_hex(3)}"
        r = self.api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        if r.status_code != 409:
            self._check(r)
        base = f"/apis/apps/v1/namespaces/{ns}/deployments"
        labels = {"app": name}
        self._check(self.api("POST", base, {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "automountServiceAccountToken": False,
                         "containers": [{"name": "canary", "image": "testbed/canary:1"}]}}}}))

        def available():
            d = self._check(self.api("GET", f"{base}/{name}")).json()
            return any(c["type"] == "Available" and c["status"] == "True"
                       for c in (d.get("status") or {}).get("conditions", []))
        self._wait(f"the canary Deployment {ns}/{name} Available", available, deadline_s)
        self.api("DELETE", f"{base}/{name}", {"kind": "DeleteOptions", "apiVersion": "v1",
                                               "propagationPolicy": "Background"})

    def api(self, method: str, path: str, json: object = None, *, timeout: float = 30, **kwargs):
        """A raw request as the admin identity (the bed's own checks; tests should use a real client)."""
        import httpx

        with httpx.Client(base_url=self.server, verify=self._ssl_context(), timeout=timeout) as client:
            return client.request(method, path, json=json, **kwargs)

    # --- lifecycle

    def start(self, deadline_s: float = 180) -> None:
        t0 = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._make_pki()
        self._start("etcd", self._etcd_argv())
        self._wait("etcd /health", self._etcd_healthy, 60)
        self._start_apiserver_process(deadline_s=120)
        for name in ("kube-controller-manager", "kube-scheduler"):
            cert, key = self._ca.issue(f"system:{name}")
            write_secret(self.home / "kubeconfigs" / f"{name}.yaml",
                          render_kubeconfig(self.server, pem_cert(self._ca.cert), name, cert, key))
        self._start("kube-controller-manager", self._kcm_argv())
        self._start("kube-scheduler", self._scheduler_argv())
        remaining = max(30.0, deadline_s - (time.monotonic() - t0))
        if self.kwok:
            cert, key = self._ca.issue("kwok", ["system:masters"])
            write_secret(self.home / "kubeconfigs" / "kwok.yaml",
                          render_kubeconfig(self.server, pem_cert(self._ca.cert), "kwok", cert, key))
            (self.home / "kwok.yaml").write_text(kwok_config("127.0.0.1", self.kwok_port))
            self._create_kwok_crds()
            self._start("kwok", self._kwok_argv())
            self._create_storage_class()
            self._create_nodes()
            remaining = max(30.0, deadline_s - (time.monotonic() - t0))
            self._wait(f"{self.node_count} kwok node(s) Ready", self._nodes_ready, remaining)
        self._wait("the default ServiceAccount (controller manager working)",
                   lambda: self.api("GET", "/api/v1/namespaces/default/serviceaccounts/default").status_code == 200,
                   remaining)

    def stop(self) -> None:
        self._remove_volume_folders()
        for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop(grace_s=10)

    # --- internals

    def _make_pki(self) -> None:
        self._ca = CA.create("helix-testbed-ca")
        write_secret(self.ca_file, pem_cert(self._ca.cert))
        write_secret(self.pki / "ca.key", pem_key(self._ca.key))
        cert, key = self._ca.issue(
            "kube-apiserver", server=True, ips=["127.0.0.1", "10.96.0.1"],
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local"])
        write_secret(self.pki / "apiserver.crt", cert)
        write_secret(self.pki / "apiserver.key", key)
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_secret(self.pki / "sa.key", pem_key(sa))
        write_secret(self.pki / "sa.pub", sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        # kwok's kubelet server (the fake nodes' InternalIP is 127.0.0.1) and kube-apiserver's client identity
        # towards it (kwok does not check client certificates; a real kubelet would)
        cert, key = self._ca.issue("kwok-kubelet", server=True, ips=["127.0.0.1"], dns=["localhost"])
        write_secret(self.pki / "kwok-serving.crt", cert)
        write_secret(self.pki / "kwok-serving.key", key)
        # in system:masters: a real kubelet (testbed/kube_node.py) authorizes it by a SubjectAccessReview
        cert, key = self._ca.issue("kube-apiserver-kubelet-client", ["system:masters"])
        write_secret(self.pki / "apiserver-kubelet-client.crt", cert)
        write_secret(self.pki / "apiserver-kubelet-client.key", key)
        cert, key = self._ca.issue(ADMIN_USER, ["system:masters"])
        self._admin_cert = write_secret(self.pki / "admin.crt", cert)
        self._admin_key = write_secret(self.pki / "admin.key", key)
        write_secret(self.kubeconfig, render_kubeconfig(self.server, pem_cert(self._ca.cert), ADMIN_USER,
                                                         cert, key))

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _etcd_argv(self) -> list[str]:
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        return [str(self.bin / "etcd"), "--name", "helix-testbed", "--data-dir", str(self.home / "etcd"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"helix-testbed={peer}", "--initial-cluster-state", "new",
                # a test bed's etcd: no fsync (the disk is shared with three other test suites)
                "--unsafe-no-fsync", "--quota-backend-bytes", str(2 * 1024**3), "--log-level", "warn"]

    def _apiserver_argv(self) -> list[str]:
        pki = self.pki
        return [str(self.bin / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.api_port}",
                f"--cert-dir={self.home / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={self.ca_file}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC", "--allow-privileged=true", "--profiling=false",
                # pods/portforward and pods/exec go to the node's kubelet: kwok's server on 127.0.0.1 (the fake
                # nodes' InternalIP; their Hostname does not resolve), verified with the cluster CA
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-certificate-authority={self.ca_file}",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                "--enable-priority-and-fairness=false", "--v=0"]

    def _kcm_argv(self) -> list[str]:
        kc = self.home / "kubeconfigs" / "kube-controller-manager.yaml"
        return [str(self.bin / "kube-controller-manager"), f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.pki / 'sa.key'}", f"--root-ca-file={self.ca_file}",
                f"--cluster-signing-cert-file={self.ca_file}", f"--cluster-signing-key-file={self.pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}", "--enable-hostpath-provisioner=true",
                "--profiling=false", "--v=0"]

    def _scheduler_argv(self) -> list[str]:
        kc = self.home / "kubeconfigs" / "kube-scheduler.yaml"
        return [str(self.bin / "kube-scheduler"), f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false", "--profiling=false",
                "--v=0"]

    def _kwok_argv(self) -> list[str]:
        return [str(self.bin / "kwok"), f"--kubeconfig={self.home / 'kubeconfigs' / 'kwok.yaml'}",
                f"--config={self.home / 'kwok.yaml'}",
                "--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--server-address=127.0.0.1:{self.kwok_port}",
                f"--tls-cert-file={self.pki / 'kwok-serving.crt'}",
                f"--tls-private-key-file={self.pki / 'kwok-serving.key'}",
                f"--enable-crds={','.join(KWOK_CRDS)}"]

    def _start(self, name: str, argv: list[str]) -> None:
        env = {"GOMAXPROCS": os.environ.get("HELIX_KUBE_GOMAXPROCS", "2"), "HOME": str(self.home)}
        self._procs[name] = procs.start(name, argv, self.home, env=env)

    def _wait(self, what: str, check, deadline_s: float) -> None:
        procs.wait_while_alive(what, check, deadline_s, self._procs, lambda m: self.log(f"kube: {m}"), self.home)

    def _etcd_healthy(self) -> bool:
        import httpx

        r = httpx.get(f"http://127.0.0.1:{self.etcd_port}/health", timeout=2)
        return r.status_code == 200 and r.json().get("health") == "true"

    def _check(self, r):
        if r.status_code >= 300:
            raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:500]}")
        return r

    def _apply(self, collection: str, obj: dict) -> None:
        """Create, or replace when it exists (the bed's objects only)."""
        r = self.api("POST", collection, obj)
        if r.status_code == 409:
            name = obj["metadata"]["name"]
            current = self._check(self.api("GET", f"{collection}/{name}")).json()
            obj = {**obj, "metadata": {**obj["metadata"],
                                       "resourceVersion": current["metadata"]["resourceVersion"]}}
            r = self.api("PUT", f"{collection}/{name}", obj)
        self._check(r)

    def _kwok_name(self, *parts: str) -> str:
        return ".".join("".join(c if c.isalnum() or c == "-" else "-" for c in p.lower()) for p in parts)[:253]

    def _create_kwok_crds(self, deadline_s: float = 60) -> None:
        """kwok's runtime kinds (``KWOK_CRDS``), Established before kwok starts watching them."""
        base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        names = []
        for crd in kwok_crds():
            self._apply(base, crd)
            names.append(crd["metadata"]["name"])

        def established():
            for name in names:
                conds = (self._check(self.api("GET", f"{base}/{name}")).json().get("status") or {}).get(
                    "conditions") or []
                if not any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                    return False
            return True
        self._wait("kwok's CustomResourceDefinitions Established", established, deadline_s)

    def _create_storage_class(self) -> None:
        self._apply("/apis/storage.k8s.io/v1/storageclasses", {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "standard",
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "kubernetes.io/host-path", "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate", "allowVolumeExpansion": True})

    def _create_nodes(self) -> None:
        for i in range(self.node_count):
            name = f"kwok-node-{i}"
            resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}
            self._apply("/api/v1/nodes", {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name,
                             "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                             "labels": {"type": "kwok", "kubernetes.io/hostname": name,
                                        "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                                        "kubernetes.io/role": "agent", "node-role.kubernetes.io/agent": ""}},
                "spec": {},
                "status": {"allocatable": resources, "capacity": resources}})
            self.nodes.append(name)

    def _remove_volume_folders(self) -> None:
        """The host-path provisioner's folders of this cluster's volumes (empty: no container wrote to them)."""
        if "kube-apiserver" not in self._procs or not self.apiserver_up():
            return
        try:
            pvs = self._check(self.api("GET", "/api/v1/persistentvolumes", timeout=10)).json()["items"]
        except Exception as exc:  # noqa: BLE001 - best effort
            self.log(f"kube: could not list volumes to remove their folders: {exc}")
            return
        for pv in pvs:
            path = Path(((pv.get("spec") or {}).get("hostPath") or {}).get("path") or "/")
            if path.parent == Path("/tmp/hostpath_pv"):
                shutil.rmtree(path, ignore_errors=True)

    def _nodes_ready(self) -> bool:
        items = self._check(self.api("GET", "/api/v1/nodes", params={"labelSelector": "type=kwok"})).json()["items"]
        ready = [n["metadata"]["name"] for n in items
                 if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))]
        return len(ready) >= self.node_count
