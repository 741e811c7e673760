#!/bin/bash
# throwaway control plane (v1.36.3 binaries copied from the project's build): etcd :12379, apiserver :16443
set -euo pipefail
H=/tmp/k26/cluster; P=$H/pki; K=$H/kubeconfigs; B=/tmp/k26/bin; L=/tmp/k26/logs
A=${K26_API_ADDR:-10.226.0.1}
mkdir -p $H/etcd
start() { local n=$1; shift; GOMAXPROCS=2 nohup setsid "$@" > $L/$n.log 2>&1 < /dev/null & echo $! > /tmp/k26/$n.pid; }
start etcd $B/etcd --name k26 --data-dir $H/etcd \
  --listen-client-urls http://127.0.0.1:12379 --advertise-client-urls http://127.0.0.1:12379 \
  --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
  --initial-cluster k26=http://127.0.0.1:12380 --initial-cluster-state new --unsafe-no-fsync --log-level warn
for i in $(seq 60); do curl -sf http://127.0.0.1:12379/health >/dev/null && break; sleep 0.5; done
start kube-apiserver $B/kube-apiserver --etcd-servers=http://127.0.0.1:12379 \
  --bind-address=$A --advertise-address=$A --secure-port=16443 --cert-dir=$H/apiserver-certs \
  --tls-cert-file=$P/apiserver.crt --tls-private-key-file=$P/apiserver.key --client-ca-file=$P/ca.crt \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file=$P/sa.pub --service-account-signing-key-file=$P/sa.key \
  --service-cluster-ip-range=10.97.0.0/16 --service-node-port-range=30000-32767 \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true --profiling=false \
  --kubelet-preferred-address-types=InternalIP --kubelet-certificate-authority=$P/ca.crt \
  --kubelet-client-certificate=$P/apiserver-kubelet-client.crt --kubelet-client-key=$P/apiserver-kubelet-client.key \
  --enable-priority-and-fairness=false --v=0
for i in $(seq 240); do [ "$(curl -s --cacert $P/ca.crt --cert $P/admin.crt --key $P/admin.key https://$A:16443/readyz)" = ok ] && break; sleep 0.5; done
echo "apiserver ready after ~$((i/2))s"
start kube-controller-manager $B/kube-controller-manager --kubeconfig=$K/kcm.yaml \
  --authentication-kubeconfig=$K/kcm.yaml --authorization-kubeconfig=$K/kcm.yaml \
  --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file=$P/sa.key --root-ca-file=$P/ca.crt \
  --cluster-signing-cert-file=$P/ca.crt --cluster-signing-key-file=$P/ca.key \
  --service-cluster-ip-range=10.97.0.0/16 --allocate-node-cidrs=false --profiling=false --v=0
start kube-scheduler $B/kube-scheduler --kubeconfig=$K/scheduler.yaml \
  --authentication-kubeconfig=$K/scheduler.yaml --authorization-kubeconfig=$K/scheduler.yaml \
  --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false --profiling=false --v=0
