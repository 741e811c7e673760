#!/bin/bash
# One real node from scratch: bridge, containerd, images, PKI, control plane (API on 10.226.0.1:16443), kubelet,
# kube-proxy. Prints timings.
set -euo pipefail
cd /tmp/k26
T0=$(date +%s.%N); t() { printf '%6.1fs %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
ip link show k26br0 >/dev/null 2>&1 || { ip link add k26br0 type bridge; ip addr add 10.226.0.1/24 dev k26br0; ip link set k26br0 up; }
./start-containerd.sh
for i in $(seq 60); do ctr -a /tmp/k26/containerd.sock version >/dev/null 2>&1 && break; sleep 0.25; done
t containerd up
C="ctr -a /tmp/k26/containerd.sock -n k8s.io"
have=$($C images ls -q)
for img in pause/k26-pause.tar:localhost/k26-pause:1 busybox/k26-busybox.tar:localhost/k26-busybox:1 images/helix-probe-v1.tar:localhost/helix-probe:v1 images/helix-probe-v2.tar:localhost/helix-probe:v2; do
  f=${img%%:*}; ref=${img#*:}; grep -qx "$ref" <<<"$have" || $C images import "$f" >/dev/null
done
t images present
[ -f cluster/pki/apiserver.crt ] || ./gen-pki.sh >/dev/null
rm -rf cluster/etcd
./start-cp.sh
t control plane ready
KUBELET_CONFIG=${KUBELET_CONFIG:-/tmp/k26/kubelet-config-qos.yaml} ./start-kubelet.sh
export KUBECONFIG=/tmp/k26/cluster/kubeconfigs/admin.yaml
until bin/kubectl get node k26-node -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True; do sleep 0.5; done
t node Ready
./start-kube-proxy.sh
until bin/kubectl get sa default >/dev/null 2>&1; do sleep 0.5; done
t default ServiceAccount
