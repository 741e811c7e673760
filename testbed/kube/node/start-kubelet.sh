#!/bin/bash
# bridge k26br0 with 10.226.0.1 (node IP, CNI gateway) made up front so the kubelet has a non-loopback local IP
ip link show k26br0 >/dev/null 2>&1 || { ip link add k26br0 type bridge; ip addr add 10.226.0.1/24 dev k26br0; ip link set k26br0 up; }
nohup setsid ${KUBELET_BIN:-/tmp/k26/bin/kubelet} --config=${KUBELET_CONFIG:-/tmp/k26/kubelet-config.yaml} \
  --kubeconfig=/tmp/k26/cluster/kubeconfigs/kubelet.yaml --root-dir=/tmp/k26/kubelet \
  --hostname-override=k26-node --node-ip=10.226.0.1 --v=2 "$@" > /tmp/k26/logs/kubelet.log 2>&1 < /dev/null &
echo $! > /tmp/k26/kubelet.pid
