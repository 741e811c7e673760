"""What the test bed's local Kubernetes control plane (:class:`testbed.kube.KubeCluster`) is made from: the
binaries (built by ``testbed/kube/build.sh`` from Go modules, or waited for), the certificates and kubeconfigs
(a cluster CA issuing every serving and client certificate), and kwok's configuration (the stages that move
fake pods to Running/Ready, the never-ready marker, the CustomResourceDefinitions kwok reads at runtime).

``testbed.kube`` imports what the bed and the tests use from here (``ensure_built``, ``is_built``,
``NEVER_READY`` …), so ``testbed.kube.<name>`` keeps working."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from testbed import procs
from testbed.paths import REPO

BUILD_SCRIPT = REPO / "testbed" / "kube" / "build.sh"
NEVER_READY = "never-ready"
NEVER_READY_ANNOTATION = "testbed.helix/never-ready"
CONTEXT = "helix-testbed"
ADMIN_USER = "helix-admin"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.0.0.1/16"
# kwok kinds read at runtime from the API server (kwok --enable-crds) instead of its --config file, so a test can
# route a simulated pod's port to a real local server (the bed's Neo4j/Redis ports are random) without a restart
KWOK_CRDS = ("ClusterPortForward", "ClusterExec")
KWOK_GROUP = "kwok.x-k8s.io/v1alpha1"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# A fresh build on 2 cores takes tens of minutes; a build that another process started is waited for.
BUILD_DEADLINE_S = float(os.environ.get("HELIX_KUBE_BUILD_DEADLINE_S", "3000"))


# ---------------------------------------------------------------------------------------------- the binaries

def bin_dir() -> Path:
    """Where build.sh puts (or put) the binaries for the current inputs."""
    out = procs.run(["bash", str(BUILD_SCRIPT), "--dir"], timeout_s=60).stdout.strip()
    return Path(out)


def is_built() -> bool:
    return procs.run(["bash", str(BUILD_SCRIPT), "--check"], timeout_s=60, check=False).returncode == 0


def build_log_path() -> Path:
    return bin_dir().parent.parent / "build.log"


def start_build_in_background() -> None:
    """Unless the binaries exist, start build.sh detached (nice 19, log: build_log_path()) and return at once;
    a build already running holds the lock, so this one then only waits for it."""
    procs.run(["bash", str(BUILD_SCRIPT), "--background"], timeout_s=60)


def ensure_built(deadline_s: float = BUILD_DEADLINE_S, log=print) -> Path:
    """The binaries' folder, building them first (or waiting for the build that runs) within ``deadline_s``."""
    if is_built():
        return bin_dir()
    log(f"building (or waiting for the build of) the Kubernetes control plane; log: {build_log_path()}")
    t0 = time.monotonic()
    try:
        out = procs.run(["bash", str(BUILD_SCRIPT)], timeout_s=deadline_s,
                        env={"KUBE_BUILD_NICE": os.environ.get("KUBE_BUILD_NICE", "0")})
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"the Kubernetes control-plane build did not finish within {deadline_s:.0f}s; "
                           f"see {build_log_path()}") from exc
    log(f"Kubernetes control plane ready to start after {time.monotonic() - t0:.0f}s of build/wait")
    return Path(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- certificates

def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem_cert(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class CA:
    key: object
    cert: object

    @classmethod
    def create(cls, name: str) -> CA:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    def issue(self, cn: str, orgs: Sequence[str] = (), *, server: bool = False, dns: Sequence[str] = (),
              ips: Sequence[str] = ()) -> tuple[bytes, bytes]:
        """(cert PEM, key PEM) for a client (CN=user, O=groups) or a server (with SANs)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = _key()
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        now = dt.datetime.now(dt.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(
                       [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False))
        if server:
            sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return pem_cert(builder.sign(self.key, hashes.SHA256())), pem_key(key)


def write_secret(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    os.chmod(path, 0o600)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def render_kubeconfig(server: str, ca_pem: bytes, user: str, cert_pem: bytes, key_pem: bytes,
                      context: str = CONTEXT) -> str:
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": context, "preferences": {},
        "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert_pem),
                                          "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": user, "namespace": "default"}}],
    }, sort_keys=False)


# ---------------------------------------------------------------------------------------------- kwok stages

def kwok_config(node_ip: str = "127.0.0.1", node_port: int = 0) -> str:
    """kwok's configuration: the "fast" node and pod stages of kwok's own kustomize/stage (v0.8.0), with the
    pod-ready stage skipping never-ready pods and a pod-never-ready stage for them. ``node_ip``/``node_port``
    become every fake node's InternalIP and kubelet endpoint (``status.daemonEndpoints``): where kube-apiserver
    reaches kwok's server for pods/portforward and pods/exec."""
    never = (f'([.spec.containers.[].image | contains("{NEVER_READY}")] | any) or '
             f'(.metadata.annotations["{NEVER_READY_ANNOTATION}"] == "true")')
    not_deleted = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}
    pending_unready = [
        not_deleted,
        {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
        {"key": '.status.conditions.[] | select( .type == "Ready" ) | .status', "operator": "NotIn",
         "values": ["True"]},
    ]
    pod_ip = """
      {{ $hostIPs := NodeIPsWith .spec.nodeName }}
      {{ with $hostIPs }}
      hostIP: {{ index . 0 | Quote }}
      hostIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      {{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
      {{ with $podIPs }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      phase: Running
      startTime: {{ $now | Quote }}
"""

    def pod_status(ready: bool) -> str:
        r = "true" if ready else "false"
        cond = '"True"' if ready else '"False"'
        reason = "" if ready else "\n        reason: ContainersNotReady"
        return f"""{{{{ $now := Now }}}}
      conditions:
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: {cond}
        type: Ready{reason}
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: {cond}
        type: ContainersReady{reason}
      {{{{ range .spec.readinessGates }}}}
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: {{{{ .conditionType | Quote }}}}
      {{{{ end }}}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: {r}
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      initContainerStatuses:
      {{{{ range .spec.initContainers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: true
        restartCount: 0
        {{{{ if eq .restartPolicy "Always" }}}}
        started: true
        state:
          running:
            startedAt: {{{{ $now | Quote }}}}
        {{{{ else }}}}
        state:
          terminated:
            exitCode: 0
            finishedAt: {{{{ $now | Quote }}}}
            reason: Completed
            startedAt: {{{{ $now | Quote }}}}
        {{{{ end }}}}
      {{{{ end }}}}""" + pod_ip

    stage_dir = _kwok_stage_dir()
    docs = [
        {"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokConfiguration",
         # every option kwok would default without a config file (with one, omitted numbers stay 0)
         "options": {"cidr": POD_CIDR, "nodeIP": node_ip, "nodePort": node_port, "nodeLeaseDurationSeconds": 40,
                     "nodeLeaseParallelism": 4, "podPlayStageParallelism": 4, "nodePlayStageParallelism": 4,
                     "podsOnNodeSyncParallelism": 1, "enablePodsOnNodeSyncListPager": True,
                     "enablePodsOnNodeSyncStreamWatch": False, "enableDebuggingHandlers": True,
                     "enableContentionProfiling": False, "enableProfilingHandler": False}},
        yaml.safe_load((stage_dir / "node" / "fast" / "node-initialize.yaml").read_text()),
        yaml.safe_load((stage_dir / "node" / "heartbeat-with-lease" / "node-heartbeat-with-lease.yaml").read_text()),
        {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": "pod-ready"},
         "spec": {"resourceRef": {"apiGroup": "v1", "kind": "Pod"},
                  "selector": {"matchExpressions": pending_unready + [
                      {"key": never, "operator": "NotIn", "values": ["true"]}]},
                  "next": {"statusTemplate": pod_status(True)}}},
        {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": "pod-never-ready"},
         "spec": {"resourceRef": {"apiGroup": "v1", "kind": "Pod"},
                  "selector": {"matchExpressions": pending_unready + [
                      {"key": never, "operator": "In", "values": ["true"]}]},
                  "next": {"statusTemplate": pod_status(False)}}},
        yaml.safe_load((stage_dir / "pod" / "fast" / "pod-complete.yaml").read_text()),
        yaml.safe_load((stage_dir / "pod" / "fast" / "pod-delete.yaml").read_text()),
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)


def _kwok_stage_dir() -> Path:
    """kwok's kustomize/stage folder in the module cache (the version kwok/go.mod requires)."""
    return _kwok_module_dir() / "kustomize" / "stage"


def _kwok_module_dir() -> Path:
    mod = REPO / "testbed" / "kube" / "kwok"
    out = procs.run(["go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok"], cwd=mod, timeout_s=120,
                    env={"PATH": f"/usr/local/go/bin:{os.environ.get('PATH', '')}"})
    return Path(out.stdout.strip())


def kwok_crds() -> list[dict]:
    """The CustomResourceDefinitions of the kinds kwok watches at runtime (``KWOK_CRDS``), from kwok's
    kustomize/crd/bases."""
    bases = _kwok_module_dir() / "kustomize" / "crd" / "bases"
    return [yaml.safe_load((bases / f"kwok.x-k8s.io_{kind.lower()}s.yaml").read_text()) for kind in KWOK_CRDS]
